package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/edgeinfer/edgeinfer/plugins/common/crf"
	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// maxLabels is the most classes a class map (uint16) holds.
const maxLabels = math.MaxUint16 + 1

// segmenter is the segment Task: one model version for every pipeline
// configured. tfplugin.Model does the loading, options, validation and
// input; post.go turns the raw output into the published classes.
type segmenter struct {
	tfplugin.Model[options]
	sc scratch // buffers reused across frames (calls come one at a time)
}

func newSegmenter() *segmenter { return &segmenter{} }

// options are a pipeline's options (README.md).
type options struct {
	Resize        string             `json:"resize"`         // nearest | bilinear: how the output reaches the frame size; default nearest
	Threshold     *float64           `json:"threshold"`      // single-channel models: foreground at p >= threshold, (0, 1); default 0.5
	IgnoreClasses []string           `json:"ignore_classes"` // labels not published
	MinArea       float64            `json:"min_area"`       // frame pixels: smaller connected components are not published; default 0
	Connectivity  int                `json:"connectivity"`   // 4 | 8: what makes pixels one component; default 8
	Alerts        map[string]float64 `json:"alerts"`         // label -> share in (0, 1] at or above which the result carries an alert
	Masks         *bool              `json:"masks"`          // publish each class's mask as COCO RLE; default true
	MaskPNG       bool               `json:"mask_png"`       // also publish the class map as a PNG on <prefix>/<pipeline>/mask
	CRF           *crf.Params        `json:"crf"`            // present: dense CRF refinement of the probabilities at the frame size (zero fields: crf.Params defaults)

	threshold float64   // Threshold or its default
	ignore    []bool    // by class
	alerts    []alertAt // Alerts by class
	masks     bool      // Masks or its default
}

// alertAt is one alert threshold of a pipeline.
type alertAt struct {
	class     int
	threshold float64
}

// parseOptions decodes one pipeline's options strictly, over the defaults,
// and checks them against the model's labels.
func parseOptions(raw json.RawMessage, man manifest.Manifest) (options, error) {
	o := options{Resize: "nearest", Connectivity: 8}
	if err := tfplugin.DecodeOptions(raw, &o); err != nil {
		return o, err
	}
	labels := man.Labels
	single := len(labels) == 1
	switch {
	case o.Resize != "nearest" && o.Resize != "bilinear":
		return o, fmt.Errorf("resize is %q, must be nearest or bilinear", o.Resize)
	case o.Threshold != nil && !single:
		return o, fmt.Errorf("threshold: the model has %d labels (one channel each); threshold is for single-channel models", len(labels))
	case o.Threshold != nil && !(*o.Threshold > 0 && *o.Threshold < 1):
		return o, fmt.Errorf("threshold is %g, must be in (0, 1)", *o.Threshold)
	case !(o.MinArea >= 0) || math.IsInf(o.MinArea, 0):
		return o, fmt.Errorf("min_area is %g, must be >= 0 (frame pixels)", o.MinArea)
	case o.Connectivity != 4 && o.Connectivity != 8:
		return o, fmt.Errorf("connectivity is %d, must be 4 or 8", o.Connectivity)
	case o.MaskPNG && len(labels) > 256:
		return o, fmt.Errorf("mask_png: the model has %d labels, a PNG pixel holds class 0..255", len(labels))
	}
	if o.CRF != nil {
		p := o.CRF.Defaults()
		if err := p.Validate(); err != nil {
			return o, err
		}
		o.CRF = &p
	}
	o.threshold = 0.5
	if o.Threshold != nil {
		o.threshold = *o.Threshold
	}
	o.masks = o.Masks == nil || *o.Masks
	o.ignore = make([]bool, len(labels))
	for _, l := range o.IgnoreClasses {
		i := slices.Index(labels, l)
		if i < 0 {
			return o, fmt.Errorf("ignore_classes: %q is not one of the model's labels", l)
		}
		o.ignore[i] = true
	}
	for _, l := range slices.Sorted(maps.Keys(o.Alerts)) {
		thr := o.Alerts[l]
		i := slices.Index(labels, l)
		switch {
		case i < 0:
			return o, fmt.Errorf("alerts: %q is not one of the model's labels", l)
		case o.ignore[i]:
			return o, fmt.Errorf("alerts: %q is in ignore_classes, so never published", l)
		case !(thr > 0 && thr <= 1):
			return o, fmt.Errorf("alerts: %s is %g, must be a share in (0, 1]", l, thr)
		}
		o.alerts = append(o.alerts, alertAt{class: i, threshold: thr})
	}
	slices.SortFunc(o.alerts, func(a, b alertAt) int { return cmp.Compare(a.class, b.class) })
	return o, nil
}

