package e2e

// Metrics and health end to end: edgeinferd with [http] listen, a real
// plugin serving lenet5, Mosquitto; /readyz, /healthz and /metrics read over
// HTTP as a probe and Prometheus would.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// httpGet returns the status and body of a GET, or 0 when nothing answers.
func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b
}

// readiness is /readyz's body as README.md documents it.
type readiness struct {
	Ready     bool     `json:"ready"`
	Status    string   `json:"status"`
	Reason    string   `json:"reason"`
	NotReady  []string `json:"not_ready"`
	Pipelines map[string]struct {
		Ready   bool   `json:"ready"`
		State   string `json:"state"`
		Model   string `json:"model"`
		Version string `json:"version"`
		Reason  string `json:"reason"`
	} `json:"pipelines"`
	MQTT struct {
		Connected  bool   `json:"connected"`
		Reconnects uint64 `json:"reconnects"`
	} `json:"mqtt"`
}

func readyz(t *testing.T, base string) (int, readiness) {
	t.Helper()
	code, body := httpGet(t, base+"/readyz")
	var r readiness
	if code != 0 {
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("/readyz %d: not JSON: %v: %s", code, err, body)
		}
	}
	return code, r
}

// scrapeMetrics reads /metrics and returns each sample by its series,
// name{label="value",...} with the labels sorted (histograms as _count and
// _sum).
func scrapeMetrics(t *testing.T, base string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus' text format: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			key := func(suffix string) string {
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
			case m.Histogram != nil:
				out[key("_count")] = float64(m.Histogram.GetSampleCount())
				out[key("_sum")] = m.Histogram.GetSampleSum()
			}
		}
	}
	return out
}

