// Command e2e is `make bench-e2e`: images that arrive over MQTT are
// classified and the results published over MQTT, end to end. One run
// compares three contestants on the same PNG frames, the same model and the
// same TensorFlow thread settings:
//
//   - limit: TensorFlow through tfmodels, in this process, no MQTT: decode
//     with the daemon's own decoder (sensors.DecodeImage), preprocess with
//     the plugins' own code (plugins/common/imageprep), Runner.Run, softmax
//     and top-k, one frame after the other. No service answers a frame
//     sooner; in a burst a service that decodes one frame while the model
//     runs on another (two cores) can reach more frames/s than this loop.
//   - edgeinferd: the real daemon (bin/edgeinferd, its plugin
//     bin/edgeinfer-classify) with an mqtt sensor on a Mosquitto broker.
//   - Python: python_service.py, what a user would otherwise write:
//     paho-mqtt and tf.saved_model.load in one process, on the same broker.
//
// The frames are the 200 sample digits (LeNet-5) and, unless -big "", 20
// synthetic 640x480 PNGs made here (ResNet-50 tiny, which resizes them).
//
// This command starts Mosquitto on a free loopback port (with Nagle's
// algorithm off and no queue limit, so a burst waiting for a busy service is
// not dropped) and both services, publishes each frame (QoS 1) to
// <prefix>/in/frames and times it until its result arrives on
// <prefix>/classify/result, in two modes: one at a time (publish, wait for
// the result, next: latency) and a burst (all n frames published at once:
// throughput from the first publish to the last result). Both services
// number the messages they take from 1, in order (seq), which matches
// results to frames. Rounds alternate the contestants (limit, edgeinferd,
// Python) so drift on the machine hits all alike.
//
// The answers are checked before any speed is printed: top-1 must match the
// digits' labels.csv at >= 0.95 and every two contestants must agree on
// >= 99% of the frames, otherwise the run fails: a fast wrong service must
// not win.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/bench/internal/kit"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/plugins/common/imageprep"
	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// settings are the command's flags.
type settings struct {
	python, models, bin, digits string
	model, big                  string
	n, bigN, rounds, threads    int
	topK, warmup                int
}

// frame is one image the contestants classify; label is "" when unknown.
type frame struct {
	png   []byte
	label string
}

// benchCase is one model on one set of frames: a block of the tables.
type benchCase struct {
	name   string
	model  string
	frames []frame
	n      int // frames per phase, cycling through frames
}

func main() {
	var s settings
	flag.StringVar(&s.python, "python", ".venv/bin/python", "Python with tensorflow, pillow and paho-mqtt")
	flag.StringVar(&s.models, "models", "models", "model repository")
	flag.StringVar(&s.bin, "bin", "bin", "directory of edgeinferd and edgeinfer-classify")
	flag.StringVar(&s.digits, "digits", "testdata/digits", "the sample digits and their labels.csv")
	flag.StringVar(&s.model, "model", "lenet5", "model for the digits")
	flag.IntVar(&s.n, "n", 2000, "digits per phase (cycling through the 200)")
	flag.StringVar(&s.big, "big", "resnet50", `model for synthetic 640x480 frames ("": skip)`)
	flag.IntVar(&s.bigN, "big-n", 200, "640x480 frames per phase")
	flag.IntVar(&s.rounds, "rounds", 5, "rounds, each running every contestant in every mode")
	flag.IntVar(&s.threads, "threads", 1, "TensorFlow intra-op threads, for every contestant")
	flag.IntVar(&s.topK, "top-k", 3, "labels per result")
	flag.IntVar(&s.warmup, "warmup", 50, "frames each contestant classifies before the rounds")
	flag.Parse()

	// The output is printed once everything run started has stopped.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var out bytes.Buffer
	err := run(ctx, s, &out)
	stop()
	os.Stdout.Write(out.Bytes())
	if err != nil {
		log.Fatal("bench-e2e: ", err)
	}
}

