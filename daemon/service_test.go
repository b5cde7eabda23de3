package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/health"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/pipeline"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/daemon/serving"
	"github.com/edgeinfer/edgeinfer/daemon/telemetry"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// recorder is a service manager that keeps every notification.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Notify(states ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, strings.Join(states, "\n"))
	return nil
}

// take returns the notifications since the last take.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

// gateTask is a plugin task whose Load fails with loadErr, or waits for
// load to be closed; its Infer waits for infer to be closed.
type gateTask struct {
	nopTask
	load, infer chan struct{}
	loadErr     error
}

func (g *gateTask) Load(ctx context.Context, _ sdk.LoadRequest) (sdk.ModelInfo, error) {
	if g.loadErr != nil {
		return sdk.ModelInfo{}, g.loadErr
	}
	select {
	case <-g.load:
		return sdk.ModelInfo{Task: "classify"}, nil
	case <-ctx.Done():
		return sdk.ModelInfo{}, ctx.Err()
	}
}

func (g *gateTask) Infer(ctx context.Context, _ sdk.Frame) (sdk.Result, error) {
	select {
	case <-g.infer:
		return sdk.Result{Output: []byte(`{}`)}, nil
	case <-ctx.Done():
		return sdk.Result{}, ctx.Err()
	}
}

// serviceRig is a daemon reporting to a recorder, with pipeline p running
// over model m (fake processes running task, one version once versions()
// is called) and the sensor in's sink to hand it frames; its main loop is
// not running: the test calls what the loop would.
type serviceRig struct {
	d    *Daemon
	rec  *recorder
	md   *serving.Model
	p    *pipeline.Pipeline
	sink *router.Sink
}

