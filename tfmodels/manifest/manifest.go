// Package manifest reads edgeinfer.toml, the file beside every exported model
// version that says how to serve it: the task, the signature, the labels, how
// a frame becomes the input tensor and which outputs mean what. The schema is
// documented in tfmodels/zoo/README.md.
//
// It is pure Go and does not import tfmodels, so the daemon, which never
// links TensorFlow, reads the same manifests as the task plugins.
package manifest

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// File is the manifest's name inside a model version directory.
const File = "edgeinfer.toml"

// Tasks; each is served by its own plugin.
const (
	TaskClassify   = "classify"
	TaskDetectYOLO = "detect_yolo"
	TaskDetectRCNN = "detect_rcnn"
	TaskSegment    = "segment"
	TaskEmbed      = "embed"
	TaskSiamese    = "siamese"
	TaskVideo      = "video"
	// TaskDetectRows is a detector whose boxes come decoded in one tensor
	// of rows [batch, N, K] (output.detections and its column map).
	TaskDetectRows = "detect_rows"
	// TaskDetectAnchorFree is an anchor-free head: [batch, 4+C, N] or
	// [batch, N, 4+C], a box and per-class scores per prediction.
	TaskDetectAnchorFree = "detect_anchorfree"
	// TaskRaw is an imported model no task plugin serves yet: tfmodels
	// loads and checks it, the daemon has no plugin for it.
	TaskRaw = "raw"
)

// Tasks lists every task in the order the README gives them.
var Tasks = []string{TaskClassify, TaskDetectYOLO, TaskDetectRCNN, TaskDetectRows, TaskDetectAnchorFree, TaskSegment, TaskEmbed, TaskSiamese, TaskVideo, TaskRaw}

// Manifest is the content of edgeinfer.toml.
type Manifest struct {
	Task         string     `toml:"task"`         // one of Tasks
	Architecture string     `toml:"architecture"` // free text
	Variant      string     `toml:"variant"`      // tiny | full
	Signature    string     `toml:"signature"`    // SavedModel signature key
	Labels       []string   `toml:"labels"`       // class names, index = class id
	Input        Input      `toml:"input"`
	Output       Output     `toml:"output"`
	Validation   Validation `toml:"validation"`
	Source       Source     `toml:"source"`
	Video        Video      `toml:"video"`
}

// Video names the two signatures that let a video model run its frame CNN
// once per frame and its clip head on cached features (task video only;
// optional in the file, required by the video plugin: a single frames ->
// logits signature would run the CNN on a frame again in every clip).
type Video struct {
	FeaturesSignature string `toml:"features_signature"` // one frame -> its feature vector
	FeaturesInput     string `toml:"features_input"`     // its input: float32 [batch, height, width, channels], prepared as [input] says
	FeaturesOutput    string `toml:"features_output"`    // its output: float32 [batch, D]
	ClipSignature     string `toml:"clip_signature"`     // N feature vectors -> logits
	ClipFeatures      string `toml:"clip_features"`      // its input: float32 [batch, input.frames, D]
	ClipLengths       string `toml:"clip_lengths"`       // its input: int32 [batch], valid frames per clip
	ClipLogits        string `toml:"clip_logits"`        // its output: float32 [batch, labels] (softmax as output.softmax says)
}

// Missing is the first field of the table (its full name, e.g.
// "video.clip_signature") that is not set, or "" when all are.
func (v Video) Missing() string {
	for _, f := range []struct{ name, value string }{
		{"features_signature", v.FeaturesSignature}, {"features_input", v.FeaturesInput}, {"features_output", v.FeaturesOutput},
		{"clip_signature", v.ClipSignature}, {"clip_features", v.ClipFeatures}, {"clip_lengths", v.ClipLengths},
		{"clip_logits", v.ClipLogits},
	} {
		if f.value == "" {
			return "video." + f.name
		}
	}
	return ""
}

func (v Video) validate(task string) []error {
	if v == (Video{}) {
		return nil
	}
	var errs []error
	if task != TaskVideo {
		errs = append(errs, fmt.Errorf("[video] is for task video, task is %q", task))
	}
	if f := v.Missing(); f != "" {
		errs = append(errs, fmt.Errorf("%s is required when [video] is given (it names the features and clip signatures and all their keys)", f))
	}
	return errs
}

