// Package payload holds the JSON documents edgeinferd publishes over MQTT:
// results, events, model state, stats, and the command request and reply.
// It imports nothing of the daemon, so `edgeinferd watch`, the tests and
// other programs read the payloads without pulling in the daemon. The
// payloads are documented in docs/mqtt.md.
package payload

import (
	"encoding/json"
	"time"
)

// Schema is the version of every JSON payload edgeinferd publishes. It
// changes when a field changes meaning or goes away; new fields may be added
// without a change.
const Schema = 2

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
	// Origin says which detection of which upstream frame the frame was
	// cut from, for a pipeline fed by another ([pipelines.<name>] from);
	// absent for a sensor's frames.
	Origin *Origin `json:"origin,omitempty"`
}

// Origin is where a crop frame came from: one detection of a frame of the
// upstream pipeline. Sensor and Seq are that frame's (the crop's own
// result carries the same); Crop is the rectangle cut out of it, so a point
// (x, y) of the crop is (Crop.X1 + x, Crop.Y1 + y) in the upstream frame.
type Origin struct {
	Pipeline  string  `json:"pipeline"`
	Sensor    string  `json:"sensor"`
	Seq       uint64  `json:"seq"`
	Source    string  `json:"source"`
	Detection int     `json:"detection"` // index in the upstream result's output.detections
	Box       Box     `json:"box"`       // the detection's box, in the upstream frame's pixels
	Crop      Rect    `json:"crop"`      // what was cut: the box with the margin, clipped to the frame
	Label     string  `json:"label"`
	Class     int     `json:"class"`
	Score     float64 `json:"score"`
	TrackID   uint64  `json:"track_id,omitempty"`
	// Origin is the upstream frame's own origin when it was a crop too
	// (a chain of more than one step).
	Origin *Origin `json:"origin,omitempty"`
}

// Detection is one of output.detections in a detect task's result, as
// the daemon reads it (tracking, crops); the plugin's README has the rest.
type Detection struct {
	Label   string  `json:"label"`
	Class   int     `json:"class"`
	Score   float64 `json:"score"`
	Box     Box     `json:"box"`
	TrackID uint64  `json:"track_id,omitempty"`
}

// Box is x1, y1, x2, y2 in frame pixels (x2, y2 exclusive).
type Box struct {
	X1 float64 `json:"x1"`
	Y1 float64 `json:"y1"`
	X2 float64 `json:"x2"`
	Y2 float64 `json:"y2"`
}

// Rect is a rectangle of whole pixels: x1, y1 included, x2, y2 excluded.
type Rect struct {
	X1 int `json:"x1"`
	Y1 int `json:"y1"`
	X2 int `json:"x2"`
	Y2 int `json:"y2"`
}

// Dx is the rectangle's width.
func (r Rect) Dx() int { return r.X2 - r.X1 }

// Dy is the rectangle's height.
func (r Rect) Dy() int { return r.Y2 - r.Y1 }

// ModelRef names the model version that made a result, and the plugin
// process that ran it.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	PID     int    `json:"pid,omitempty"`
}

// Timings in milliseconds. Queue: waiting for the pipeline (and for a
// serving version); transfer: the plugin round trip less the plugin's own
// work; total: from the frame entering the pipeline to the result.
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
	Version  string    `json:"version,omitempty"`
	Source   string    `json:"source,omitempty"`
	Message  string    `json:"message"`
	// Attrs carries what is particular to the event type (pid, attempt).
	Attrs map[string]any `json:"attrs,omitempty"`
}

