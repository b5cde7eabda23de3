// Package metrics is edgeinferd's window for operators: Prometheus metrics
// (prometheus/client_golang) and the health endpoints, served over HTTP
// on [http] listen:
//
//	/metrics  the Prometheus text format
//	/healthz  200 while the process is alive (it answers without a lock)
//	/readyz   200 when every pipeline is served by its model, else 503;
//	          both with a JSON body naming what is not ready and why
//
// It owns the registry and the server, and reads what the daemon already
// knows rather than being called from everywhere: at every scrape it takes
// a Snapshot from the daemon (the pipelines' and sensors' counters, each
// model's state as published on <prefix>/models/<model>, the MQTT
// connection), and turns it into metrics there and then (the resident
// memory of each plugin process is read from /proc at that moment). Two
// things are pushed to it, because no state holds them: each result's
// timings (ObserveResult, from the pipeline worker: the stage latency
// histograms) and each event (ObserveEvent, from telemetry: events by
// type).
//
// Every metric is listed in README.md's "Metrics and health" and shown by
// the Grafana dashboard docs/grafana/edgeinfer.json; tests check both
// against the registry (dashboard_test.go).
//
// Other parts of the daemon add their own metrics with Register, read
// from them at the scrape. The outbox that keeps results through a broker
// outage is one (outbox.go): with an outbox, the daemon registers
//
//	d.metrics.Register(metrics.NewOutboxCollector(d.bus.Outbox(), prefix))
//
// (edgeinfer_outbox_records, _bytes, _max_bytes, _dropped_total); without
// one, no outbox metric is exported.
//
// A nil *Metrics (no [http] listen) accepts every call and does nothing.
package metrics

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// Snapshot is what the daemon knows at one moment, read at each scrape and
// each /readyz.
type Snapshot struct {
	Pipelines []Pipeline
	Sensors   map[string]payload.SensorStats
	// Models are the states of the models in use, as published retained on
	// <prefix>/models/<model>.
	Models []payload.ModelState
	MQTT   MQTT
}

// Pipeline is one running pipeline: its name, its model and its counters.
type Pipeline struct {
	Name  string
	Model string
	Stats payload.PipelineStats
}

// MQTT is the state of the broker connection.
type MQTT struct {
	Connected  bool   `json:"connected"`
	Reconnects uint64 `json:"reconnects"` // connections made again after one was lost
}

// Phase is where the daemon is in its life: only a running daemon can be
// ready.
type Phase string

// Phases.
const (
	Starting Phase = "starting" // connecting, starting the pipelines
	Running  Phase = "running"
	Stopping Phase = "stopping" // SIGTERM: finishing the frames in progress
)

// Stages are the values of the stage label of the latency histogram: the
// timings every result carries (payload.Timings).
var Stages = []string{"queue", "transfer", "preprocess", "inference", "postprocess", "total"}

// StageBuckets are the latency histogram's buckets, in seconds: from half
// a millisecond (a tiny classifier's inference) to a minute (a frame that
// waited for a model to load).
var StageBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Metrics holds the registry and what is pushed to it.
type Metrics struct {
	reg      *prometheus.Registry
	source   func() Snapshot
	log      *slog.Logger
	started  time.Time
	phase    atomic.Value // Phase
	procRoot string       // "/proc"; a test's folder in tests

	stages *prometheus.HistogramVec
	events *prometheus.CounterVec

	mu       sync.Mutex
	observed map[string]bool // pipelines with stage histograms
}

// New makes the metrics of a daemon; source is called at every scrape and
// every /readyz (it may take the daemon's locks, briefly). The phase is
// Starting until SetPhase.
func New(source func() Snapshot, log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.Default()
	}
	m := &Metrics{reg: prometheus.NewRegistry(), source: source, log: log, started: time.Now(), procRoot: "/proc",
		observed: map[string]bool{}}
	m.phase.Store(Starting)
	m.stages = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "edgeinfer_pipeline_stage_duration_seconds",
		Help:    "Time a result spent in each stage (queue, transfer, preprocess, inference, postprocess) and in all (total), by pipeline.",
		Buckets: StageBuckets,
	}, []string{"pipeline", "stage"})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgeinfer_events_total",
		Help: "Events published on <prefix>/events, by type (docs/mqtt.md); a type's series appears at its first event.",
	}, []string{"type"})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.events,
		&collector{m: m},
	)
	return m
}