func newServiceRig(t *testing.T, task sdk.Task, extra string) *serviceRig {
	t.Helper()
	dir := t.TempDir()
	plugins, models := filepath.Join(dir, "bin"), filepath.Join(dir, "models")
	for _, d := range []string{plugins, filepath.Join(models, "m"), filepath.Join(dir, "in")} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(filepath.Join(plugins, "edgeinfer-classify"), []byte("binary"), 0o755)
	cfg, err := config.Parse(filepath.Join(dir, "config.toml"), `device = "t"
plugin_dir = "`+plugins+`"
[models]
repository = "`+models+`"
[sensors.in]
kind = "dir"
path = "`+filepath.Join(dir, "in")+`"
[pipelines.p]
sensor = "in"
model = "m"
timeout = "10m"
`+extra)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &serviceRig{d: New(cfg, log), rec: &recorder{}}
	d := r.d
	d.ReportTo(r.rec, time.Second)
	d.tel = &telemetry.Publisher{Bus: nopBus{}, Prefix: "t", Logger: log}
	d.mgr = serving.New(serving.Config{PluginDir: plugins, CacheDir: t.TempDir(), Logger: log,
		Start:   func(string, sdk.Access) (sdk.Process, error) { return sdk.NewFake(task), nil },
		Publish: d.publishModel, Event: func(payload.Event) {}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.mgr.Run(ctx) }()
	r.md = d.mgr.Model("m")
	r.md.SetPipelines(map[string]json.RawMessage{"p": nil})
	q := router.NewQueue(4)
	r.p = pipeline.New("p", settingsOf(cfg.Pipelines["p"]), q, r.md, pipeline.Env{Device: "t", Topic: "t/p/result",
		Bus: okBus{}, Event: func(payload.Event) {}, Logger: log, Publishing: &d.publishing})
	d.pipelines["p"] = &pipeRun{p: r.p, cfg: cfg.Pipelines["p"]}
	r.sink = router.NewSink("in", d)
	r.sink.SetQueues([]*router.Queue{q})
	d.sensors["in"] = &sensorRun{sink: r.sink}
	wg.Add(1)
	go func() { defer wg.Done(); r.p.Run(ctx) }()
	t.Cleanup(func() { cancel(); d.mgr.Close(); wg.Wait() })
	return r
}

// versions gives model m its one version.
func (r *serviceRig) versions() {
	r.md.SetVersions([]repo.Version{{Model: "m", Version: "1", Num: 1, Dir: "/m/1", Fingerprint: "1",
		Manifest: manifest.Manifest{Task: "classify"}}})
}

// deliver hands the pipeline a frame; done gets how it finished.
func (r *serviceRig) deliver(t *testing.T, seq uint64) (done chan error) {
	t.Helper()
	done = make(chan error, 1)
	f := &sensors.Frame{Sensor: "in", Seq: seq, Source: "frame", Width: 1, Height: 1, RGB: []byte{1, 2, 3}}
	f.OnDone(func(err error) { done <- err })
	if err := r.sink.Deliver(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	return done
}

// okBus acknowledges every result at once.
type okBus struct{}

func (okBus) PublishThen(_ string, _ bool, _ []byte, then func(error)) { then(nil) }

// until waits for cond, at most 10 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestReadyIsSentOnceEveryPipelinesModelServesItNotBefore(t *testing.T) {
	task := &gateTask{load: make(chan struct{}), infer: make(chan struct{})}
	r := newServiceRig(t, task, "")
	r.d.checkReady()
	if got := r.rec.take(); len(got) != 1 || got[0] != "STATUS=starting: 0 of 1 pipelines serving; p waits: model m is being looked up in the repository" {
		t.Fatalf("before the repository was read: %q", got)
	}
	r.versions()
	until(t, "version 1 loads", func() bool { return r.md.State().Versions["1"].State == payload.StateLoading })
	r.d.checkReady()
	if got := r.rec.take(); len(got) != 1 || got[0] != "STATUS=starting: 0 of 1 pipelines serving; p waits: model m version 1 is loading" {
		t.Fatalf("while loading: %q", got)
	}
	close(task.load)
	servingVersion(t, r.md, "1")
	r.d.checkReady()
	if got := r.rec.take(); len(got) != 1 || got[0] != "READY=1\nSTATUS=1 pipeline serving, 0.0 frames/s" {
		t.Fatalf("once serving: %q, want READY=1 and the status", got)
	}
	r.d.checkReady()
	if got := r.rec.take(); len(got) != 0 {
		t.Fatalf("READY=1 is sent once; then %q", got)
	}
}

// A model that cannot serve does not hold start-up up: waiting would not
// mend it, and the other pipelines serve. The status line names it.
func TestReadyDoesNotWaitForAModelThatCannotServe(t *testing.T) {
	r := newServiceRig(t, &gateTask{loadErr: errors.New("not a SavedModel")}, "")
	r.versions()
	until(t, "the version is rejected", func() bool { return health.Ready(r.d.pipelineHealth()) })
	r.d.checkReady()
	got := r.rec.take()
	if len(got) != 1 || !strings.HasPrefix(got[0], "READY=1\nSTATUS=0 of 1 pipelines serving, 0.0 frames/s; p cannot serve: model m") ||
		!strings.Contains(got[0], "not a SavedModel") {
		t.Fatalf("got %q, want READY=1 and a status naming the rejected model", got)
	}
}

// WATCHDOG=1 goes out while the pipeline is idle or its frame is in the
// plugin for less than stuck_after; not once a frame has been there
// longer; again once it has left.
func TestWatchdogPingsStopWhileAFrameIsStuckInItsPluginAndResumeAfter(t *testing.T) {
	task := &gateTask{load: make(chan struct{}), infer: make(chan struct{})}
	close(task.load)
	r := newServiceRig(t, task, "[systemd]\nstuck_after = \"1s\"\n")
	r.versions()
	servingVersion(t, r.md, "1")
	r.d.checkReady()
	r.rec.take()

	r.d.watchdogTick(time.Now())
	if got := r.rec.take(); len(got) != 1 || got[0] != "WATCHDOG=1" {
		t.Fatalf("idle: %q, want WATCHDOG=1", got)
	}
	done := r.deliver(t, 1)
	var since time.Time
	until(t, "the frame is in the plugin", func() bool {
		var ok bool
		since, ok = r.p.Dispatched()
		return ok
	})
	r.d.watchdogTick(since.Add(900 * time.Millisecond))
	if got := r.rec.take(); len(got) != 1 || got[0] != "WATCHDOG=1" {
		t.Fatalf("a frame in the plugin for 0.9s of 1s: %q, want WATCHDOG=1", got)
	}
	r.d.watchdogTick(since.Add(1500 * time.Millisecond))
	got := r.rec.take()
	if len(got) != 1 || !strings.HasPrefix(got[0], "STATUS=STUCK: pipeline p has had a frame in its plugin for 1.5s (more than 1s); 1 pipeline serving") {
		t.Fatalf("a frame in the plugin for 1.5s of 1s: %q, want a STUCK status and no WATCHDOG=1", got)
	}
	r.d.watchdogTick(since.Add(3 * time.Second))
	if got := r.rec.take(); len(got) != 0 {
		t.Fatalf("still stuck: %q, want silence", got)
	}
	close(task.infer)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	until(t, "the frame left the plugin", func() bool { _, ok := r.p.Dispatched(); return !ok })
	r.d.watchdogTick(time.Now())
	if got := r.rec.take(); len(got) != 2 || got[0] != "STATUS=1 pipeline serving, 0.0 frames/s" || got[1] != "WATCHDOG=1" {
		t.Fatalf("unstuck: %q, want the status without STUCK, then WATCHDOG=1", got)
	}
}

// With the default stuck_after, twice the pipeline's timeout, a frame
// slower than the timeout is not stuck: the pipeline kills its plugin
// itself.
func TestByDefaultAFrameIsStuckAfterTwiceItsPipelinesTimeout(t *testing.T) {
	task := &gateTask{load: make(chan struct{}), infer: make(chan struct{})}
	close(task.load)
	defer close(task.infer)
	r := newServiceRig(t, task, "")
	r.versions()
	servingVersion(t, r.md, "1")
	r.deliver(t, 1)
	var since time.Time
	until(t, "the frame is in the plugin", func() bool {
		var ok bool
		since, ok = r.p.Dispatched()
		return ok
	})
	for _, c := range []struct {
		after time.Duration
		ping  bool
	}{{11 * time.Minute, true}, {19 * time.Minute, true}, {21 * time.Minute, false}} {
		r.d.watchdogTick(since.Add(c.after))
		got := r.rec.take()
		if pinged := len(got) > 0 && got[len(got)-1] == "WATCHDOG=1"; pinged != c.ping {
			t.Fatalf("a frame in the plugin for %s (timeout 10m): %q, want a ping: %v", c.after, got, c.ping)
		}
	}
}

func TestTheStatusLineCountsThePipelinesFramesPerSecond(t *testing.T) {
	task := &gateTask{load: make(chan struct{}), infer: make(chan struct{})}
	close(task.load)
	close(task.infer)
	r := newServiceRig(t, task, "")
	r.versions()
	servingVersion(t, r.md, "1")
	r.d.checkReady()
	t0 := time.Now()
	r.d.statusTick(t0)
	for seq := uint64(1); seq <= 4; seq++ {
		if err := <-r.deliver(t, seq); err != nil {
			t.Fatal(err)
		}
	}
	r.rec.take()
	r.d.statusTick(t0.Add(2 * time.Second))
	if got := r.rec.take(); len(got) != 1 || got[0] != "STATUS=1 pipeline serving, 2.0 frames/s" {
		t.Fatalf("4 frames in 2 s: %q", got)
	}
}

// A version copied into the repository just before the start is not in the
// model's versions until its files have settled: start-up waits for it
// rather than taking the model for one without versions.
func TestReadyWaitsForAVersionWhoseFilesAreSettling(t *testing.T) {
	task := &gateTask{load: make(chan struct{}), infer: make(chan struct{})}
	close(task.load)
	r := newServiceRig(t, task, "")
	r.d.applyUpdate(repo.Update{Model: "m", Settling: []string{"1"}}) // the watch's first update: nothing settled yet...
	r.d.checkReady()
	if got := r.rec.take(); len(got) != 1 || got[0] != "STATUS=starting: 0 of 1 pipelines serving; p waits: model m version 1: its files are settling (models.settle)" {
		t.Fatalf("while version 1 settles: %q", got)
	}
	r.d.applyUpdate(repo.Update{Model: "m", Versions: []repo.Version{{Model: "m", Version: "1", Num: 1, Dir: "/m/1", Fingerprint: "1",
		Manifest: manifest.Manifest{Task: "classify"}}}}) // ...then version 1, settled
	servingVersion(t, r.md, "1")
	r.d.checkReady()
	if got := r.rec.take(); len(got) != 1 || !strings.HasPrefix(got[0], "READY=1\n") {
		t.Fatalf("once version 1 serves: %q", got)
	}
}