func TestMetricsAndHealthOverHTTPFollowTheModelAndTheFrames(t *testing.T) {
	// lenet5 has no version yet: the daemon runs, but cannot serve digits.
	repo := t.TempDir()
	if err := os.MkdirAll(filepath.Join(repo, "lenet5"), 0o755); err != nil {
		t.Fatal(err)
	}
	inbox := t.TempDir()
	addr := mosquitto.FreeAddr(t)
	base := "http://" + addr
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: repo, models: opsModels,
		extra: digitsPipeline + fmt.Sprintf("\n[http]\nlisten = %q\n", addr)})

	waitFor(t, p, 30*time.Second, "/healthz to answer", func() bool { code, _ := httpGet(t, base+"/healthz"); return code == http.StatusOK })
	var health struct {
		Status string  `json:"status"`
		Phase  string  `json:"phase"`
		Uptime float64 `json:"uptime_s"`
	}
	if _, body := httpGet(t, base+"/healthz"); json.Unmarshal(body, &health) != nil || health.Status != "alive" {
		t.Fatalf("/healthz: %s", body)
	}
	var r readiness
	var code int
	waitFor(t, p, 30*time.Second, "edgeinferd to run its pipelines", func() bool { code, r = readyz(t, base); return r.Status == "not_ready" })
	time.Sleep(time.Second) // the repository has been looked at: still nothing to serve
	code, r = readyz(t, base)
	if d := r.Pipelines["digits"]; code != http.StatusServiceUnavailable || r.Ready || !slices.Equal(r.NotReady, []string{"digits"}) ||
		d.Ready || d.Model != "lenet5" || !strings.Contains(d.Reason, "lenet5") || !r.MQTT.Connected {
		t.Fatalf("/readyz with no version of lenet5: %d %+v", code, r)
	}
	t.Logf("/readyz before serving: %d, digits: %+v", code, r.Pipelines["digits"])
	if m := scrapeMetrics(t, base); m["edgeinfer_ready"] != 0 || m[`edgeinfer_pipeline_serving{model="lenet5",pipeline="digits"}`] != 0 {
		t.Fatalf("metrics before serving: ready %v, serving %v", m["edgeinfer_ready"], m[`edgeinfer_pipeline_serving{model="lenet5",pipeline="digits"}`])
	}

	// Version 1 arrives: loaded, validated, serving; ready.
	copyVersion(t, filepath.Join(models(t), "lenet5", "1"), filepath.Join(repo, "lenet5", "1"), nil)
	vs := w.serving(t, p, "lenet5", "digits")
	waitFor(t, p, 10*time.Second, "/readyz 200", func() bool { code, r = readyz(t, base); return code == http.StatusOK })
	if d := r.Pipelines["digits"]; !r.Ready || r.Status != "ready" || len(r.NotReady) != 0 || !d.Ready || d.Version != "1" || d.State != "serving" {
		t.Fatalf("/readyz once serving: %d %+v", code, r)
	}

	// 20 digits and one file that is not an image.
	ds := digits(t)[:20]
	dropDigits(t, inbox, ds)
	if err := os.WriteFile(filepath.Join(inbox, "notes.png"), []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, 60*time.Second, "20 results", func() bool { return len(w.all("digits/result")) >= 20 })
	waitFor(t, p, 10*time.Second, "the bad file counted", func() bool {
		return scrapeMetrics(t, base)[`edgeinfer_sensor_bad_inputs_total{sensor="inbox"}`] == 1
	})
	time.Sleep(300 * time.Millisecond) // a duplicate would show now
	m := scrapeMetrics(t, base)
	rs := w.results(t, "digits")
	for key, want := range map[string]float64{
		`edgeinfer_pipeline_frames_received_total{pipeline="digits"}`:                      20,
		`edgeinfer_pipeline_frames_processed_total{pipeline="digits"}`:                     float64(len(rs)),
		`edgeinfer_pipeline_frames_failed_total{pipeline="digits"}`:                        0,
		`edgeinfer_pipeline_frames_skipped_total{pipeline="digits"}`:                       0,
		`edgeinfer_pipeline_stage_duration_seconds_count{pipeline="digits",stage="total"}`: 20,
		`edgeinfer_sensor_frames_total{sensor="inbox"}`:                                    20,
		`edgeinfer_sensor_bad_inputs_total{sensor="inbox"}`:                                1,
		`edgeinfer_model_version_state{model="lenet5",state="serving",version="1"}`:        1,
		`edgeinfer_model_version_state{model="lenet5",state="loading",version="1"}`:        0,
		`edgeinfer_plugin_restarts_total{model="lenet5",version="1"}`:                      0,
		`edgeinfer_pipeline_serving{model="lenet5",pipeline="digits"}`:                     1,
		`edgeinfer_events_total{type="version_serving"}`:                                   1,
		`edgeinfer_events_total{type="bad_input"}`:                                         1,
		`edgeinfer_mqtt_connected`:                                                         1,
		`edgeinfer_mqtt_reconnects_total`:                                                  0,
		`edgeinfer_ready`:                                                                  1,
	} {
		if got, ok := m[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	if len(rs) != 20 {
		t.Fatalf("%d results for 20 digits", len(rs))
	}
	// The histograms hold the results' own timings.
	var inference, total float64
	for _, r := range rs {
		inference += r.Timings.Inference / 1000
		total += r.Timings.Total / 1000
	}
	for stage, want := range map[string]float64{"inference": inference, "total": total} {
		got := m[`edgeinfer_pipeline_stage_duration_seconds_sum{pipeline="digits",stage="`+stage+`"}`]
		if want <= 0 || math.Abs(got-want) > 1e-6*float64(len(rs)) {
			t.Errorf("%s: histogram sum %v s, the results' timings add up to %v s", stage, got, want)
		}
	}
	// Load and warm-up as the model state says.
	load := m[`edgeinfer_model_load_duration_seconds{model="lenet5",version="1"}`]
	warmup := m[`edgeinfer_model_warmup_duration_seconds{model="lenet5",version="1"}`]
	if vs.LoadMS <= 0 || math.Abs(load-vs.LoadMS/1000) > 1e-9 || math.Abs(warmup-vs.WarmupMS/1000) > 1e-9 || warmup >= load {
		t.Errorf("load %v s, warm-up %v s; the model state says load_ms %v, warmup_ms %v", load, warmup, vs.LoadMS, vs.WarmupMS)
	}
	// The plugin's resident memory is the kernel's, read at the scrape.
	rss := m[`edgeinfer_plugin_resident_memory_bytes{model="lenet5",version="1"}`]
	proc := float64(rssKB(t, vs.PID)) * 1024
	t.Logf("plugin pid %d: metric %.1f MiB, /proc VmRSS %.1f MiB; load %.0f ms, warm-up %.1f ms", vs.PID, rss/(1<<20), proc/(1<<20), load*1000, warmup*1000)
	if rss < 10<<20 || math.Abs(rss-proc) > 0.05*proc {
		t.Errorf("plugin resident memory %v bytes; /proc/%d/status says %v bytes", rss, vs.PID, proc)
	}

	// The plugin dies: a restart is counted, and the new process is the
	// one whose memory is read.
	if err := syscall.Kill(vs.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, 60*time.Second, "the restart counted and /readyz 200 again", func() bool {
		m = scrapeMetrics(t, base)
		code, _ := readyz(t, base)
		return m[`edgeinfer_plugin_restarts_total{model="lenet5",version="1"}`] == 1 && code == http.StatusOK
	})
	again := w.serving(t, p, "lenet5", "digits")
	m = scrapeMetrics(t, base)
	if again.PID == vs.PID || m[`edgeinfer_events_total{type="plugin_restarted"}`] != 1 {
		t.Errorf("after SIGKILL: pid %d (was %d), plugin_restarted events %v", again.PID, vs.PID, m[`edgeinfer_events_total{type="plugin_restarted"}`])
	}
	rss = m[`edgeinfer_plugin_resident_memory_bytes{model="lenet5",version="1"}`]
	if proc := float64(rssKB(t, again.PID)) * 1024; rss < 10<<20 || math.Abs(rss-proc) > 0.05*proc {
		t.Errorf("restarted plugin's resident memory %v bytes; /proc/%d/status says %v bytes", rss, again.PID, proc)
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code after SIGTERM: %d", code)
	}
	if code, _ := httpGet(t, base+"/healthz"); code != 0 {
		t.Fatalf("/healthz still answers (%d) after edgeinferd stopped", code)
	}
}