// SetPhase says where the daemon is: Running once its pipelines are
// started, Stopping from SIGTERM on.
func (m *Metrics) SetPhase(p Phase) {
	if m == nil {
		return
	}
	m.phase.Store(p)
}

// Phase is the phase set last.
func (m *Metrics) Phase() Phase { return m.phase.Load().(Phase) }

// Register adds a collector of another part of the daemon (the outbox's
// depth, say) to the registry.
func (m *Metrics) Register(c prometheus.Collector) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(c)
}

// Registry is the registry served on /metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveResult records the stage timings of a result (pipeline.Env.Result).
func (m *Metrics) ObserveResult(r payload.Result) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.observed[r.Pipeline] = true
	m.mu.Unlock()
	t := r.Timings
	for i, ms := range []float64{t.Queue, t.Transfer, t.Preprocess, t.Inference, t.Postprocess, t.Total} {
		m.stages.WithLabelValues(r.Pipeline, Stages[i]).Observe(ms / 1000)
	}
}

// ObserveEvent counts an event (telemetry.Publisher.OnEvent).
func (m *Metrics) ObserveEvent(e payload.Event) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(e.Type).Inc()
}

// prune forgets the stage histograms of pipelines that are gone.
func (m *Metrics) prune(running map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range slices.Collect(maps.Keys(m.observed)) {
		if !running[name] {
			m.stages.DeletePartialMatch(prometheus.Labels{"pipeline": name})
			delete(m.observed, name)
		}
	}
}

