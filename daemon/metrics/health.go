package metrics

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/health"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// Readiness is the body of /readyz.
type Readiness struct {
	Ready bool `json:"ready"`
	// Status is ready, not_ready (a pipeline is not served), starting or
	// stopping.
	Status string `json:"status"`
	// Reason says why the daemon as a whole is not ready (starting,
	// stopping); the pipelines' own reasons are in Pipelines.
	Reason string `json:"reason,omitempty"`
	// NotReady names the pipelines not served now, sorted.
	NotReady  []string                     `json:"not_ready,omitempty"`
	Pipelines map[string]PipelineReadiness `json:"pipelines"`
	// MQTT is the broker connection, for information: results wait for
	// the broker, so it does not decide readiness.
	MQTT MQTT `json:"mqtt"`
}

// PipelineReadiness says whether a pipeline is served, by which version,
// and if not, why (daemon/health decides, as it does for systemd).
type PipelineReadiness struct {
	Ready   bool   `json:"ready"`
	State   string `json:"state"` // serving, starting or failed (daemon/health)
	Model   string `json:"model"`
	Version string `json:"version,omitempty"` // the version serving it
	Reason  string `json:"reason,omitempty"`
}

// Statuses of Readiness.
const (
	StatusReady    = "ready"
	StatusNotReady = "not_ready"
)

// Ready tells whether the daemon is ready now, and what is not.
func (m *Metrics) Ready() Readiness { return readiness(m.Phase(), m.source()) }

// readiness is ready when the daemon runs and every pipeline is served by
// its model: a version of it serves and has taken the pipeline's options.
// A pipeline whose model cannot serve it, for now or for good, is not.
func readiness(phase Phase, s Snapshot) Readiness {
	r := Readiness{Pipelines: map[string]PipelineReadiness{}, MQTT: s.MQTT}
	models, states := map[string]string{}, map[string]payload.ModelState{}
	for _, p := range s.Pipelines {
		models[p.Name] = p.Model
	}
	for _, st := range s.Models {
		states[st.Model] = st
	}
	for _, p := range health.Pipelines(models, states) {
		pr := PipelineReadiness{Ready: p.State == health.Serving, State: p.State, Model: p.Model, Reason: p.Why}
		if pr.Ready {
			pr.Version = states[p.Model].Serving
		} else {
			r.NotReady = append(r.NotReady, p.Name) // sorted: Pipelines is
		}
		r.Pipelines[p.Name] = pr
	}
	switch {
	case phase == Starting:
		r.Status, r.Reason = string(Starting), "edgeinferd is starting"
	case phase == Stopping:
		r.Status, r.Reason = string(Stopping), "edgeinferd is stopping"
	case len(s.Pipelines) == 0:
		r.Status, r.Reason = StatusNotReady, "no pipeline runs"
	case len(r.NotReady) > 0:
		r.Status = StatusNotReady
	default:
		r.Ready, r.Status = true, StatusReady
	}
	return r
}

// Health is the body of /healthz.
type Health struct {
	Status string  `json:"status"` // always "alive": an answer is the news
	Phase  Phase   `json:"phase"`
	Uptime float64 `json:"uptime_s"`
}

func (m *Metrics) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, Health{Status: "alive", Phase: m.Phase(), Uptime: time.Since(m.started).Seconds()})
}

func (m *Metrics) readyz(w http.ResponseWriter, _ *http.Request) {
	r := m.Ready()
	code := http.StatusOK
	if !r.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
