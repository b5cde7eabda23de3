package e2e

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// binDir holds edgeinferd and the plugins, built once for the package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgeinfer-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := 1
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	for out, pkg := range map[string]string{
		"edgeinferd":         "github.com/edgeinfer/edgeinfer/daemon/cmd/edgeinferd",
		"edgeinfer-classify": "github.com/edgeinfer/edgeinfer/plugins/classify",
		"edgeinfer-detect":   "github.com/edgeinfer/edgeinfer/plugins/detect",
		"edgeinfer-segment":  "github.com/edgeinfer/edgeinfer/plugins/segment",
		"edgeinfer-video":    "github.com/edgeinfer/edgeinfer/plugins/video",
		"edgeinfer-embed":    "github.com/edgeinfer/edgeinfer/plugins/embed",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return nil
}

// models is the exported tiny zoo; make test sets EDGEINFER_MODELS.
func models(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEINFER_MODELS")
	if dir == "" {
		t.Fatal("EDGEINFER_MODELS is not set (make test sets it to the exported model repository)")
	}
	return dir
}

// digit is one of the sample images that ship in testdata/digits.
type digit struct {
	name  string
	label string
	png   []byte
}

func digits(t *testing.T) []digit {
	t.Helper()
	dir := filepath.Join("..", "..", "testdata", "digits")
	f, err := os.Open(filepath.Join(dir, "labels.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var ds []digit
	for _, r := range rows[1:] {
		b, err := os.ReadFile(filepath.Join(dir, r[0]))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, digit{name: r[0], label: r[1], png: b})
	}
	if len(ds) != 200 {
		t.Fatalf("testdata/digits has %d images, want 200", len(ds))
	}
	return ds
}

// proc is a running edgeinferd.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start writes config (with %[1]s = models dir, %[2]s = plugin dir
// substituted by the caller's fmt) and runs the daemon on it. The daemon is
// stopped with SIGTERM when the test ends; its log is printed if the test
// failed.
func start(t *testing.T, config string) *proc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(filepath.Join(binDir, "edgeinferd"), "-config", path), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("edgeinferd log:\n%s", p.stderr.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for the exit; it returns the exit code.
func (p *proc) stop(t *testing.T) int {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
			t.Errorf("edgeinferd did not stop within 30s of SIGTERM")
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// watcher records everything published under a prefix.
type watcher struct {
	client paho.Client
	mu     sync.Mutex
	msgs   []message
}

type message struct {
	topic    string
	payload  []byte
	retained bool
}

func watch(t *testing.T, broker, prefix string) *watcher {
	t.Helper()
	w := &watcher{}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("e2e-%d", time.Now().UnixNano())).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).SetOrderMatters(true)
	w.client = paho.NewClient(opts)
	if tok := w.client.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher: connect %s: %v", broker, tok.Error())
	}
	tok := w.client.Subscribe(prefix+"/#", 1, func(_ paho.Client, m paho.Message) {
		w.mu.Lock()
		w.msgs = append(w.msgs, message{topic: strings.TrimPrefix(m.Topic(), prefix+"/"), payload: m.Payload(), retained: m.Retained()})
		w.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher: subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { w.client.Disconnect(100) })
	return w
}

// publish sends a payload at QoS 1 and waits for the broker's ack.
func (w *watcher) publish(t *testing.T, topic string, payload []byte) {
	t.Helper()
	tok := w.client.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func (w *watcher) all(topic string) []message {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []message
	for _, m := range w.msgs {
		if m.topic == topic {
			out = append(out, m)
		}
	}
	return out
}

func (w *watcher) results(t *testing.T, pipeline string) []payload.Result {
	var rs []payload.Result
	for _, m := range w.all(pipeline + "/result") {
		var r payload.Result
		if err := json.Unmarshal(m.payload, &r); err != nil {
			t.Fatalf("result is not JSON: %v: %s", err, m.payload)
		}
		rs = append(rs, r)
	}
	return rs
}

func (w *watcher) events(t *testing.T) []payload.Event {
	var es []payload.Event
	for _, m := range w.all("events") {
		var e payload.Event
		if err := json.Unmarshal(m.payload, &e); err != nil {
			t.Fatalf("event is not JSON: %v: %s", err, m.payload)
		}
		es = append(es, e)
	}
	return es
}

func (w *watcher) eventsOf(t *testing.T, typ string) []payload.Event {
	var es []payload.Event
	for _, e := range w.events(t) {
		if e.Type == typ {
			es = append(es, e)
		}
	}
	return es
}

// model returns the newest state published for a model.
func (w *watcher) model(t *testing.T, name string) (payload.ModelState, bool) {
	ms := w.all("models/" + name)
	if len(ms) == 0 {
		return payload.ModelState{}, false
	}
	var st payload.ModelState
	if err := json.Unmarshal(ms[len(ms)-1].payload, &st); err != nil {
		t.Fatal(err)
	}
	return st, true
}

func (w *watcher) last(topic string) string {
	ms := w.all(topic)
	if len(ms) == 0 {
		return ""
	}
	return string(ms[len(ms)-1].payload)
}

// waitFor polls cond until it holds or timeout passes (then the test fails
// with what).
func waitFor(t *testing.T, p *proc, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p != nil && !p.running() {
			t.Fatalf("edgeinferd exited (%v) while waiting for %s", p.err, what)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serving waits until a version of model serves pipeline and returns its
// state (version, pid).
func (w *watcher) serving(t *testing.T, p *proc, model, pipeline string) payload.VersionState {
	t.Helper()
	var vs payload.VersionState
	waitFor(t, p, 60*time.Second, model+" serving pipeline "+pipeline, func() bool {
		st, ok := w.model(t, model)
		if !ok || st.Serving == "" {
			return false
		}
		vs = st.Versions[st.Serving]
		return vs.State == payload.StateServing && slices.Contains(vs.Pipelines, pipeline)
	})
	return vs
}

// checkDigits asserts each digit has exactly one result and returns the
// accuracy of top-1 against the true labels. key maps a result to the
// digit's index.
func checkDigits(t *testing.T, rs []payload.Result, ds []digit, key func(payload.Result) int) float64 {
	t.Helper()
	seen := make([]int, len(ds))
	correct := 0
	for _, r := range rs {
		i := key(r)
		if i < 0 || i >= len(ds) {
			t.Fatalf("result for an unknown input: %+v", r)
		}
		seen[i]++
		var out struct {
			Top []struct {
				Label string  `json:"label"`
				Score float64 `json:"score"`
			} `json:"top"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil || len(out.Top) == 0 {
			t.Fatalf("result output %s: %v", r.Output, err)
		}
		if out.Top[0].Label == ds[i].label {
			correct++
		}
		if r.Schema != payload.Schema || r.Model.Name != "lenet5" || r.Model.Version == "" || r.Task != "classify" ||
			r.Width != 32 || r.Height != 32 || r.CapturedAt.IsZero() || r.Timings.Total <= 0 || r.Timings.Inference <= 0 {
			t.Fatalf("result lacks envelope fields: %+v", r)
		}
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("%s has %d results, want exactly 1", ds[i].name, n)
		}
	}
	return float64(correct) / float64(len(ds))
}

// indexOfName maps "digit-017.png" (in any folder, maybe suffixed) to 17.
func indexOfName(source string) int {
	base := filepath.Base(source)
	if !strings.HasPrefix(base, "digit-") {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(base, "digit-"), ".png"))
	if err != nil {
		return -1
	}
	return n
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

// copyVersion copies the model version folder src to dst (created), with
// edit applied to its edgeinfer.toml when given. It writes into a dot-name
// and renames it into place, the way a version is deployed atomically.
func copyVersion(t *testing.T, src, dst string, edit func(manifest string) string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	if err := os.CopyFS(tmp, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		path := filepath.Join(tmp, "edgeinfer.toml")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(edit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// relabel returns an edit for copyVersion that prefixes every label, so
// that the version's answers tell it apart from the original's.
func relabel(prefix string) func(string) string {
	return func(m string) string {
		return strings.Replace(m, `labels = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]`,
			fmt.Sprintf(`labels = ["%[1]s0", "%[1]s1", "%[1]s2", "%[1]s3", "%[1]s4", "%[1]s5", "%[1]s6", "%[1]s7", "%[1]s8", "%[1]s9"]`, prefix), 1)
	}
}

// rssKB is the resident memory of process pid in KiB (VmRSS).
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("rss of %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// command publishes a command on <prefix>/cmd and returns its reply.
func (w *watcher) command(t *testing.T, p *proc, prefix string, c payload.Command) payload.Reply {
	t.Helper()
	if c.ID == "" {
		c.ID = fmt.Sprintf("%s-%d", c.Command, time.Now().UnixNano())
	}
	b, _ := json.Marshal(c)
	w.publish(t, prefix+"/cmd", b)
	var reply payload.Reply
	waitFor(t, p, 30*time.Second, "the reply to command "+c.ID, func() bool {
		for _, m := range w.all("cmd/reply") {
			var r payload.Reply
			if json.Unmarshal(m.payload, &r) == nil && r.ID == c.ID {
				reply = r
				return true
			}
		}
		return false
	})
	return reply
}

// prefixOf is the topic prefix run gives a test.
func prefixOf(t *testing.T) string { return "e2e/" + strings.ReplaceAll(t.Name(), "/", "_") }