// collector turns a Snapshot into metrics at each scrape.
type collector struct{ m *Metrics }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	pipelineReceived = desc("edgeinfer_pipeline_frames_received_total",
		"Frames the pipeline took from its queue (from its sensor, or crops from its upstream pipeline).", "pipeline")
	pipelineProcessed = desc("edgeinfer_pipeline_frames_processed_total",
		"Frames whose result was handed to the broker.", "pipeline")
	pipelineFailed = desc("edgeinfer_pipeline_frames_failed_total",
		"Frames that failed: bad inputs the task refused, model failures, frames given up after retries.", "pipeline")
	pipelineSkipped = desc("edgeinfer_pipeline_frames_skipped_total",
		"Live frames (and crops of live frames) replaced in the queue by a newer one before the pipeline took them.", "pipeline")
	pipelineQueued = desc("edgeinfer_pipeline_queued_frames",
		"Frames waiting in the pipeline's queue now.", "pipeline")
	pipelinePluginFailures = desc("edgeinfer_pipeline_plugin_failures_total",
		"Times the plugin process died or hung while running one of the pipeline's frames (the frame is retried).", "pipeline")
	pipelineServing = desc("edgeinfer_pipeline_serving",
		"1 while a version of the pipeline's model serves the pipeline, else 0 (what /readyz checks).", "pipeline", "model")
	pipelineCrops = desc("edgeinfer_pipeline_crops_total",
		"Upstream detections offered to a pipeline fed by another, by outcome: made, too_small, over_max, bad.", "pipeline", "outcome")

	sensorFrames = desc("edgeinfer_sensor_frames_total",
		"Frames the sensor read.", "sensor")
	sensorBadInputs = desc("edgeinfer_sensor_bad_inputs_total",
		"Inputs the sensor could not use (not an image, too large, ...).", "sensor")
	sensorSkipped = desc("edgeinfer_sensor_frames_skipped_total",
		"Frames a live sensor dropped because its pipelines were busy.", "sensor")

	versionState = desc("edgeinfer_model_version_state",
		"1 for the state a model version is in (loading, validating, serving, draining, retired, failed, restarting), 0 for the others.", "model", "version", "state")
	versionLoad = desc("edgeinfer_model_load_duration_seconds",
		"How long the version's plugin process took from its start until the model was loaded and warmed up (the last load or restart).", "model", "version")
	versionWarmup = desc("edgeinfer_model_warmup_duration_seconds",
		"How long the version's warm-up inference took (part of the load).", "model", "version")
	pluginRSS = desc("edgeinfer_plugin_resident_memory_bytes",
		"Resident memory of the plugin process of a model version (/proc/<pid>/statm), read at the scrape.", "model", "version")
	pluginRestarts = desc("edgeinfer_plugin_restarts_total",
		"Times the version's plugin process was started again after dying or hanging.", "model", "version")

	mqttConnected = desc("edgeinfer_mqtt_connected",
		"1 while the connection to the MQTT broker is up.")
	mqttReconnects = desc("edgeinfer_mqtt_reconnects_total",
		"Connections to the MQTT broker made again after one was lost.")

	ready = desc("edgeinfer_ready",
		"1 when /readyz answers 200: the daemon runs and every pipeline is served by its model.")

	allDescs = []*prometheus.Desc{pipelineReceived, pipelineProcessed, pipelineFailed, pipelineSkipped, pipelineQueued,
		pipelinePluginFailures, pipelineServing, pipelineCrops, sensorFrames, sensorBadInputs, sensorSkipped,
		versionState, versionLoad, versionWarmup, pluginRSS, pluginRestarts, mqttConnected, mqttReconnects, ready}

	// versionStates are the states of edgeinfer_model_version_state.
	versionStates = []string{payload.StateLoading, payload.StateValidating, payload.StateServing, payload.StateDraining,
		payload.StateRetired, payload.StateFailed, payload.StateRestarting}
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
	c.m.stages.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	s := m.source()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}

	r := readiness(m.Phase(), s)
	running := map[string]bool{}
	for _, p := range s.Pipelines {
		running[p.Name] = true
		st := p.Stats
		counter(pipelineReceived, st.Frames, p.Name)
		counter(pipelineProcessed, st.Results, p.Name)
		counter(pipelineFailed, st.Failed, p.Name)
		counter(pipelineSkipped, st.Skipped, p.Name)
		gauge(pipelineQueued, float64(st.Queued), p.Name)
		counter(pipelinePluginFailures, st.Restarts, p.Name)
		gauge(pipelineServing, b2f(r.Pipelines[p.Name].Ready), p.Name, p.Model)
		if cr := st.Crops; cr != nil {
			counter(pipelineCrops, cr.Made, p.Name, "made")
			counter(pipelineCrops, cr.TooSmall, p.Name, "too_small")
			counter(pipelineCrops, cr.OverMax, p.Name, "over_max")
			counter(pipelineCrops, cr.Bad, p.Name, "bad")
		}
	}
	for name, st := range s.Sensors {
		counter(sensorFrames, st.Frames, name)
		counter(sensorBadInputs, st.BadInput, name)
		counter(sensorSkipped, st.Skipped, name)
	}
	for _, ms := range s.Models {
		for version, vs := range ms.Versions {
			for _, state := range versionStates {
				gauge(versionState, b2f(vs.State == state), ms.Model, version, state)
			}
			counter(pluginRestarts, uint64(vs.Restarts), ms.Model, version)
			if vs.LoadedAt != nil {
				gauge(versionLoad, vs.LoadMS/1000, ms.Model, version)
				gauge(versionWarmup, vs.WarmupMS/1000, ms.Model, version)
			}
			if vs.PID > 0 {
				if rss, err := residentBytes(m.procRoot, vs.PID); err == nil {
					gauge(pluginRSS, float64(rss), ms.Model, version)
				}
			}
		}
	}
	gauge(mqttConnected, b2f(s.MQTT.Connected))
	counter(mqttReconnects, s.MQTT.Reconnects)
	gauge(ready, b2f(r.Ready))

	m.prune(running)
	m.stages.Collect(ch)
}