func run(ctx context.Context, s settings, w io.Writer) error {
	start := time.Now()
	digits, err := readDigits(s.digits)
	if err != nil {
		return err
	}
	cases := []benchCase{{name: fmt.Sprintf("%s, 32x32 gray PNG digits", s.model), model: s.model, frames: digits, n: s.n}}
	if s.big != "" {
		frames, err := syntheticFrames(20, 640, 480)
		if err != nil {
			return err
		}
		size := 0
		for _, f := range frames {
			size += len(f.png)
		}
		name := fmt.Sprintf("%s, 640x480 RGB PNGs of %.1f KB", s.big, float64(size)/float64(len(frames))/1024)
		cases = append(cases, benchCase{name: name, model: s.big, frames: frames, n: s.bigN})
	}

	dir, err := os.MkdirTemp("", "bench-e2e")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	broker, addr, err := kit.StartMosquitto(ctx, dir, "")
	if err != nil {
		return err
	}
	defer broker.Stop()
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("bench-e2e-driver").SetCleanSession(true)
	client := paho.NewClient(opts)
	if tok := client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("driver: connect to %s: %v", addr, tok.Error())
	}
	defer client.Disconnect(100)

	var reports []report
	var pyVersions string
	for _, c := range cases {
		r, versions, err := runCase(ctx, s, c, dir, addr, client)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		reports = append(reports, r)
		pyVersions = versions
		if err := r.check(); err != nil {
			printCorrectness(w, reports)
			return err
		}
	}

	fmt.Fprintf(w, "Command: `go run ./bench/e2e %s`, %s, %d CPUs, took %s.\n",
		strings.Join(os.Args[1:], " "), time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), time.Since(start).Round(time.Second))
	fmt.Fprintf(w, "TensorFlow %s (tfmodels) / Python: %s; top_k %d. Mosquitto on 127.0.0.1 with set_tcp_nodelay,\n", tfmodels.Version(), pyVersions, s.topK)
	fmt.Fprintln(w, "QoS 1 both ways, every client with TCP_NODELAY (Go's default; python_service.py sets it, paho-mqtt does not).")
	fmt.Fprintf(w, "Every contestant: TensorFlow intra-op threads %d, inter-op TensorFlow's default, batch 1. %d rounds of: limit, edgeinferd, Python;\n", s.threads, s.rounds)
	fmt.Fprintf(w, "each round times every contestant on n frames (-n %d digits, -big-n %d 640x480 frames) one at a time, then the services on a burst of n,\n", s.n, s.bigN)
	fmt.Fprintf(w, "after %d warm-up frames. Latency: publish -> result arrived at the driver; burst frames/s: n / (last result - first publish);\n", s.warmup)
	fmt.Fprintln(w, "vs limit: against the limit's frames/s, one frame after the other in one thread (a service may overlap decoding and inference).")
	fmt.Fprintln(w)
	for _, r := range reports {
		fmt.Fprintf(w, "%s: %s.\n", r.c.name, r.model)
	}
	fmt.Fprintln(w)
	printSpeed(w, reports)
	printBreakdown(w, reports)
	printCorrectness(w, reports)
	return nil
}

// runCase starts edgeinferd and the Python service for one model and runs
// the rounds.
func runCase(ctx context.Context, s settings, c benchCase, dir, addr string, client paho.Client) (report, string, error) {
	v, err := repo.Servable(s.models, c.model)
	if err != nil {
		return report{}, "", err
	}
	lim, err := newLimit(v, s.threads, s.topK)
	if err != nil {
		return report{}, "", err
	}
	defer lim.close()

	d, err := startDaemon(ctx, s, c.model, dir, addr, client)
	if err != nil {
		return report{}, "", err
	}
	defer d.proc.Stop()
	py, versions, err := startPython(ctx, s, v.Dir, addr, client)
	if err != nil {
		return report{}, "", err
	}
	defer py.proc.Stop()

	log.Printf("%s: warming up", c.name)
	if _, err := lim.run(c.frames, s.warmup); err != nil {
		return report{}, "", err
	}
	for _, svc := range []*service{d, py} {
		if _, err := svc.run(ctx, c.frames, s.warmup, false); err != nil {
			return report{}, "", err
		}
	}

	r := report{c: c, model: fmt.Sprintf("%s %s, %s", v.Manifest.Architecture, v.Manifest.Variant, filepath.Join(s.models, v.Model, v.Version)), runs: map[key]*runs{}}
	record := func(round int, k key, p phase, err error) error {
		if err != nil {
			return fmt.Errorf("%s, %s: %w", k.who, k.mode, err)
		}
		r.add(k, p)
		log.Printf("%s: round %d/%d: %s, %s: %d frames, %.1f frames/s", c.name, round, s.rounds, k.who, k.mode, len(p.lat), float64(len(p.lat))/p.elapsed.Seconds())
		return nil
	}
	for round := 1; round <= s.rounds; round++ {
		p, err := lim.run(c.frames, c.n)
		if err := record(round, key{limitName, modeOne}, p, err); err != nil {
			return report{}, "", err
		}
		for _, svc := range []*service{d, py} {
			for _, mode := range []string{modeOne, modeBurst} {
				p, err := svc.run(ctx, c.frames, c.n, mode == modeBurst)
				if err := record(round, key{svc.name, mode}, p, err); err != nil {
					return report{}, "", err
				}
			}
		}
	}
	return r, versions, nil
}