// Validation says how closely the version must reproduce its golden
// samples. An imported model's samples are its original runtime's outputs
// (TF.js, Keras), which TensorFlow reproduces only to within rounding.
type Validation struct {
	// Tolerance is the largest absolute difference accepted; 0: the
	// caller's. Where both are given the larger holds.
	Tolerance float64 `toml:"tolerance"`
}

// Source records where an imported version came from (edgeinfer-import).
type Source struct {
	Format  string `toml:"format"`  // savedmodel | keras | graphdef | tfjs
	File    string `toml:"file"`    // the file or folder imported
	Runtime string `toml:"runtime"` // the runtime the golden outputs came from
}

// Input says how a frame becomes the model's input tensor.
type Input struct {
	Key      string    `toml:"key"`      // signature input key of the image (or frames) tensor
	Height   int       `toml:"height"`   // model input size; 0 when any size is accepted
	Width    int       `toml:"width"`    //
	Channels int       `toml:"channels"` // 1 gray, 3 RGB
	Layout   string    `toml:"layout"`   // NHWC
	DType    string    `toml:"dtype"`    // float32
	Resize   string    `toml:"resize"`   // stretch | letterbox
	Scale    float64   `toml:"scale"`    // model value = (pixel * scale - mean[c]) / std[c]
	Mean     []float64 `toml:"mean"`     // one per channel
	Std      []float64 `toml:"std"`      // one per channel
	Batch    int       `toml:"batch"`    // fixed batch size of the input; 0: any

	PairKey    string `toml:"pair_key"`    // siamese: the second image of the pair
	Frames     int    `toml:"frames"`      // video: clip length N
	LengthsKey string `toml:"lengths_key"` // video: number of valid frames per clip
}

// Output names the signature outputs, per task.
type Output struct {
	// classify, segment, video
	Logits  string `toml:"logits"`
	Softmax bool   `toml:"softmax"` // true: logits still need a softmax

	// embed, siamese
	Embedding     string `toml:"embedding"`
	PairEmbedding string `toml:"pair_embedding"` // siamese
	Distance      string `toml:"distance"`       // siamese
	Dim           int    `toml:"dim"`

	// detect_yolo
	Grids       []string  `toml:"grids"`        // raw grid per stride
	Strides     []int     `toml:"strides"`      //
	Anchors     []float64 `toml:"anchors"`      // flat w0, h0, w1, h1, ... in input pixels
	AnchorMasks []int     `toml:"anchor_masks"` // grid i uses anchors AnchorMasks[3i .. 3i+2]

	// detect_rcnn
	Boxes         string `toml:"boxes"`
	Scores        string `toml:"scores"`
	Classes       string `toml:"classes"`
	NumDetections string `toml:"num_detections"`
	Masks         string `toml:"masks"`        // mask_rcnn only
	LabelOffset   int    `toml:"label_offset"` // label = labels[class - label_offset]; detect_rows too

	// detect_rows: one tensor of rows, columns mapped here
	Detections  string `toml:"detections"`
	BoxColumn   int    `toml:"box_column"`   // first of the 4 box columns
	BoxFormat   string `toml:"box_format"`   // xyxy | yxyx | cxcywh; detect_anchorfree too (cxcywh)
	BoxUnits    string `toml:"box_units"`    // pixels (of the input) | normalized; detect_anchorfree too
	ScoreColumn int    `toml:"score_column"` //
	ClassColumn int    `toml:"class_column"` //
	NMS         bool   `toml:"nms"`          // the rows still need non-maximum suppression

	// detect_anchorfree
	Predictions string `toml:"predictions"`
	Layout      string `toml:"layout"` // channels_first [batch, 4+C, N] | channels_last [batch, N, 4+C]
}

// Read decodes <dir>/edgeinfer.toml. A key the schema does not know is an
// error, so a typo is not silently ignored. Read does not Validate.
func Read(dir string) (Manifest, error) {
	var m Manifest
	path := filepath.Join(dir, File)
	md, err := toml.DecodeFile(path, &m)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		what := "key"
		if len(keys) > 1 {
			what = "keys"
		}
		return Manifest{}, fmt.Errorf("%s: unknown %s %s", path, what, strings.Join(keys, ", "))
	}
	return m, nil
}

