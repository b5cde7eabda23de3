package metrics

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

func gaugeFunc(name string, f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: "test"}, f)
}

func httpGet(url string) (int, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// readyz requests /readyz and decodes its body.
func readyz(t *testing.T, m *Metrics) (int, Readiness) {
	t.Helper()
	code, body := get(t, m.Handler(), "/readyz")
	var r Readiness
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/readyz body is not JSON: %v: %s", err, body)
	}
	if r.Ready != (code == http.StatusOK) {
		t.Fatalf("/readyz: %d with ready %v", code, r.Ready)
	}
	return code, r
}

func TestReadyzTurnsReadyOnlyWhenEveryPipelineIsServed(t *testing.T) {
	r := newRig(t, task{}, map[string]string{"digits": "lenet5", "faces": "facenet"})

	code, got := readyz(t, r.m)
	if code != http.StatusServiceUnavailable || got.Status != "starting" || got.Reason != "edgeinferd is starting" {
		t.Fatalf("while starting: %d %+v", code, got)
	}
	r.m.SetPhase(Running)
	// Neither model has its versions from the repository yet.
	if code, got = readyz(t, r.m); code != http.StatusServiceUnavailable || got.Status != StatusNotReady ||
		!slices.Equal(got.NotReady, []string{"digits", "faces"}) {
		t.Fatalf("before any version: %d %+v", code, got)
	}
	r.publish("lenet5")
	r.serving(t, "lenet5")
	code, got = readyz(t, r.m)
	if code != http.StatusServiceUnavailable || !slices.Equal(got.NotReady, []string{"faces"}) {
		t.Fatalf("with lenet5 serving only: %d %+v", code, got)
	}
	if d := got.Pipelines["digits"]; !d.Ready || d.State != "serving" || d.Model != "lenet5" || d.Version != "1" || d.Reason != "" {
		t.Fatalf("digits: %+v", d)
	}
	if f := got.Pipelines["faces"]; f.Ready || f.State != "starting" || f.Model != "facenet" || !strings.Contains(f.Reason, "model facenet") {
		t.Fatalf("faces: %+v", f)
	}
	if scrape(t, r.m.Handler())["edgeinfer_ready"] != 0 {
		t.Fatal("edgeinfer_ready is 1 while /readyz says 503")
	}

	r.publish("facenet")
	r.serving(t, "facenet")
	code, got = readyz(t, r.m)
	if code != http.StatusOK || !got.Ready || got.Status != StatusReady || len(got.NotReady) != 0 || !got.MQTT.Connected {
		t.Fatalf("with both serving: %d %+v", code, got)
	}
	if scrape(t, r.m.Handler())["edgeinfer_ready"] != 1 {
		t.Fatal("edgeinfer_ready is 0 while /readyz says 200")
	}

	r.m.SetPhase(Stopping)
	if code, got = readyz(t, r.m); code != http.StatusServiceUnavailable || got.Status != "stopping" {
		t.Fatalf("while stopping: %d %+v", code, got)
	}
}

func TestReadyzNamesAPipelineWhoseOptionsWereRefused(t *testing.T) {
	r := newRig(t, task{refuse: "bad"}, map[string]string{"good": "m", "bad": "m"})
	r.m.SetPhase(Running)
	r.publish("m")
	wait(t, "m serving good", func() bool {
		_, got := readyz(t, r.m)
		return got.Pipelines["good"].Ready
	})
	code, got := readyz(t, r.m)
	b := got.Pipelines["bad"]
	if code != http.StatusServiceUnavailable || !slices.Equal(got.NotReady, []string{"bad"}) || b.State != "failed" ||
		!strings.Contains(b.Reason, "refused its options") || !strings.Contains(b.Reason, "top_k must be 1..10") {
		t.Fatalf("%d %+v", code, got)
	}
	m := scrape(t, r.m.Handler())
	if m[`edgeinfer_pipeline_serving{model="m",pipeline="bad"}`] != 0 || m[`edgeinfer_pipeline_serving{model="m",pipeline="good"}`] != 1 {
		t.Fatalf("edgeinfer_pipeline_serving: bad %v, good %v", m[`edgeinfer_pipeline_serving{model="m",pipeline="bad"}`],
			m[`edgeinfer_pipeline_serving{model="m",pipeline="good"}`])
	}
}

func TestReadinessSaysWhyForEachWayAModelCannotServe(t *testing.T) {
	p := []Pipeline{{Name: "p", Model: "m"}}
	for _, c := range []struct {
		name   string
		st     payload.ModelState
		reason string
	}{
		{"a version loading", payload.ModelState{Model: "m", Versions: map[string]payload.VersionState{"2": {State: payload.StateLoading}}},
			"model m version 2 is loading"},
		{"its process restarting", payload.ModelState{Model: "m", Serving: "1", Versions: map[string]payload.VersionState{
			"1": {State: payload.StateRestarting, Pipelines: []string{"p"}}}}, "model m version 1 is restarting"},
		{"no servable version", payload.ModelState{Model: "m", Reason: "no version in the repository"}, "model m: no version in the repository"},
	} {
		r := readiness(Running, Snapshot{Pipelines: p, Models: []payload.ModelState{c.st}})
		if r.Ready || r.Pipelines["p"].Reason != c.reason || !slices.Equal(r.NotReady, []string{"p"}) {
			t.Errorf("%s: %+v, want the reason %q", c.name, r, c.reason)
		}
	}
	if r := readiness(Running, Snapshot{}); r.Ready {
		t.Errorf("ready with no pipeline: %+v", r)
	}
}

func TestHealthzAnswersWithoutWaitingForTheDaemon(t *testing.T) {
	held := make(chan struct{})
	defer close(held)
	m := New(func() Snapshot { <-held; return Snapshot{} }, quiet) // a daemon whose lock is held
	done := make(chan struct{})
	var code int
	var body []byte
	go func() { defer close(done); code, body = get(t, m.Handler(), "/healthz") }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("/healthz waited for the daemon")
	}
	var h Health
	if err := json.Unmarshal(body, &h); err != nil || code != http.StatusOK || h.Status != "alive" || h.Phase != Starting || h.Uptime < 0 {
		t.Fatalf("/healthz: %d %s (%v)", code, body, err)
	}
}