// Contestants and modes.
const (
	limitName  = "limit"
	daemonName = "edgeinferd"
	pythonName = "Python"
	modeOne    = "one at a time"
	modeBurst  = "burst"
)

// phase is what one contestant did with n frames, in publish order.
type phase struct {
	lat     []time.Duration
	top1    []string
	timings []map[string]float64 // the result's timings_ms
	elapsed time.Duration        // first publish to last result
}

func newPhase(n int) phase {
	return phase{lat: make([]time.Duration, n), top1: make([]string, n), timings: make([]map[string]float64, n)}
}

// result is what both services publish (edgeinferd's has more fields).
type result struct {
	Seq     uint64             `json:"seq"`
	Timings map[string]float64 `json:"timings_ms"`
	Output  struct {
		Top []struct {
			Label string `json:"label"`
		} `json:"top"`
	} `json:"output"`
}

// arrival is a result message and when the driver got it.
type arrival struct {
	at      time.Time
	payload []byte
}

// service is an MQTT service under test, seen from the driver.
type service struct {
	name    string
	proc    *kit.Process
	client  paho.Client
	in      string // the topic frames go to
	results chan arrival
	sent    uint64 // frames published so far: the next result's seq is sent+1
}

// newService subscribes to the service's result topic.
func newService(name string, proc *kit.Process, client paho.Client, prefix string) (*service, error) {
	s := &service{name: name, proc: proc, client: client, in: prefix + "/in/frames", results: make(chan arrival, 1<<16)}
	tok := client.Subscribe(prefix+"/classify/result", 1, func(_ paho.Client, m paho.Message) {
		s.results <- arrival{time.Now(), m.Payload()}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("subscribe to %s results: %v", name, tok.Error())
	}
	return s, nil
}

// run publishes n frames, one at a time or all at once, and collects their
// results.
func (s *service) run(ctx context.Context, frames []frame, n int, burst bool) (phase, error) {
	p := newPhase(n)
	base := s.sent
	sent := make([]time.Time, n)
	toks := make([]paho.Token, n)
	var last time.Time
	publish := func(i int) {
		sent[i] = time.Now()
		toks[i] = s.client.Publish(s.in, 1, false, frames[i%len(frames)].png)
		s.sent++
	}
	receive := func() error {
		a, err := s.next(ctx)
		if err != nil {
			return err
		}
		var r result
		if err := json.Unmarshal(a.payload, &r); err != nil || len(r.Output.Top) == 0 {
			return fmt.Errorf("result %q: %v", a.payload, err)
		}
		i := int(r.Seq - base - 1)
		if r.Seq <= base || i >= n || p.top1[i] != "" {
			return fmt.Errorf("result with seq %d, expected %d..%d, each once", r.Seq, base+1, base+uint64(n))
		}
		p.lat[i], p.top1[i], p.timings[i] = a.at.Sub(sent[i]), r.Output.Top[0].Label, r.Timings
		last = a.at
		return nil
	}
	for i := range n {
		publish(i)
		if !burst {
			if err := receive(); err != nil {
				return p, err
			}
		}
	}
	if burst {
		for range n {
			if err := receive(); err != nil {
				return p, err
			}
		}
	}
	for _, t := range toks {
		if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			return p, fmt.Errorf("publish: %v", t.Error())
		}
	}
	p.elapsed = last.Sub(sent[0])
	return p, nil
}

// next waits for the next result; the service must answer within 30 s.
func (s *service) next(ctx context.Context) (arrival, error) {
	select {
	case a := <-s.results:
		return a, nil
	case <-s.proc.Done():
		return arrival{}, fmt.Errorf("%s exited", s.name)
	case <-ctx.Done():
		return arrival{}, ctx.Err()
	case <-time.After(30 * time.Second):
		return arrival{}, errors.New("no result within 30 s")
	}
}