// Validate checks the manifest against the schema and returns every problem
// found, each naming its field, joined into one error.
func (m Manifest) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	known := false
	for _, t := range Tasks {
		known = known || m.Task == t
	}
	if !known {
		bad("task %q is not one of %s", m.Task, strings.Join(Tasks, ", "))
	}
	if m.Variant != "" && m.Variant != "tiny" && m.Variant != "full" {
		bad("variant %q is not tiny or full", m.Variant)
	}
	if m.Signature == "" {
		bad("signature is required")
	}
	switch m.Task {
	case TaskClassify, TaskDetectYOLO, TaskDetectRCNN, TaskDetectRows, TaskDetectAnchorFree, TaskSegment, TaskVideo:
		if len(m.Labels) == 0 {
			bad("labels are required for task %q", m.Task)
		}
	}
	for i, l := range m.Labels {
		if l == "" {
			bad("labels[%d] is empty", i)
		}
	}
	if !(m.Validation.Tolerance >= 0) || math.IsInf(m.Validation.Tolerance, 0) {
		bad("validation.tolerance must be >= 0, got %g", m.Validation.Tolerance)
	}
	errs = append(errs, m.Input.validate(m.Task)...)
	errs = append(errs, m.Output.validate(m.Task)...)
	errs = append(errs, m.Video.validate(m.Task)...)
	return errors.Join(errs...)
}

func (in Input) validate(task string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if in.Key == "" {
		bad("input.key is required")
	}
	if in.Batch < 0 {
		bad("input.batch must be >= 0 (0: any), got %d", in.Batch)
	}
	if in.Height < 0 {
		bad("input.height must be >= 0 (0: any size), got %d", in.Height)
	}
	if in.Width < 0 {
		bad("input.width must be >= 0 (0: any size), got %d", in.Width)
	}
	if (in.Height == 0) != (in.Width == 0) {
		bad("input.height is %d and input.width %d: either both are 0 (any size) or both > 0", in.Height, in.Width)
	}
	if in.Channels != 1 && in.Channels != 3 {
		bad("input.channels must be 1 or 3, got %d", in.Channels)
	}
	if in.Layout != "NHWC" {
		bad("input.layout %q is not NHWC", in.Layout)
	}
	if in.DType != "float32" {
		bad("input.dtype %q is not float32", in.DType)
	}
	switch in.Resize {
	case "stretch":
	case "letterbox":
		if in.Height == 0 {
			bad(`input.resize "letterbox" needs input.height and input.width > 0`)
		}
	default:
		bad("input.resize %q is not stretch or letterbox", in.Resize)
	}
	if !(in.Scale > 0) || math.IsInf(in.Scale, 0) {
		bad("input.scale must be > 0, got %g", in.Scale)
	}
	if len(in.Mean) != in.Channels {
		bad("input.mean has %d values, input.channels is %d", len(in.Mean), in.Channels)
	}
	if len(in.Std) != in.Channels {
		bad("input.std has %d values, input.channels is %d", len(in.Std), in.Channels)
	}
	for i, s := range in.Std {
		if !(s > 0) || math.IsInf(s, 0) {
			bad("input.std[%d] must be > 0, got %g", i, s)
		}
	}
	for i, v := range in.Mean {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad("input.mean[%d] must be finite, got %g", i, v)
		}
	}
	if task == TaskSiamese && in.PairKey == "" {
		bad("input.pair_key is required for task siamese")
	}
	if task == TaskVideo {
		if in.Frames <= 0 {
			bad("input.frames must be > 0 for task video, got %d", in.Frames)
		}
		if in.LengthsKey == "" {
			bad("input.lengths_key is required for task video")
		}
	}
	return errs
}

