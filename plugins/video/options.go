package main

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// Samplings: how a clip's N frames are taken from a stream's buffer.
const (
	samplingEven      = "even"       // N evenly from the newest window frames
	samplingPerSecond = "per_second" // N at fps per second by capture time
	samplingScene     = "scene"      // N evenly from the current scene
)

// Defaults and bounds of the options (README.md).
const (
	defaultBuffer         = 256
	maxBuffer             = 100_000
	defaultFPS            = 4
	defaultSceneThreshold = 0.003
	defaultFileFrames     = 4096
	maxFileFrames         = 1_000_000
)

// options are a pipeline's options (README.md).
type options struct {
	Sampling       string  `json:"sampling"`        // even | per_second | scene; default even
	Stride         int     `json:"stride"`          // a clip every stride frames of a stream; default N/2
	Window         int     `json:"window"`          // even: the newest frames the clip spreads over; default 3N
	FPS            float64 `json:"fps"`             // per_second: frames per second taken; default 4
	SceneThreshold float64 `json:"scene_threshold"` // scene: cosine distance between consecutive features that makes a cut; default 0.003
	Buffer         int     `json:"buffer"`          // feature vectors kept per stream; default 256
	TopK           int     `json:"top_k"`           // labels in top; default 5 (or the number of labels)
	WholeFile      bool    `json:"whole_file"`      // also classify all frames of the current source so far
	FileFrames     int     `json:"file_frames"`     // whole_file: feature vectors kept per source at most; default 4096
}

// parseOptions decodes one pipeline's options strictly, over the defaults,
// and checks them against the model (its clip length N and labels).
func parseOptions(raw json.RawMessage, man manifest.Manifest) (options, error) {
	n := man.Input.Frames
	var o options
	if err := tfplugin.DecodeOptions(raw, &o); err != nil {
		return o, err
	}
	if o.Sampling == "" {
		o.Sampling = samplingEven
	}
	only := func(name string, set bool, sampling string) error {
		if set && o.Sampling != sampling {
			return fmt.Errorf("%s is for sampling %q, sampling is %q", name, sampling, o.Sampling)
		}
		return nil
	}
	switch o.Sampling {
	case samplingEven, samplingPerSecond, samplingScene:
	default:
		return o, fmt.Errorf("sampling is %q, must be %s, %s or %s", o.Sampling, samplingEven, samplingPerSecond, samplingScene)
	}
	for _, err := range []error{
		only("window", o.Window != 0, samplingEven),
		only("fps", o.FPS != 0, samplingPerSecond),
		only("scene_threshold", o.SceneThreshold != 0, samplingScene),
	} {
		if err != nil {
			return o, err
		}
	}
	if o.FileFrames != 0 && !o.WholeFile {
		return o, fmt.Errorf("file_frames is for whole_file = true")
	}
	defaults := []struct {
		v   *int
		def int
	}{{&o.Stride, max(1, n/2)}, {&o.Buffer, defaultBuffer}, {&o.TopK, min(5, len(man.Labels))}, {&o.FileFrames, defaultFileFrames}}
	for _, d := range defaults {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if o.Window == 0 {
		o.Window = min(3*n, o.Buffer)
	}
	if o.FPS == 0 {
		o.FPS = defaultFPS
	}
	if o.SceneThreshold == 0 {
		o.SceneThreshold = defaultSceneThreshold
	}
	switch {
	case o.Stride < 1:
		return o, fmt.Errorf("stride is %d, must be >= 1 (a clip every stride frames)", o.Stride)
	case o.Buffer < n || o.Buffer > maxBuffer:
		return o, fmt.Errorf("buffer is %d, must be %d (input.frames) .. %d", o.Buffer, n, maxBuffer)
	case o.Window < 1 || o.Window > o.Buffer:
		return o, fmt.Errorf("window is %d, must be 1 .. buffer (%d)", o.Window, o.Buffer)
	case !(o.FPS > 0) || math.IsInf(o.FPS, 0):
		return o, fmt.Errorf("fps is %g, must be > 0", o.FPS)
	case !(o.SceneThreshold > 0 && o.SceneThreshold <= 2):
		return o, fmt.Errorf("scene_threshold is %g, must be in (0, 2] (a cosine distance)", o.SceneThreshold)
	case o.TopK < 1 || o.TopK > len(man.Labels):
		return o, fmt.Errorf("top_k is %d, must be 1..%d (the model's labels)", o.TopK, len(man.Labels))
	case o.FileFrames < n || o.FileFrames > maxFileFrames:
		return o, fmt.Errorf("file_frames is %d, must be %d (input.frames) .. %d", o.FileFrames, n, maxFileFrames)
	}
	return o, nil
}