// Event types.
const (
	EventBadInput        = "bad_input"        // a file or payload that is not a usable image
	EventObjectEntered   = "object_entered"   // a tracked object was seen min_hits times (attrs: track_id, label, class, first_seen, last_seen, best_score, box)
	EventObjectLeft      = "object_left"      // a tracked object was not seen for max_age (the same attrs)
	EventAlertRaised     = "alert_raised"     // a result's alerts name a label they did not name in the pipeline's previous result (attrs: label, share, threshold)
	EventAlertCleared    = "alert_cleared"    // a result's alerts no longer name a label the previous result's did (attrs: label, share)
	EventInferenceFailed = "inference_failed" // the model failed on a frame
	EventPluginFailed    = "plugin_failed"    // a plugin process did not start, or keeps dying; retried with backoff
	EventPluginRestarted = "plugin_restarted" // a plugin process died or hung and was started again
	EventSensorFailed    = "sensor_failed"    // a sensor stopped with an error
	EventStarted         = "started"
	EventStopping        = "stopping"

	EventVersionLoading  = "version_loading"  // a version's process is starting, loading and validating
	EventVersionServing  = "version_serving"  // a version took over its model's pipelines
	EventVersionRejected = "version_rejected" // a version failed to load, warm up or validate; not retried until its files change
	EventVersionRetired  = "version_retired"  // a version's process stopped after its last frame
	EventPluginSwapped   = "plugin_swapped"   // a new plugin binary took over a model's pipelines
	EventPluginRejected  = "plugin_rejected"  // a new plugin binary would not start, load or validate; the old one keeps serving
	EventConfigReloaded  = "config_reloaded"
	EventConfigRejected  = "config_rejected"  // the new config is invalid or needs a restart; the old one keeps running
	EventOptionsRejected = "options_rejected" // the plugin refused a pipeline's options; its frames wait for a fixed config
	EventOutboxOverflow  = "outbox_overflow"  // the outbox was full: live results and events were dropped (attrs: dropped, dropped_bytes, topics, first_dropped, last_dropped, total_dropped)
)

// Version states, in the order a version goes through them.
const (
	StateLoading    = "loading"    // process started, model loading and warming up
	StateValidating = "validating" // reproducing the version's golden samples
	StateServing    = "serving"    // frames go to it
	StateDraining   = "draining"   // replaced: frames in flight finish on it
	StateRetired    = "retired"    // its process stopped
	StateFailed     = "failed"     // rejected (load, validation) or its process keeps dying
	StateRestarting = "restarting" // its process died; a new one is being started
)

// ModelState is published retained on <prefix>/models/<model>: every version
// the daemon knows of and what it is doing with it.
type ModelState struct {
	Schema int    `json:"schema"`
	Model  string `json:"model"`
	// Serving is the version frames go to now ("" while none can serve).
	Serving string `json:"serving"`
	// Target is the version the policy wants to serve (it differs from
	// Serving while a new version loads).
	Target string `json:"target,omitempty"`
	Policy Policy `json:"policy"`
	// Versions by version number.
	Versions map[string]VersionState `json:"versions"`
	// Reason says why no version (or no newer one) can be served.
	Reason string `json:"reason,omitempty"`
	// Pipelines using the model.
	Pipelines []string  `json:"pipelines"`
	Time      time.Time `json:"time"`
}

// Policy is the model's serving policy from [serving.<model>].
type Policy struct {
	Version string `json:"version"` // latest, or the pinned version
	Memory  string `json:"memory"`  // availability or resource
	Pinned  string `json:"pinned_by_command,omitempty"`
}

// VersionState is one version of a model (with one plugin binary).
type VersionState struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	PID    int    `json:"pid,omitempty"`
	// Plugin is the plugin binary's path and the first 12 hex digits of its
	// SHA-256.
	Plugin      string      `json:"plugin,omitempty"`
	Task        string      `json:"task,omitempty"`
	Description string      `json:"description,omitempty"`
	Signature   string      `json:"signature,omitempty"`
	InputShape  []int64     `json:"input_shape,omitempty"`
	Labels      int         `json:"labels,omitempty"`
	WarmupMS    float64     `json:"warmup_ms,omitempty"`
	LoadMS      float64     `json:"load_ms,omitempty"` // process start to the model loaded and warmed up (no validation)
	Validation  *Validation `json:"validation,omitempty"`
	Restarts    int         `json:"restarts"`
	Since       time.Time   `json:"since"` // when it entered State
	LoadedAt    *time.Time  `json:"loaded_at,omitempty"`
	Pipelines   []string    `json:"pipelines,omitempty"` // pipelines whose frames it runs
	// Refused holds the pipelines whose options the plugin refused, and why.
	Refused map[string]string `json:"refused,omitempty"`
}

