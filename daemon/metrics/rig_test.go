package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/pipeline"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/daemon/serving"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// task is a fake plugin task: it takes 2 ms of inference per frame,
// refuses frames of width 0 (a bad input) and the options of the pipeline
// called refuse.
type task struct{ refuse string }

func (task) Load(context.Context, sdk.LoadRequest) (sdk.ModelInfo, error) {
	time.Sleep(5 * time.Millisecond)
	return sdk.ModelInfo{Task: "classify", Warmup: 3 * time.Millisecond}, nil
}

func (t task) Configure(_ context.Context, ps map[string]json.RawMessage) error {
	if _, ok := ps[t.refuse]; ok {
		return fmt.Errorf("pipeline %s: top_k must be 1..10", t.refuse)
	}
	return nil
}

func (task) Validate(context.Context) (sdk.Validation, error) { return sdk.Validation{}, nil }

func (task) Infer(_ context.Context, f sdk.Frame) (sdk.Result, error) {
	if f.Width == 0 {
		return sdk.Result{}, fmt.Errorf("%w: empty", sdk.ErrBadFrame)
	}
	time.Sleep(2 * time.Millisecond)
	return sdk.Result{Output: json.RawMessage(`{}`), Timings: sdk.Timings{Preprocess: time.Millisecond, Inference: 2 * time.Millisecond}}, nil
}

// ackBus acknowledges every publish at once.
type ackBus struct{}

func (ackBus) PublishThen(_ string, _ bool, _ []byte, then func(error)) { then(nil) }

type nopReporter struct{}

func (nopReporter) BadInput(string, string, error)               {}
func (nopReporter) Event(string, string, string, map[string]any) {}

// rig is a daemon in miniature: pipelines (name -> model) fed by the
// sensor "cam", their models served by fake processes, and Metrics reading
// them as the daemon's snapshot does.
type rig struct {
	m    *Metrics
	mgr  *serving.Manager
	sink *router.Sink

	mu    sync.Mutex
	pipes map[string]*pipeline.Pipeline
	model map[string]string
	mqtt  MQTT
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newRig(t *testing.T, tk sdk.Task, pipelines map[string]string) *rig {
	t.Helper()
	r := &rig{pipes: map[string]*pipeline.Pipeline{}, model: pipelines, mqtt: MQTT{Connected: true}}
	r.m = New(r.snapshot, quiet)
	plugins := t.TempDir()
	os.WriteFile(filepath.Join(plugins, "edgeinfer-classify"), []byte("binary"), 0o755)
	r.mgr = serving.New(serving.Config{PluginDir: plugins, CacheDir: t.TempDir(), Logger: quiet, Poll: 20 * time.Millisecond,
		Start:   func(string, sdk.Access) (sdk.Process, error) { return sdk.NewFake(tk), nil },
		Publish: func(payload.ModelState) {}, Event: r.m.ObserveEvent})
	ctx, cancel := context.WithCancel(context.Background())
	go r.mgr.Run(ctx)
	r.sink = router.NewSink("cam", nopReporter{})
	var publishing sync.WaitGroup
	var queues []*router.Queue
	uses := map[string]map[string]json.RawMessage{}
	var done sync.WaitGroup
	for _, name := range slices.Sorted(maps.Keys(pipelines)) {
		model := pipelines[name]
		q := router.NewQueue(8)
		queues = append(queues, q)
		p := pipeline.New(name, pipeline.Settings{Timeout: 5 * time.Second}, q, r.mgr.Model(model), pipeline.Env{
			Device: "t", Topic: "t/" + name + "/result", Bus: ackBus{}, Event: r.m.ObserveEvent, Logger: quiet,
			Publishing: &publishing, Result: r.m.ObserveResult})
		r.pipes[name] = p
		if uses[model] == nil {
			uses[model] = map[string]json.RawMessage{}
		}
		uses[model][name] = nil
		done.Add(1)
		go func() { defer done.Done(); p.Run(ctx) }()
	}
	r.sink.SetQueues(queues)
	for model, ps := range uses {
		r.mgr.Model(model).SetPipelines(ps)
	}
	t.Cleanup(func() { cancel(); done.Wait(); r.mgr.Close() })
	return r
}

// snapshot is what the daemon's snapshot gives the metrics.
func (r *rig) snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Snapshot{MQTT: r.mqtt, Sensors: map[string]payload.SensorStats{}}
	for name, p := range r.pipes {
		s.Pipelines = append(s.Pipelines, Pipeline{Name: name, Model: r.model[name], Stats: p.Stats()})
	}
	frames, bad, skipped := r.sink.Stats()
	s.Sensors["cam"] = payload.SensorStats{Frames: frames, BadInput: bad, Skipped: skipped}
	for _, name := range r.mgr.Names() {
		md, _ := r.mgr.Lookup(name)
		s.Models = append(s.Models, md.State())
	}
	return s
}

// publish makes version 1 of model appear in the repository.
func (r *rig) publish(model string) {
	r.mgr.Model(model).SetVersions([]repo.Version{{Model: model, Version: "1", Num: 1, Dir: "/models/" + model + "/1",
		Fingerprint: "a", Manifest: manifest.Manifest{Task: "classify"}}})
}

// serving waits until model serves every pipeline of it.
func (r *rig) serving(t *testing.T, model string) {
	t.Helper()
	wait(t, "model "+model+" serving its pipelines", func() bool {
		st := r.mgr.Model(model).State()
		vs := st.Versions[st.Serving]
		return st.Serving != "" && vs.State == payload.StateServing && len(vs.Pipelines) == len(st.Pipelines)
	})
}

// frames hands n frames to the sensor's pipelines, the bad ones (width 0)
// among them, and waits until every pipeline has finished each.
func (r *rig) frames(t *testing.T, n int, bad ...int) {
	t.Helper()
	var dones []chan error
	for i := 1; i <= n; i++ {
		w := 2
		if slices.Contains(bad, i) {
			w = 0
		}
		f := &sensors.Frame{Sensor: "cam", Seq: uint64(i), Source: fmt.Sprintf("frame %d", i), Time: time.Now(),
			Width: w, Height: 1, RGB: make([]byte, w*3)}
		done := make(chan error, 1)
		f.OnDone(func(err error) { done <- err })
		if err := r.sink.Deliver(context.Background(), f); err != nil {
			t.Fatal(err)
		}
		dones = append(dones, done)
	}
	for _, d := range dones {
		select {
		case <-d:
		case <-time.After(10 * time.Second):
			t.Fatal("a frame never finished")
		}
	}
}

func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// get requests path of h and returns the status and body.
func get(t *testing.T, h http.Handler, path string) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.Bytes()
}

// scrape reads /metrics as Prometheus would and returns every sample by
// its series, name{label="value",...} with the labels sorted; a histogram
// gives name_bucket{...,le="..."}, name_sum and name_count.
func scrape(t *testing.T, h http.Handler) map[string]float64 {
	t.Helper()
	code, body := get(t, h, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics is not the text format: %v\n%s", err, body)
	}
	return flatten(fams)
}

func flatten(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := func(suffix string, extra ...string) string {
				ls := append(slices.Clone(labels), extra...)
				sort.Strings(ls)
				if len(ls) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key("")] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key("")] = m.Gauge.GetValue()
			case m.Untyped != nil:
				out[key("")] = m.Untyped.GetValue()
			case m.Histogram != nil:
				out[key("_count")] = float64(m.Histogram.GetSampleCount())
				out[key("_sum")] = m.Histogram.GetSampleSum()
				for _, b := range m.Histogram.Bucket {
					out[key("_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}
