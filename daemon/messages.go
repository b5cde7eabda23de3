package daemon

import (
	"encoding/json"
	"time"
)

// Schema is the version of every JSON payload edgeinferd publishes. It
// changes when a field changes meaning or goes away; new fields may be added
// without a change. The payloads are documented in docs/mqtt.md.
const Schema = 1

// Result is published on <prefix>/<pipeline>/result, one per processed frame.
type Result struct {
	Schema     int             `json:"schema"`
	Device     string          `json:"device"`
	Pipeline   string          `json:"pipeline"`
	Sensor     string          `json:"sensor"`
	Seq        uint64          `json:"seq"`
	Source     string          `json:"source"`
	CapturedAt time.Time       `json:"captured_at"`
	Model      ModelRef        `json:"model"`
	Task       string          `json:"task"`
	Width      int             `json:"width"`
	Height     int             `json:"height"`
	Timings    Timings         `json:"timings_ms"`
	Output     json.RawMessage `json:"output"`
}

// ModelRef names the model version that made a result.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Timings in milliseconds. Queue: waiting for the pipeline; transfer: the
// plugin round trip less the plugin's own work; total: from the frame
// entering the pipeline to the result.
type Timings struct {
	Queue       float64 `json:"queue"`
	Transfer    float64 `json:"transfer"`
	Preprocess  float64 `json:"preprocess"`
	Inference   float64 `json:"inference"`
	Postprocess float64 `json:"postprocess"`
	Total       float64 `json:"total"`
}

// Event is published on <prefix>/events.
type Event struct {
	Schema   int       `json:"schema"`
	Time     time.Time `json:"time"`
	Device   string    `json:"device"`
	Type     string    `json:"type"`
	Pipeline string    `json:"pipeline,omitempty"`
	Sensor   string    `json:"sensor,omitempty"`
	Model    string    `json:"model,omitempty"`
	Source   string    `json:"source,omitempty"`
	Message  string    `json:"message"`
	// Attrs carries what is particular to the event type (pid, attempt).
	Attrs map[string]any `json:"attrs,omitempty"`
}

// Event types.
const (
	EventBadInput        = "bad_input"        // a file or payload that is not a usable image
	EventInferenceFailed = "inference_failed" // the model failed on a frame
	EventPluginFailed    = "plugin_failed"    // a plugin did not start or load; retried with backoff
	EventPluginRestarted = "plugin_restarted" // a plugin process died and was started again
	EventSensorFailed    = "sensor_failed"    // a sensor stopped with an error
	EventStarted         = "started"
	EventStopping        = "stopping"
)

// ModelState is published retained on <prefix>/models/<model>.
type ModelState struct {
	Schema      int                      `json:"schema"`
	Model       string                   `json:"model"`
	Version     string                   `json:"version"`
	State       string                   `json:"state"` // loading, serving, failed, stopped
	Task        string                   `json:"task,omitempty"`
	Description string                   `json:"description,omitempty"`
	Signature   string                   `json:"signature,omitempty"`
	InputShape  []int64                  `json:"input_shape,omitempty"`
	Labels      int                      `json:"labels,omitempty"` // how many labels the model knows
	Error       string                   `json:"error,omitempty"`
	LoadedAt    *time.Time               `json:"loaded_at,omitempty"`
	Pipelines   map[string]PipelineState `json:"pipelines"`
}

// PipelineState is one pipeline's plugin process serving the model.
type PipelineState struct {
	State    string  `json:"state"`
	PID      int     `json:"pid,omitempty"`
	WarmupMS float64 `json:"warmup_ms,omitempty"`
	Error    string  `json:"error,omitempty"`
	Restarts int     `json:"restarts"`
}

// Stats is published retained on <prefix>/stats every stats_interval.
type Stats struct {
	Schema    int                      `json:"schema"`
	Time      time.Time                `json:"time"`
	Uptime    float64                  `json:"uptime_s"`
	Pipelines map[string]PipelineStats `json:"pipelines"`
	Sensors   map[string]SensorStats   `json:"sensors"`
}

// PipelineStats counts since start.
type PipelineStats struct {
	Frames   uint64  `json:"frames"`   // taken from the sensor
	Results  uint64  `json:"results"`  // published
	Failed   uint64  `json:"failed"`   // bad frames and model failures
	Skipped  uint64  `json:"skipped"`  // live frames replaced by a newer one while busy
	Restarts uint64  `json:"restarts"` // plugin restarts
	Queued   int     `json:"queued"`   // waiting now
	P50MS    float64 `json:"total_p50_ms"`
	P99MS    float64 `json:"total_p99_ms"`
}

// SensorStats counts since start.
type SensorStats struct {
	Frames   uint64 `json:"frames"`
	BadInput uint64 `json:"bad_input"`
	Skipped  uint64 `json:"skipped"`
}
