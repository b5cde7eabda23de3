// Package sdk is the one protocol between edgeinferd and its task plugins:
// the handshake, the gRPC service (proto/task.proto), the adapters that hide
// gRPC on both sides (client.go for the daemon, server.go for a plugin) and
// the shared memory that carries frame pixels so they are not copied through
// the RPC. A task plugin implements Task and calls Serve from main; the
// daemon calls Start and gets a Process back (a Task it can also time out,
// kill and renice). NewFake (testing.go) is an in-process Process for the
// daemon's tests.
//
// The daemon never links TensorFlow: this package does not import tfmodels.
package sdk

import (
	"context"
	"encoding/json"
	"time"
)

// Task is what every task plugin implements. One plugin process serves one
// model version for every pipeline that uses it. Calls come one at a time:
// Load first, then Configure, then any of Configure, Validate and Infer.
type Task interface {
	// Load loads and warms up the model version in req.ModelDir. It is
	// called once, before anything else.
	Load(ctx context.Context, req LoadRequest) (ModelInfo, error)
	// Configure sets the pipelines this process serves and each one's
	// options (the pipeline's [pipelines.<name>.options] table as JSON; may
	// be empty or null: the defaults). It replaces the whole set: every
	// pipeline's options are validated first and nothing changes if one is
	// bad; the error names the pipeline and the option ("pipeline digits:
	// top_k is 0, must be 1..10"). Called after Load and again whenever the
	// set changes.
	Configure(ctx context.Context, pipelines map[string]json.RawMessage) error
	// Validate runs the version's golden samples (golden/input_<key>.npy ->
	// golden/output_<key>.npy, the signature named in edgeinfer.toml)
	// through the loaded model and compares them within the tolerance. A
	// version without golden/ returns Validation{Samples: 0} and no error. A
	// mismatch returns an error naming the output, its max abs difference
	// and the tolerance.
	Validate(ctx context.Context) (Validation, error)
	// Infer runs one frame for pipeline f.Pipeline with that pipeline's
	// options; a pipeline Configure did not name is an error. f.RGB is only
	// valid during the call. A frame the task cannot use (too small, wrong
	// shape) returns an error wrapping ErrBadFrame; any other error is a
	// failure of the model.
	Infer(ctx context.Context, f Frame) (Result, error)
}

// Commander is what a task that takes commands implements besides Task:
// commands published on the daemon's command topic that name one of its
// pipelines (enrol an identity, name a cluster), as JSON. It returns what
// was done, for the reply; its error is the command's refusal. Calls come
// one at a time with the Task's.
type Commander interface {
	Command(ctx context.Context, pipeline string, command json.RawMessage) (string, error)
}

// LoadRequest names the model version to load.
type LoadRequest struct {
	Model    string // model name (the folder under the repository)
	Version  string // version folder name
	ModelDir string // <repository>/<model>/<version>, absolute
	// Threads for TensorFlow's intra-op pool; 0 lets TensorFlow choose.
	Threads int
	// Tolerance is the largest absolute difference from a golden output
	// that Validate accepts; 0 means golden.Tolerance (1e-4).
	Tolerance float64
}

// Validation is what Validate found.
type Validation struct {
	Samples    int     // golden samples run (the golden batch); 0: the version has none
	MaxAbsDiff float64 // the largest absolute difference over every output; +Inf if a shape differs
	Tolerance  float64 // the tolerance compared against
}

// ModelInfo describes the loaded model, for the retained models/<name> topic.
type ModelInfo struct {
	Task        string        // classify, detect_yolo, ...
	Signature   string        // the SavedModel signature served
	InputShape  []int64       // the model input's shape (-1 for any)
	Labels      int           // number of labels
	Warmup      time.Duration // how long the warm-up run took
	Description string        // architecture and variant, for humans
}

// Frame is one RGB frame for one pipeline. RGB has Width*Height*3 bytes.
type Frame struct {
	Pipeline string // whose options apply (a name given to Configure)
	Seq      uint64
	// Sensor, Source and Time say where and when the frame was taken, for
	// tasks that keep state per stream (video clips): the sensor's name,
	// what the frame came from (a file path, a topic, "<sensor>#<n>" for
	// a video's frames) and the capture time (zero when unknown).
	Sensor string
	Source string
	Time   time.Time
	Width  int
	Height int
	RGB    []byte
}

// Result is what a task made of one frame: its own JSON fields (documented
// in the plugin's README), how long each step took, and optionally images
// for dashboards.
type Result struct {
	Output  json.RawMessage
	Timings Timings
	// Images are published beside the result, each as it is (e.g. PNG
	// bytes) on <prefix>/<pipeline>/<name>, before the result. A name is
	// lower case letters, digits and "_", and not "result".
	Images map[string][]byte
}

// Timings of one Infer inside the plugin.
type Timings struct {
	Preprocess  time.Duration
	Inference   time.Duration
	Postprocess time.Duration
}

// Millis is d in milliseconds, rounded to the microsecond.
func Millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
