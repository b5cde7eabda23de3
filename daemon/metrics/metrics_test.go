package metrics

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

func TestCountersMoveAsFramesFlowThroughThePipelines(t *testing.T) {
	r := newRig(t, task{}, map[string]string{"digits": "m", "also": "m"})
	r.publish("m")
	r.serving(t, "m")
	r.m.SetPhase(Running)
	before := scrape(t, r.m.Handler())
	for _, key := range []string{`edgeinfer_pipeline_frames_received_total{pipeline="digits"}`, `edgeinfer_pipeline_frames_processed_total{pipeline="digits"}`} {
		if v, ok := before[key]; !ok || v != 0 {
			t.Fatalf("%s before any frame: %v (present %v), want 0", key, v, ok)
		}
	}

	r.frames(t, 9, 4) // frame 4 is a bad input
	m := scrape(t, r.m.Handler())
	for key, want := range map[string]float64{
		`edgeinfer_pipeline_frames_received_total{pipeline="digits"}`:                                       9,
		`edgeinfer_pipeline_frames_processed_total{pipeline="digits"}`:                                      8,
		`edgeinfer_pipeline_frames_failed_total{pipeline="digits"}`:                                         1,
		`edgeinfer_pipeline_frames_skipped_total{pipeline="digits"}`:                                        0,
		`edgeinfer_pipeline_frames_processed_total{pipeline="also"}`:                                        8,
		`edgeinfer_pipeline_queued_frames{pipeline="digits"}`:                                               0,
		`edgeinfer_pipeline_plugin_failures_total{pipeline="digits"}`:                                       0,
		`edgeinfer_pipeline_serving{model="m",pipeline="digits"}`:                                           1,
		`edgeinfer_sensor_frames_total{sensor="cam"}`:                                                       9,
		`edgeinfer_pipeline_stage_duration_seconds_count{pipeline="digits",stage="total"}`:                  8,
		`edgeinfer_pipeline_stage_duration_seconds_count{pipeline="digits",stage="inference"}`:              8,
		`edgeinfer_pipeline_stage_duration_seconds_bucket{le="0.001",pipeline="digits",stage="inference"}`:  0,
		`edgeinfer_pipeline_stage_duration_seconds_bucket{le="0.0025",pipeline="digits",stage="inference"}`: 8,
		`edgeinfer_model_version_state{model="m",state="serving",version="1"}`:                              1,
		`edgeinfer_model_version_state{model="m",state="loading",version="1"}`:                              0,
		`edgeinfer_plugin_restarts_total{model="m",version="1"}`:                                            0,
		`edgeinfer_model_warmup_duration_seconds{model="m",version="1"}`:                                    0.003,
		`edgeinfer_events_total{type="bad_input"}`:                                                          2, // one per pipeline
		`edgeinfer_events_total{type="version_serving"}`:                                                    1,
		`edgeinfer_mqtt_connected`:                                                                          1,
		`edgeinfer_mqtt_reconnects_total`:                                                                   0,
		`edgeinfer_ready`:                                                                                   1,
	} {
		if got, ok := m[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	// The stages add up: inference is the task's 2 ms a frame, the total
	// at least that.
	inference := m[`edgeinfer_pipeline_stage_duration_seconds_sum{pipeline="digits",stage="inference"}`]
	total := m[`edgeinfer_pipeline_stage_duration_seconds_sum{pipeline="digits",stage="total"}`]
	if math.Abs(inference-0.016) > 1e-9 || total < inference {
		t.Errorf("stage sums: inference %v s (want 0.016), total %v s", inference, total)
	}
	// Load: the fake's 5 ms Load (warm-up included) and its start.
	if load := m[`edgeinfer_model_load_duration_seconds{model="m",version="1"}`]; load < 0.005 || load > 5 {
		t.Errorf("load duration %v s, want the 5 ms the task's Load took (and a little)", load)
	}
	// A fake process has no /proc entry: no resident memory, rather than a
	// made-up one.
	for key := range m {
		if strings.HasPrefix(key, "edgeinfer_plugin_resident_memory_bytes") {
			t.Errorf("%s for a fake process", key)
		}
	}
	// The daemon's own process and Go runtime.
	if m["process_resident_memory_bytes"] <= 0 || m["go_goroutines"] <= 0 {
		t.Errorf("process and Go collectors missing: rss %v, goroutines %v", m["process_resident_memory_bytes"], m["go_goroutines"])
	}
}

func TestResidentMemoryOfAPluginIsReadFromProcAtTheScrape(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "4242"), 0o755)
	os.WriteFile(filepath.Join(root, "4242", "statm"), []byte("5000 1234 300 10 0 900 0\n"), 0o644)
	snap := Snapshot{Models: []payload.ModelState{{Model: "m", Serving: "2", Versions: map[string]payload.VersionState{
		"1": {State: payload.StateRetired},
		"2": {State: payload.StateServing, PID: 4242},
		"3": {State: payload.StateLoading, PID: 4343}, // gone from /proc
	}}}}
	m := New(func() Snapshot { return snap }, quiet)
	m.procRoot = root
	got := scrape(t, m.Handler())
	if v := got[`edgeinfer_plugin_resident_memory_bytes{model="m",version="2"}`]; v != float64(1234*pageSize) {
		t.Fatalf("rss %v, want 1234 pages of %d bytes", v, pageSize)
	}
	for _, v := range []string{"1", "3"} {
		if _, ok := got[`edgeinfer_plugin_resident_memory_bytes{model="m",version="`+v+`"}`]; ok {
			t.Fatalf("version %s has a resident memory without a process in /proc", v)
		}
	}
	os.WriteFile(filepath.Join(root, "4242", "statm"), []byte("5000 2000 300 10 0 900 0\n"), 0o644)
	if v := scrape(t, m.Handler())[`edgeinfer_plugin_resident_memory_bytes{model="m",version="2"}`]; v != float64(2000*pageSize) {
		t.Fatalf("rss %v after it grew, want 2000 pages: read at each scrape", v)
	}
}