// startDaemon writes a config for one mqtt sensor and one pipeline, starts
// edgeinferd and waits until the pipeline serves the model.
func startDaemon(ctx context.Context, s settings, model, dir, addr string, client paho.Client) (*service, error) {
	bin, err := filepath.Abs(s.bin)
	if err != nil {
		return nil, err
	}
	models, err := filepath.Abs(s.models)
	if err != nil {
		return nil, err
	}
	const prefix = "bench/edgeinferd"
	config := fmt.Sprintf(`device = "bench"
plugin_dir = %q

[log]
level = "warn"

[models]
repository = %q
threads = %d

[mqtt]
broker = "tcp://%s"
prefix = %q
qos = 1

[sensors.frames]
kind = "mqtt"

[pipelines.classify]
sensor = "frames"
model = %q
[pipelines.classify.options]
top_k = %d
`, bin, models, s.threads, addr, prefix, model, s.topK)
	path := filepath.Join(dir, model+".toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return nil, err
	}
	proc, err := kit.Start(daemonName, exec.Command(filepath.Join(bin, "edgeinferd"), "-config", path))
	if err != nil {
		return nil, err
	}
	svc, err := newService(daemonName, proc, client, prefix)
	if err == nil {
		err = waitServing(ctx, proc, client, prefix+"/models/"+model)
	}
	if err != nil {
		proc.Stop()
		return nil, err
	}
	return svc, nil
}

// waitServing waits for the retained model state that says the pipeline's
// plugin has loaded the model.
func waitServing(ctx context.Context, proc *kit.Process, client paho.Client, topic string) error {
	states := make(chan []byte, 16)
	tok := client.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { states <- m.Payload() })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscribe to %s: %v", topic, tok.Error())
	}
	defer client.Unsubscribe(topic)
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case b := <-states:
			var st payload.ModelState
			if err := json.Unmarshal(b, &st); err != nil {
				return fmt.Errorf("%s: %w", topic, err)
			}
			if st.Serving != "" {
				return nil
			}
		case <-proc.Done():
			return errors.New("edgeinferd exited before serving")
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return fmt.Errorf("edgeinferd: no serving state on %s within 2 minutes", topic)
		}
	}
}

// startPython starts python_service.py and waits for its ready line (its
// versions, printed once subscribed).
func startPython(ctx context.Context, s settings, modelDir, addr string, client paho.Client) (*service, string, error) {
	const prefix = "bench/python"
	r, w, err := os.Pipe()
	if err != nil {
		return nil, "", err
	}
	defer r.Close()
	cmd := exec.Command(s.python, "bench/e2e/python_service.py", "--broker", addr, "--model", modelDir,
		"--prefix", prefix, "--top-k", fmt.Sprint(s.topK), "--threads", fmt.Sprint(s.threads))
	cmd.Stdout = w
	proc, err := kit.Start(pythonName, cmd)
	w.Close()
	if err != nil {
		return nil, "", err
	}
	svc, err := newService(pythonName, proc, client, prefix)
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	var versions string
	if err == nil {
		select {
		case versions = <-ready:
			if versions == "" {
				err = errors.New("python_service.py exited before it was ready")
			}
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(2 * time.Minute):
			err = errors.New("python_service.py not ready within 2 minutes")
		}
	}
	if err != nil {
		proc.Stop()
		return nil, "", err
	}
	return svc, versions, nil
}

// limit classifies frames in this process through tfmodels.
type limit struct {
	man    manifest.Manifest
	model  *tfmodels.Model
	runner *tfmodels.Runner
	input  *tfmodels.Tensor // [1, height, width, channels], reused
	rgb    []float32        // the resized frame, reused
	topK   int
}