func (out Output) validate(task string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	need := func(field, value string) {
		if value == "" {
			bad("output.%s is required for task %s", field, task)
		}
	}
	needDim := func() {
		if out.Dim <= 0 {
			bad("output.dim must be > 0 for task %s, got %d", task, out.Dim)
		}
	}

	switch task {
	case TaskClassify, TaskSegment, TaskVideo:
		need("logits", out.Logits)
	case TaskEmbed:
		need("embedding", out.Embedding)
		needDim()
	case TaskSiamese:
		need("distance", out.Distance)
		need("embedding", out.Embedding)
		need("pair_embedding", out.PairEmbedding)
		needDim()
	case TaskDetectRCNN:
		need("boxes", out.Boxes)
		need("scores", out.Scores)
		need("classes", out.Classes)
		need("num_detections", out.NumDetections)
		if out.LabelOffset < 0 {
			bad("output.label_offset must be >= 0, got %d", out.LabelOffset)
		}
	case TaskDetectYOLO:
		errs = append(errs, out.validateYOLO()...)
	case TaskDetectRows:
		need("detections", out.Detections)
		if out.BoxFormat != "xyxy" && out.BoxFormat != "yxyx" && out.BoxFormat != "cxcywh" {
			bad("output.box_format %q is not xyxy, yxyx or cxcywh", out.BoxFormat)
		}
		cols := map[int]string{}
		for _, c := range []struct {
			name string
			at   []int
		}{{"box_column", []int{out.BoxColumn, out.BoxColumn + 1, out.BoxColumn + 2, out.BoxColumn + 3}}, {"score_column", []int{out.ScoreColumn}}, {"class_column", []int{out.ClassColumn}}} {
			for _, i := range c.at {
				if i < 0 {
					bad("output.%s must be >= 0, got %d", c.name, i)
				} else if other, ok := cols[i]; ok {
					bad("output.%s and output.%s share column %d", other, c.name, i)
				}
				cols[i] = c.name
			}
		}
		if out.LabelOffset < 0 {
			bad("output.label_offset must be >= 0, got %d", out.LabelOffset)
		}
	case TaskDetectAnchorFree:
		need("predictions", out.Predictions)
		if out.Layout != "channels_first" && out.Layout != "channels_last" {
			bad("output.layout %q is not channels_first ([batch, 4+classes, N]) or channels_last ([batch, N, 4+classes])", out.Layout)
		}
		if out.BoxFormat != "" && out.BoxFormat != "cxcywh" {
			bad("output.box_format %q: anchor-free predictions are cxcywh", out.BoxFormat)
		}
	}
	switch task {
	case TaskDetectRows, TaskDetectAnchorFree:
		if out.BoxUnits != "pixels" && out.BoxUnits != "normalized" {
			bad("output.box_units %q is not pixels or normalized", out.BoxUnits)
		}
	}
	return errs
}

func (out Output) validateYOLO() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(out.Grids) == 0 {
		bad("output.grids is required for task detect_yolo")
	}
	if len(out.Strides) != len(out.Grids) {
		bad("output.strides has %d values, output.grids %d", len(out.Strides), len(out.Grids))
	}
	for i, s := range out.Strides {
		if s <= 0 {
			bad("output.strides[%d] must be > 0, got %d", i, s)
		}
	}
	if len(out.Anchors) == 0 || len(out.Anchors)%2 != 0 {
		bad("output.anchors must hold (w, h) pairs, got %d values", len(out.Anchors))
	}
	for i, a := range out.Anchors {
		if !(a > 0) || math.IsInf(a, 0) {
			bad("output.anchors[%d] must be > 0, got %g", i, a)
		}
	}
	if len(out.Grids) > 0 && (len(out.AnchorMasks) == 0 || len(out.AnchorMasks)%len(out.Grids) != 0) {
		bad("output.anchor_masks has %d values, not the same number for each of the %d grids", len(out.AnchorMasks), len(out.Grids))
	}
	for i, a := range out.AnchorMasks {
		if a < 0 || a >= len(out.Anchors)/2 {
			bad("output.anchor_masks[%d] is %d, output.anchors holds %d anchors", i, a, len(out.Anchors)/2)
		}
	}
	return errs
}

// Plugin is the plugin that serves task: the daemon starts the binary
// edgeinfer-<Plugin(task)>. The detection tasks share one plugin.
func Plugin(task string) string {
	switch task {
	case TaskDetectYOLO, TaskDetectRCNN, TaskDetectRows, TaskDetectAnchorFree:
		return "detect"
	}
	return task
}