// Validation is the outcome of reproducing a version's golden samples.
type Validation struct {
	Samples    int     `json:"samples"` // 0: the version carries none
	MaxAbsDiff float64 `json:"max_abs_diff"`
	Tolerance  float64 `json:"tolerance"`
}

// Stats is published retained on <prefix>/stats every stats_interval.
type Stats struct {
	Schema    int                      `json:"schema"`
	Time      time.Time                `json:"time"`
	Uptime    float64                  `json:"uptime_s"`
	Pipelines map[string]PipelineStats `json:"pipelines"`
	Sensors   map[string]SensorStats   `json:"sensors"`
	// Outbox is the outbox's depth, with one ([mqtt] outbox_dir).
	Outbox *OutboxStats `json:"outbox,omitempty"`
}

// OutboxStats is what waits in the outbox for the broker now, and what it
// dropped for want of room since the daemon started.
type OutboxStats struct {
	Records  int    `json:"records"`   // not yet acknowledged by the broker
	Bytes    int64  `json:"bytes"`     // theirs: what max_bytes bounds
	MaxBytes int64  `json:"max_bytes"` // [mqtt] outbox_max_bytes
	Dropped  uint64 `json:"dropped"`   // live results and events dropped when it was full
}

// PipelineStats counts since the pipeline started.
type PipelineStats struct {
	Frames   uint64  `json:"frames"`   // taken from the sensor
	Results  uint64  `json:"results"`  // published
	Failed   uint64  `json:"failed"`   // bad frames and model failures
	Skipped  uint64  `json:"skipped"`  // live frames replaced by a newer one while busy
	Restarts uint64  `json:"restarts"` // plugin processes restarted after dying or hanging
	Queued   int     `json:"queued"`   // waiting now (with pixels in memory or to be read again)
	P50MS    float64 `json:"total_p50_ms"`
	P99MS    float64 `json:"total_p99_ms"`
	// Crops counts, for a pipeline fed by another, the detections it was
	// given and those it left out; nil for a sensor's pipeline.
	Crops *CropStats `json:"crops,omitempty"`
}

// CropStats counts the upstream detections of a pipeline fed by another.
type CropStats struct {
	Made     uint64 `json:"made"`      // crops handed to the pipeline
	TooSmall uint64 `json:"too_small"` // chosen, but under min_size after the margin
	OverMax  uint64 `json:"over_max"`  // chosen, but beyond max_crops of their frame
	Bad      uint64 `json:"bad"`       // inverted boxes: a bad_input event each
}

// SensorStats counts since start.
type SensorStats struct {
	Frames   uint64 `json:"frames"`
	BadInput uint64 `json:"bad_input"`
	Skipped  uint64 `json:"skipped"`
}

// Command is a request on <prefix>/cmd (accepted when [commands] enabled).
type Command struct {
	// ID is echoed in the reply, to match it with the request.
	ID string `json:"id"`
	// Command: reload (the config), pin (model, version), unpin (model),
	// rollback (model: serve the highest version below the serving one and
	// hold it there until unpin).
	Command string `json:"command"`
	Model   string `json:"model,omitempty"`
	Version string `json:"version,omitempty"`
	// Pipeline, when set, sends the whole command to the task serving that
	// pipeline (e.g. the embed plugin's enrol, name_cluster, forget).
	Pipeline string `json:"pipeline,omitempty"`
}

// Commands.
const (
	CommandReload   = "reload"
	CommandPin      = "pin"
	CommandUnpin    = "unpin"
	CommandRollback = "rollback"
)

// Reply answers a Command on <prefix>/cmd/reply.
type Reply struct {
	Schema  int       `json:"schema"`
	Time    time.Time `json:"time"`
	ID      string    `json:"id"`
	Command string    `json:"command"`
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	// Message says what was done ("lenet5 pinned to version 1").
	Message string `json:"message,omitempty"`
}
