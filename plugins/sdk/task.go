// Package sdk is the one protocol between edgeinferd and its task plugins:
// the handshake, the gRPC service (proto/task.proto), the adapters that hide
// gRPC on both sides (client.go for the daemon, server.go for a plugin) and
// the shared memory that carries frame pixels so they are not copied through
// the RPC. A task plugin implements Task and calls Serve from main; the
// daemon calls Start and gets a Task back.
//
// The daemon never links TensorFlow: this package does not import tfmodels.
package sdk

import (
	"context"
	"encoding/json"
	"time"
)

// Task is what every task plugin implements. Calls come one at a time.
type Task interface {
	// Load loads and warms up the model version in req.ModelDir. It is
	// called once, before any Infer.
	Load(ctx context.Context, req LoadRequest) (ModelInfo, error)
	// Infer runs one frame. f.RGB is only valid during the call. A frame the
	// task cannot use (too small, wrong shape) returns an error wrapping
	// ErrBadFrame; any other error is a failure of the model.
	Infer(ctx context.Context, f Frame) (Result, error)
}

// LoadRequest names the model version to load and the pipeline's options.
type LoadRequest struct {
	Model    string // model name (the folder under the repository)
	Version  string // version folder name
	ModelDir string // <repository>/<model>/<version>, absolute
	// Options is the pipeline's [pipelines.<name>.options] table as JSON
	// (top_k, thresholds, ...); the task validates it and names bad keys.
	Options json.RawMessage
	// Threads for TensorFlow's intra-op pool; 0 lets TensorFlow choose.
	Threads int
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

// Frame is one RGB frame. RGB has Width*Height*3 bytes.
type Frame struct {
	Seq    uint64
	Width  int
	Height int
	RGB    []byte
}

// Result is what a task made of one frame: its own JSON fields (documented
// in the plugin's README) and how long each step took.
type Result struct {
	Output  json.RawMessage
	Timings Timings
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
