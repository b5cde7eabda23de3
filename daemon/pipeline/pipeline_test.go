package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/daemon/serving"
	"github.com/edgeinfer/edgeinfer/daemon/track"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// task is a fake plugin task: it answers with the sum of the pixels, refuses
// frames of width 0, dies on seq 13 (once per process, as long as crashes
// lasts), hangs on seq 21 the first time, and makes an image named "mask"
// on seq 31 and one named "Mask/1" on seq 32. From seq 101 on it detects
// one object, 1 pixel further right at each seq; from seq 201 on, two
// (chain_test.go). Seqs 51 to 60 give segment-style alerts: water from 52
// to 54 and from 57 on, sand at 53. It refuses every frame of the pipeline
// called "refuses".
type task struct {
	crashes *atomic.Int32 // seq 13 kills the process while > 0
	hung    *atomic.Bool  // seq 21 hangs once
	die     func()
}

func (t *task) Load(context.Context, sdk.LoadRequest) (sdk.ModelInfo, error) {
	return sdk.ModelInfo{Task: "classify"}, nil
}
func (t *task) Configure(context.Context, map[string]json.RawMessage) error { return nil }
func (t *task) Validate(context.Context) (sdk.Validation, error)            { return sdk.Validation{}, nil }

func (t *task) Infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	if f.Width == 0 {
		return sdk.Result{}, fmt.Errorf("%w: empty", sdk.ErrBadFrame)
	}
	if f.Pipeline == "refuses" {
		return sdk.Result{}, fmt.Errorf("%w: not for me", sdk.ErrBadFrame)
	}
	if f.Seq == 13 && t.crashes.Add(-1) >= 0 {
		t.die()
		<-ctx.Done()
		return sdk.Result{}, ctx.Err()
	}
	if f.Seq == 21 && t.hung.CompareAndSwap(false, true) {
		<-ctx.Done()
		return sdk.Result{}, ctx.Err()
	}
	sum := 0
	for _, b := range f.RGB {
		sum += int(b)
	}
	out, _ := json.Marshal(map[string]any{"pipeline": f.Pipeline, "sum": sum, "sensor": f.Sensor, "source": f.Source, "time": f.Time})
	if f.Seq > 100 {
		x := float64(f.Seq - 100)
		out, _ = json.Marshal(map[string]any{"detections": []map[string]any{
			{"label": "a", "class": 0, "score": 0.9, "box": map[string]float64{"x1": x, "y1": 0, "x2": x + 10, "y2": 10}}}})
	}
	if f.Seq > 200 {
		x := float64(f.Seq - 200)
		out, _ = json.Marshal(map[string]any{"detections": []map[string]any{
			{"label": "a", "class": 0, "score": 0.9, "box": map[string]float64{"x1": x, "y1": 0, "x2": x + 10, "y2": 10}},
			{"label": "b", "class": 1, "score": 0.8, "box": map[string]float64{"x1": 20, "y1": 5, "x2": 30, "y2": 15}}}})
	}
	if f.Seq > 50 && f.Seq <= 60 {
		alerts := []map[string]any{}
		if f.Seq >= 52 && f.Seq <= 54 || f.Seq >= 57 {
			alerts = append(alerts, map[string]any{"label": "water", "share": 0.3, "threshold": 0.2})
		}
		if f.Seq == 53 {
			alerts = append(alerts, map[string]any{"label": "sand", "share": 0.5, "threshold": 0.4})
		}
		out, _ = json.Marshal(map[string]any{"classes": []map[string]any{{"label": "water", "share": 0.1}}, "alerts": alerts})
	}
	switch f.Seq {
	case 31:
		return sdk.Result{Output: out, Images: map[string][]byte{"mask": []byte("image 31")}}, nil
	case 32:
		return sdk.Result{Output: out, Images: map[string][]byte{"Mask/1": []byte("image 32")}}, nil
	}
	return sdk.Result{Output: out}, nil
}