func TestResidentMemoryOfARealProcessMatchesVmRSS(t *testing.T) {
	pid := os.Getpid()
	rss, err := residentBytes("/proc", pid)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	if kb == 0 || rss < kb*1024*9/10 || rss > kb*1024*11/10 {
		t.Fatalf("statm says %d bytes, status VmRSS %d kB", rss, kb)
	}
}

func TestAPipelineThatIsGoneLosesItsSeries(t *testing.T) {
	pipelines := []Pipeline{{Name: "a", Model: "m"}, {Name: "b", Model: "m"}}
	m := New(func() Snapshot { return Snapshot{Pipelines: pipelines} }, quiet)
	for _, p := range []string{"a", "b"} {
		m.ObserveResult(payload.Result{Pipeline: p, Timings: payload.Timings{Total: 3}})
	}
	if got := scrape(t, m.Handler()); got[`edgeinfer_pipeline_stage_duration_seconds_count{pipeline="b",stage="total"}`] != 1 {
		t.Fatalf("b's histogram: %v", got)
	}
	pipelines = pipelines[:1] // b removed by a reload
	got := scrape(t, m.Handler())
	for key := range got {
		if strings.Contains(key, `pipeline="b"`) {
			t.Fatalf("%s is still exported after pipeline b was removed", key)
		}
	}
	if got[`edgeinfer_pipeline_stage_duration_seconds_count{pipeline="a",stage="total"}`] != 1 {
		t.Fatalf("a's histogram went with b's")
	}
}

func TestEventsAreCountedByType(t *testing.T) {
	m := New(func() Snapshot { return Snapshot{} }, quiet)
	for _, typ := range []string{payload.EventConfigRejected, payload.EventBadInput, payload.EventConfigRejected} {
		m.ObserveEvent(payload.Event{Type: typ})
	}
	got := scrape(t, m.Handler())
	if got[`edgeinfer_events_total{type="config_rejected"}`] != 2 || got[`edgeinfer_events_total{type="bad_input"}`] != 1 {
		t.Fatalf("events: %v", got)
	}
}

func TestAnotherPartRegistersItsOwnMetric(t *testing.T) {
	m := New(func() Snapshot { return Snapshot{} }, quiet)
	depth := 0.0
	if err := m.Register(gaugeFunc("edgeinfer_outbox_messages", func() float64 { return depth })); err != nil {
		t.Fatal(err)
	}
	depth = 17
	if got := scrape(t, m.Handler())["edgeinfer_outbox_messages"]; got != 17 {
		t.Fatalf("the registered gauge reads %v, want 17", got)
	}
	if err := m.Register(gaugeFunc("edgeinfer_outbox_messages", func() float64 { return 0 })); err == nil {
		t.Fatal("a second metric of the same name was taken")
	}
}

func TestANilMetricsTakesEveryCallAndDoesNothing(t *testing.T) {
	var m *Metrics
	m.SetPhase(Running)
	m.ObserveResult(payload.Result{Pipeline: "p"})
	m.ObserveEvent(payload.Event{Type: "x"})
	if err := m.Register(nil); err != nil {
		t.Fatal(err)
	}
}

func TestTheServerAnswersOverHTTPAndStops(t *testing.T) {
	m := New(func() Snapshot { return Snapshot{} }, quiet)
	srv, err := m.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 200, "/nothing": 404} {
		resp, err := httpGet("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		if resp != want {
			t.Errorf("GET %s: %d, want %d", path, resp, want)
		}
	}
	if _, err := m.Listen(srv.Addr()); err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Errorf("a second server on the same address: %v, want an http.listen error", err)
	}
	start := time.Now()
	srv.Close()
	if _, err := httpGet("http://" + srv.Addr() + "/healthz"); err == nil {
		t.Fatal("still answering after Close")
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("Close took %s", time.Since(start))
	}
}