func newLimit(v repo.Version, threads, topK int) (*limit, error) {
	in := v.Manifest.Input
	if in.Height == 0 || in.Width == 0 {
		return nil, fmt.Errorf("model %s takes any size; the limit needs a fixed input size", v.Dir)
	}
	m, err := tfmodels.Load(v.Dir, tfmodels.Options{IntraOpThreads: threads})
	if err != nil {
		return nil, err
	}
	l := &limit{man: v.Manifest, model: m, topK: topK}
	if l.runner, err = m.Runner(l.man.Signature, []string{in.Key}, []string{l.man.Output.Logits}); err == nil {
		l.input, err = tfmodels.NewTensor(tfmodels.Float32, 1, int64(in.Height), int64(in.Width), int64(in.Channels))
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return l, nil
}

func (l *limit) close() {
	l.input.Close()
	l.model.Close()
}

// run classifies n frames one after the other.
func (l *limit) run(frames []frame, n int) (phase, error) {
	p := newPhase(n)
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		top1, timings, err := l.classify(frames[i%len(frames)].png)
		if err != nil {
			return p, err
		}
		p.lat[i], p.top1[i], p.timings[i] = time.Since(t0), top1, timings
	}
	p.elapsed = time.Since(start)
	return p, nil
}

// classify is one frame: decode, preprocess, run, softmax and top-k.
func (l *limit) classify(data []byte) (string, map[string]float64, error) {
	t0 := time.Now()
	w, h, rgb, err := sensors.DecodeImage(data, sensors.DefaultLimits)
	if err != nil {
		return "", nil, err
	}
	t1 := time.Now()
	x, err := tfmodels.Data[float32](l.input)
	if err != nil {
		return "", nil, err
	}
	l.rgb = imageprep.Resize(l.rgb, rgb, w, h, l.man.Input.Width, l.man.Input.Height)
	imageprep.Normalize(x, l.rgb, l.man.Input)
	t2 := time.Now()
	outs, err := l.runner.Run(l.input)
	if err != nil {
		return "", nil, err
	}
	logits, err := tfmodels.Data[float32](outs[0])
	scores := slices.Clone(logits)
	outs[0].Close()
	if err != nil {
		return "", nil, err
	}
	t3 := time.Now()
	top := topK(scores, l.man.Output.Softmax, l.topK)
	t4 := time.Now()
	ms := func(a, b time.Time) float64 { return float64(b.Sub(a)) / 1e6 }
	timings := map[string]float64{"decode": ms(t0, t1), "preprocess": ms(t1, t2), "inference": ms(t2, t3), "postprocess": ms(t3, t4), "total": ms(t0, t4)}
	return l.man.Labels[top[0]], timings, nil
}

// topK returns the indices of the k best scores (softmax first if asked),
// best first, ties by index.
func topK(scores []float32, softmax bool, k int) []int {
	p := make([]float64, len(scores))
	for i, v := range scores {
		p[i] = float64(v)
	}
	if softmax {
		hi, sum := slices.Max(p), 0.0
		for i := range p {
			p[i] = math.Exp(p[i] - hi)
			sum += p[i]
		}
		for i := range p {
			p[i] /= sum
		}
	}
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Or(cmp.Compare(p[b], p[a]), cmp.Compare(a, b)) })
	return idx[:min(k, len(idx))]
}

// readDigits reads the sample digits and their labels.
func readDigits(dir string) ([]frame, error) {
	f, err := os.Open(filepath.Join(dir, "labels.csv"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, err
	}
	var frames []frame
	for _, r := range rows[1:] {
		b, err := os.ReadFile(filepath.Join(dir, r[0]))
		if err != nil {
			return nil, err
		}
		frames = append(frames, frame{png: b, label: r[1]})
	}
	return frames, nil
}

// syntheticFrames makes count w x h PNGs, each a colour gradient with a few
// filled rectangles: simple scenes, different from frame to frame.
func syntheticFrames(count, w, h int) ([]frame, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	randColor := func() color.RGBA {
		return color.RGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255}
	}
	var frames []frame
	for range count {
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		a, b := randColor(), randColor()
		for y := range h {
			for x := range w {
				f := float64(x+y) / float64(w+h)
				mix := func(u, v uint8) uint8 { return uint8(float64(u)*(1-f) + float64(v)*f) }
				img.SetRGBA(x, y, color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 255})
			}
		}
		for range 4 {
			x, y := rng.IntN(w), rng.IntN(h)
			r := image.Rect(x, y, x+w/8+rng.IntN(w/3), y+h/8+rng.IntN(h/3))
			draw.Draw(img, r, image.NewUniform(randColor()), image.Point{}, draw.Src)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			return nil, err
		}
		frames = append(frames, frame{png: buf.Bytes()})
	}
	return frames, nil
}