// bus records published results (and the topics of everything
// published, in order) and acknowledges them, or fails them, or, while
// held, keeps their acknowledgements for ack.
type bus struct {
	mu      sync.Mutex
	results []payload.Result
	topics  []string
	fail    bool
	hold    bool
	acks    []func(error) // held, in the order of results
}

func (b *bus) PublishThen(topic string, _ bool, body []byte, then func(error)) {
	var r payload.Result
	json.Unmarshal(body, &r)
	b.mu.Lock()
	fail := b.fail
	if !fail {
		b.topics = append(b.topics, topic+" "+string(body[:min(len(body), 8)]))
		if strings.HasSuffix(topic, "/result") {
			b.results = append(b.results, r)
		}
	}
	if b.hold && !fail {
		b.acks = append(b.acks, then)
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	if fail {
		then(errors.New("broker gone"))
		return
	}
	then(nil)
}

type env struct {
	mgr     *serving.Manager
	p       *Pipeline
	q       *router.Queue
	sink    *router.Sink
	bus     *bus
	events  chan payload.Event
	crashes atomic.Int32
	pids    sync.Map
	// pipelines fed by p (chain_test.go): the pipelines of each model, and
	// the feeds p hands its results to
	pipelines map[string][]string
	feeds     []*router.Feed
}

type nopReporter struct{}

func (nopReporter) BadInput(string, string, error)               {}
func (nopReporter) Event(string, string, string, map[string]any) {}

// start runs a pipeline over one model served by fake processes.
func start(t *testing.T, timeout time.Duration) *env {
	t.Helper()
	e := &env{q: router.NewQueue(4), bus: &bus{}, events: make(chan payload.Event, 100), pipelines: map[string][]string{"m": {"p"}}}
	e.sink = router.NewSink("cam", nopReporter{})
	e.sink.SetQueues([]*router.Queue{e.q})
	plugins := t.TempDir()
	os.WriteFile(filepath.Join(plugins, "edgeinfer-classify"), []byte("binary"), 0o755)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hung := &atomic.Bool{}
	mgr := serving.New(serving.Config{PluginDir: plugins, CacheDir: t.TempDir(), Logger: log,
		MinBackoff: 10 * time.Millisecond, Poll: 20 * time.Millisecond,
		Start: func(string, sdk.Access) (sdk.Process, error) {
			tk := &task{crashes: &e.crashes, hung: hung}
			f := sdk.NewFake(tk)
			tk.die = f.Crash
			return f, nil
		},
		Publish: func(payload.ModelState) {},
		Event: func(ev payload.Event) {
			select {
			case e.events <- ev:
			default:
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	go mgr.Run(ctx)
	md := mgr.Model("m")
	md.SetPipelines(map[string]json.RawMessage{"p": nil})
	md.SetVersions([]repo.Version{{Model: "m", Version: "1", Num: 1, Dir: "/models/m/1", Fingerprint: "a",
		Manifest: manifest.Manifest{Task: "classify"}}})
	var publishing sync.WaitGroup
	p := New("p", Settings{Timeout: timeout, Retries: 2}, e.q, md, Env{Device: "d", Topic: "t/p/result",
		Bus: e.bus, Event: func(ev payload.Event) { e.events <- ev }, Logger: log, Publishing: &publishing})
	e.mgr, e.p = mgr, p
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; mgr.Close() })
	return e
}

// deliver hands n frames (seq 1..n) to the pipeline and returns how each
// finished.
// frameTime is the capture time of the test frame seq.
func frameTime(seq uint64) time.Time {
	return time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC).Add(time.Duration(seq) * 40 * time.Millisecond)
}

func (e *env) deliver(t *testing.T, seqs ...uint64) []chan error {
	t.Helper()
	var dones []chan error
	for _, seq := range seqs {
		w := 2
		if seq == 7 {
			w = 0 // a frame the task refuses
		}
		f := &sensors.Frame{Sensor: "cam", Seq: seq, Source: fmt.Sprintf("frame %d", seq), Time: frameTime(seq),
			Width: w, Height: 1, RGB: []byte{byte(seq), 1, 1, 1, 1, 1}[:w*3]}
		done := make(chan error, 1)
		f.OnDone(func(err error) { done <- err })
		if err := e.sink.Deliver(context.Background(), f); err != nil {
			t.Fatal(err)
		}
		dones = append(dones, done)
	}
	return dones
}

func finished(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("a frame never finished")
		return nil
	}
}

func TestEachFrameGetsOneResultNamingTheVersionAndItsOwnPixelsSensorSourceAndTime(t *testing.T) {
	e := start(t, 5*time.Second)
	dones := e.deliver(t, 1, 2, 3)
	for _, d := range dones {
		if err := finished(t, d); err != nil {
			t.Fatal(err)
		}
	}
	e.bus.mu.Lock()
	defer e.bus.mu.Unlock()
	if len(e.bus.results) != 3 {
		t.Fatalf("%d results, want 3", len(e.bus.results))
	}
	for i, r := range e.bus.results {
		var out struct {
			Pipeline       string
			Sum            int
			Sensor, Source string
			Time           time.Time
		}
		json.Unmarshal(r.Output, &out)
		if r.Seq != uint64(i+1) || r.Model.Version != "1" || r.Model.PID == 0 || out.Pipeline != "p" || out.Sum != i+1+5 {
			t.Fatalf("result %d: %+v %s", i, r, r.Output)
		}
		// The task saw where and when the frame was taken.
		if out.Sensor != "cam" || out.Source != fmt.Sprintf("frame %d", i+1) || !out.Time.Equal(frameTime(r.Seq)) {
			t.Fatalf("result %d: the task saw %s", i, r.Output)
		}
	}
}

// A task's image goes out on <prefix>/<pipeline>/<name> before the
// result; an image whose name cannot be a topic level fails the frame,
// naming it, and nothing of that frame is published.
func TestImagesArePublishedBeforeTheirResultUnderTheirName(t *testing.T) {
	e := start(t, 5*time.Second)
	dones := e.deliver(t, 31, 32)
	if err := finished(t, dones[0]); err != nil {
		t.Fatal(err)
	}
	if err := finished(t, dones[1]); err == nil || !strings.Contains(err.Error(), `"Mask/1"`) {
		t.Fatalf("frame 32 finished with %v, want an error naming the image", err)
	}
	e.bus.mu.Lock()
	defer e.bus.mu.Unlock()
	if want := []string{"t/p/mask image 31", `t/p/result {"schema`}; !slices.Equal(e.bus.topics, want) {
		t.Fatalf("published %q, want %q", e.bus.topics, want)
	}
}

// Tracks live in the pipeline, not in the plugin: when a new version of
// the model takes over between two frames, the object keeps its track id
// and does not enter again.
func TestTracksSurviveAModelVersionSwap(t *testing.T) {
	e := start(t, 5*time.Second)
	cfg := track.Config{MinHits: 2}.Defaults()
	e.p.Update(Settings{Timeout: 5 * time.Second, Retries: 2, Tracker: &cfg}, e.mgr.Model("m"))
	seq := uint64(101)
	next := func() payload.Result {
		t.Helper()
		if err := finished(t, e.deliver(t, seq)[0]); err != nil {
			t.Fatal(err)
		}
		seq++
		e.bus.mu.Lock()
		defer e.bus.mu.Unlock()
		return e.bus.results[len(e.bus.results)-1]
	}
	for range 3 {
		next()
	}
	v := func(n int, fp string) repo.Version {
		return repo.Version{Model: "m", Version: fmt.Sprint(n), Num: n, Dir: fmt.Sprintf("/models/m/%d", n), Fingerprint: fp,
			Manifest: manifest.Manifest{Task: "classify"}}
	}
	e.mgr.Model("m").SetVersions([]repo.Version{v(2, "b"), v(1, "a")}) // newest first, as the repository lists them
	deadline := time.Now().Add(10 * time.Second)
	for next().Model.Version != "2" {
		if time.Now().After(deadline) {
			t.Fatal("version 2 never served")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		next()
	}
	e.bus.mu.Lock()
	defer e.bus.mu.Unlock()
	ids := map[float64]bool{}
	versions := map[string]bool{}
	for _, r := range e.bus.results {
		var out struct {
			Detections []struct {
				TrackID float64 `json:"track_id"`
			} `json:"detections"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil || len(out.Detections) != 1 {
			t.Fatalf("result %d: %s", r.Seq, r.Output)
		}
		ids[out.Detections[0].TrackID] = true
		versions[r.Model.Version] = true
	}
	if len(ids) != 1 || !versions["1"] || !versions["2"] {
		t.Fatalf("track ids %v over versions %v: want one id across both", ids, versions)
	}
	entered := 0
	for len(e.events) > 0 {
		if ev := <-e.events; ev.Type == payload.EventObjectEntered {
			entered++
		}
	}
	if entered != 1 {
		t.Fatalf("%d object_entered events, want 1", entered)
	}
}

// A result's alerts become events when they change: raised when a label
// appears, cleared when it goes, nothing while they stay.
func TestAlertsAreRaisedAndClearedOnce(t *testing.T) {
	e := start(t, 5*time.Second)
	for _, d := range e.deliver(t, 51, 52, 53, 54, 55, 56, 57, 58) {
		if err := finished(t, d); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(e.events) > 0 {
		ev := <-e.events
		if ev.Type == payload.EventAlertRaised || ev.Type == payload.EventAlertCleared {
			got = append(got, fmt.Sprintf("%s %s %s", ev.Source, ev.Type, ev.Attrs["label"]))
		}
	}
	want := []string{"frame 52 alert_raised water", "frame 53 alert_raised sand", "frame 54 alert_cleared sand",
		"frame 55 alert_cleared water", "frame 57 alert_raised water"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestABadFrameIsReportedAndTheNextOneServed(t *testing.T) {
	e := start(t, 5*time.Second)
	dones := e.deliver(t, 7, 8)
	if err := finished(t, dones[0]); !errors.Is(err, sdk.ErrBadFrame) && !strings.Contains(fmt.Sprint(err), "bad frame") {
		t.Fatalf("bad frame finished with %v", err)
	}
	if err := finished(t, dones[1]); err != nil {
		t.Fatal(err)
	}
	for ev := range e.events {
		if ev.Type == payload.EventBadInput {
			if ev.Source != "frame 7" || ev.Pipeline != "p" {
				t.Fatalf("bad_input event: %+v", ev)
			}
			return
		}
	}
}

func TestAFrameWhoseProcessDiesIsTriedAgainOnTheRestartedProcess(t *testing.T) {
	e := start(t, 5*time.Second)
	e.crashes.Store(1)
	dones := e.deliver(t, 12, 13, 14)
	for _, d := range dones {
		if err := finished(t, d); err != nil {
			t.Fatal(err)
		}
	}
	e.bus.mu.Lock()
	defer e.bus.mu.Unlock()
	if len(e.bus.results) != 3 || e.bus.results[1].Seq != 13 || e.bus.results[0].Model.PID == e.bus.results[2].Model.PID {
		t.Fatalf("results %+v: want 12, 13, 14 with a new process after 13", e.bus.results)
	}
}

func TestAFrameThatKillsEveryProcessIsGivenUpAfterItsRetries(t *testing.T) {
	e := start(t, 5*time.Second)
	e.crashes.Store(100)
	dones := e.deliver(t, 13, 14)
	if err := finished(t, dones[0]); err == nil || !strings.Contains(err.Error(), "died 3 times") {
		t.Fatalf("frame 13 finished with %v, want given up after 3 tries", err)
	}
	if err := finished(t, dones[1]); err != nil {
		t.Fatalf("the next frame: %v", err)
	}
}

func TestAHungProcessIsKilledAfterTheTimeoutAndTheFrameTriedAgain(t *testing.T) {
	e := start(t, 200*time.Millisecond)
	dones := e.deliver(t, 21, 22)
	for _, d := range dones {
		if err := finished(t, d); err != nil {
			t.Fatal(err)
		}
	}
	e.bus.mu.Lock()
	defer e.bus.mu.Unlock()
	if len(e.bus.results) != 2 || e.bus.results[0].Seq != 21 {
		t.Fatalf("results %+v", e.bus.results)
	}
}

func TestAResultTheBrokerDidNotTakeKeepsItsInput(t *testing.T) {
	e := start(t, 5*time.Second)
	e.bus.fail = true
	dones := e.deliver(t, 1)
	if err := finished(t, dones[0]); !errors.Is(err, sensors.ErrUnfinished) {
		t.Fatalf("finished with %v, want ErrUnfinished", err)
	}
}

func TestAFrameWaitingForAModelThatCannotServeFollowsAReloadToAnotherModel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		removed bool // no pipeline uses the old model any more
	}{{"old model still used", false}, {"old model removed", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, 5*time.Second)
			set := Settings{Timeout: 5 * time.Second, Retries: 2}
			// Model n has no version: it never serves.
			n := e.mgr.Model("n")
			n.SetPipelines(map[string]json.RawMessage{"p": nil})
			n.SetVersions(nil)
			e.p.Update(set, n)
			dones := e.deliver(t, 1, 2, 3)
			deadline := time.Now().Add(5 * time.Second)
			for e.q.Len() != 2 { // the worker holds frame 1, waiting for n
				if time.Now().After(deadline) {
					t.Fatalf("%d frames queued, want 2", e.q.Len())
				}
				time.Sleep(time.Millisecond)
			}
			// The reload: p goes back to m (the daemon updates the pipeline,
			// then sets the models' pipelines and removes unused ones).
			e.p.Update(set, e.mgr.Model("m"))
			if tc.removed {
				e.mgr.Remove("n")
			} else {
				n.SetPipelines(map[string]json.RawMessage{"other": nil})
			}
			for _, d := range dones {
				if err := finished(t, d); err != nil {
					t.Fatal(err)
				}
			}
			e.bus.mu.Lock()
			defer e.bus.mu.Unlock()
			if len(e.bus.results) != 3 {
				t.Fatalf("%d results, want 3", len(e.bus.results))
			}
			for i, r := range e.bus.results {
				if r.Seq != uint64(i+1) || r.Model.Name != "m" {
					t.Fatalf("result %d: seq %d from model %q", i, r.Seq, r.Model.Name)
				}
			}
		})
	}
}

// Dispatched tells how long the frame in the plugin has been there: not at
// all while the pipeline is idle, from when the frame was sent while the
// plugin works on it (here: hangs until the pipeline's timeout), and not
// at all again once the frame is done.
func TestDispatchedSaysSinceWhenAFrameIsInThePluginAndNothingWhileIdle(t *testing.T) {
	e := start(t, 400*time.Millisecond)
	if since, ok := e.p.Dispatched(); ok {
		t.Fatalf("an idle pipeline has a frame in its plugin since %v", since)
	}
	before := time.Now()
	done := e.deliver(t, 21)[0]
	deadline := time.Now().Add(5 * time.Second)
	for {
		since, ok := e.p.Dispatched()
		if ok {
			if since.Before(before) || since.After(time.Now()) {
				t.Fatalf("dispatched at %v, not between %v and now", since, before)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hanging frame never showed as dispatched")
		}
		time.Sleep(time.Millisecond)
	}
	if err := finished(t, done); err != nil {
		t.Fatal(err)
	}
	if since, ok := e.p.Dispatched(); ok {
		t.Fatalf("the frame is done, yet one is in the plugin since %v", since)
	}
}