// spec is what tfplugin needs to know of segmentation.
var spec = tfplugin.Spec[options]{
	Task:  "segment",
	Tasks: []string{manifest.TaskSegment},
	Outputs: func(man manifest.Manifest) ([]string, error) {
		if man.Input.Resize != "stretch" {
			return nil, fmt.Errorf("input.resize %q is not supported for segment (stretch only)", man.Input.Resize)
		}
		if man.Input.Batch > 1 {
			return nil, fmt.Errorf("input.batch is %d: segment runs one frame at a time (batch 1, or 0: any)", man.Input.Batch)
		}
		if len(man.Labels) > maxLabels {
			return nil, fmt.Errorf("%d labels: segment serves at most %d", len(man.Labels), maxLabels)
		}
		return []string{man.Output.Logits}, nil
	},
	Check: func(man manifest.Manifest, in tfmodels.TensorInfo, outs []tfmodels.TensorInfo) error {
		return checkSignature(man, in, outs[0])
	},
	Options: parseOptions,
}

// Load loads and warms up the segmentation model version in req.ModelDir.
func (s *segmenter) Load(ctx context.Context, req sdk.LoadRequest) (sdk.ModelInfo, error) {
	return s.Model.Load(ctx, req, spec)
}

// checkSignature checks the signature's input is float32 [batch, height,
// width, channels] and its output float32 [batch, height, width, labels]
// (one channel per label; a model with one label has one channel, its
// foreground). The batch is 1 or any (-1); -1 is accepted where the
// manifest gives a size, and required where it says any size (0); the
// output's height and width may be anything (they are read per frame).
func checkSignature(man manifest.Manifest, in, out tfmodels.TensorInfo) error {
	sizeOK := func(got int64, want int) bool { return got == -1 || (want > 0 && got == int64(want)) }
	batchOK := func(got int64) bool { return got == -1 || got == 1 }
	if in.DType != tfmodels.Float32 || in.UnknownRank || len(in.Shape) != 4 || !batchOK(in.Shape[0]) ||
		!sizeOK(in.Shape[1], man.Input.Height) || !sizeOK(in.Shape[2], man.Input.Width) ||
		in.Shape[3] != int64(man.Input.Channels) {
		return fmt.Errorf("input is %s, edgeinfer.toml says float32 [batch, %d, %d, %d] (batch 1 or any; input.height, width, channels; 0: any)",
			in, man.Input.Height, man.Input.Width, man.Input.Channels)
	}
	n := len(man.Labels)
	what := "one channel per label"
	if n == 1 {
		what = "one label: one channel, its foreground"
	}
	if out.DType != tfmodels.Float32 || out.UnknownRank || len(out.Shape) != 4 || !batchOK(out.Shape[0]) ||
		out.Shape[1] == 0 || out.Shape[1] < -1 || out.Shape[2] == 0 || out.Shape[2] < -1 || out.Shape[3] != int64(n) {
		return fmt.Errorf("output is %s, want float32 [batch, height, width, %d] (batch 1 or any; %s)", out, n, what)
	}
	return nil
}

// rawOf checks the output tensor of one frame and views its values.
func (s *segmenter) rawOf(t *tfmodels.Tensor) (rawOutput, error) {
	shape := t.Shape()
	n := len(s.Man.Labels)
	if len(shape) != 4 || shape[0] != 1 || shape[1] < 1 || shape[2] < 1 || shape[3] != int64(n) {
		return rawOutput{}, fmt.Errorf("model %s: output %q is %v, want [1, height, width, %d]", s.Dir, s.Man.Output.Logits, shape, n)
	}
	v, err := tfmodels.Data[float32](t)
	if err != nil {
		return rawOutput{}, err
	}
	r := rawOutput{data: v, h: int(shape[1]), w: int(shape[2]), n: n}
	if len(v) != r.h*r.w*r.n {
		return rawOutput{}, fmt.Errorf("model %s: output %q has %d values for shape %v", s.Dir, s.Man.Output.Logits, len(v), shape)
	}
	return r, nil
}

// Infer segments one frame with its pipeline's options.
func (s *segmenter) Infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	return s.RunFrame(ctx, f, false, func(fr tfplugin.Frame[options], outs []*tfmodels.Tensor) (any, map[string][]byte, error) {
		raw, err := s.rawOf(outs[0])
		if err != nil {
			return nil, nil, err
		}
		var refine refineFunc
		if p := fr.Options.CRF; p != nil {
			refine = func(prob []float32, n int, rgb []byte, w, h int) ([]float32, error) {
				return crf.Refine(prob, n, rgb, w, h, *p)
			}
		}
		out, cls, err := post(raw, f.RGB, f.Width, f.Height, s.Man.Labels, s.Man.Output.Softmax, fr.Options, refine, &s.sc)
		if err != nil {
			return nil, nil, fmt.Errorf("model %s: %w", s.Dir, err)
		}
		if !fr.Options.MaskPNG {
			return out, nil, nil
		}
		index := make([]uint8, len(cls))
		for i, c := range cls {
			index[i] = uint8(c) // mask_png is refused for models of more than 256 labels
		}
		images, err := masks.MaskImage(index, f.Width, f.Height)
		return out, images, err
	})
}
