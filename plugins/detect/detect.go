package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// tasks are the manifest tasks this plugin serves, one decoder each.
var tasks = []string{manifest.TaskDetectYOLO, manifest.TaskDetectRCNN, manifest.TaskDetectRows, manifest.TaskDetectAnchorFree}

// options are a pipeline's options (README.md).
type options struct {
	ScoreThreshold float64  `json:"score_threshold"` // 0..1; default 0.25
	NMSThreshold   float64  `json:"nms_threshold"`   // IoU above which the lower box goes; default 0.45
	MaxDetections  int      `json:"max_detections"`  // default 100
	ClassAgnostic  bool     `json:"class_agnostic"`  // suppress across classes
	Classes        []string `json:"classes"`         // publish only these labels; default all
	MinArea        float64  `json:"min_area"`        // source pixels; default 0
	Resize         string   `json:"resize"`          // letterbox | stretch; default the manifest's input.resize
	Masks          *bool    `json:"masks"`           // publish masks (models that have them); default true
	MaskThreshold  float64  `json:"mask_threshold"`  // default 0.5
	MaskPNG        bool     `json:"mask_png"`        // also publish the masks as a PNG on <prefix>/<pipeline>/mask

	classSet map[int]bool // Classes as indices; nil: all
}

func parseOptions(raw json.RawMessage, man manifest.Manifest) (options, error) {
	o := options{ScoreThreshold: 0.25, NMSThreshold: 0.45, MaxDetections: 100, Resize: man.Input.Resize, MaskThreshold: 0.5}
	if err := tfplugin.DecodeOptions(raw, &o); err != nil {
		return o, err
	}
	switch {
	case !(o.ScoreThreshold >= 0 && o.ScoreThreshold <= 1):
		return o, fmt.Errorf("score_threshold is %g, must be in [0, 1]", o.ScoreThreshold)
	case !(o.NMSThreshold >= 0 && o.NMSThreshold <= 1):
		return o, fmt.Errorf("nms_threshold is %g, must be in [0, 1] (0: any overlap suppresses)", o.NMSThreshold)
	case o.MaxDetections < 1:
		return o, fmt.Errorf("max_detections is %d, must be >= 1", o.MaxDetections)
	case !(o.MinArea >= 0) || math.IsInf(o.MinArea, 0):
		return o, fmt.Errorf("min_area is %g, must be >= 0", o.MinArea)
	case o.Resize != "letterbox" && o.Resize != "stretch":
		return o, fmt.Errorf("resize is %q, must be letterbox or stretch", o.Resize)
	case o.Resize == "letterbox" && man.Input.Height == 0:
		return o, fmt.Errorf("resize letterbox needs a model with a fixed input size")
	case !(o.MaskThreshold > 0 && o.MaskThreshold < 1):
		return o, fmt.Errorf("mask_threshold is %g, must be in (0, 1)", o.MaskThreshold)
	case o.Masks != nil && *o.Masks && man.Output.Masks == "":
		return o, fmt.Errorf("masks: the model has no masks (output.masks in edgeinfer.toml)")
	case o.MaskPNG && man.Output.Masks == "":
		return o, fmt.Errorf("mask_png: the model has no masks (output.masks in edgeinfer.toml)")
	case o.MaskPNG && o.Masks != nil && !*o.Masks:
		return o, fmt.Errorf("mask_png needs masks = true")
	}
	if o.Classes != nil {
		o.classSet = map[int]bool{}
		for _, c := range o.Classes {
			i := slices.Index(man.Labels, c)
			if i < 0 {
				return o, fmt.Errorf("classes: %q is not one of the model's labels", c)
			}
			o.classSet[i] = true
		}
	}
	return o, nil
}

// detector is the detect Task: one model version for every pipeline.
type detector struct {
	tfplugin.Model[options]
	dec decoder
}

func newDetector() *detector { return &detector{} }

func (d *detector) spec() tfplugin.Spec[options] {
	return tfplugin.Spec[options]{
		Task:  "detect",
		Tasks: tasks,
		Outputs: func(man manifest.Manifest) ([]string, error) {
			if man.Input.Height == 0 {
				return nil, fmt.Errorf("input.height and input.width are 0: detect needs a fixed input size")
			}
			var err error
			d.dec, err = newDecoder(man, man.Input.Width, man.Input.Height)
			if err != nil {
				return nil, err
			}
			return d.dec.outputs(), nil
		},
		Check: func(man manifest.Manifest, in tfmodels.TensorInfo, outs []tfmodels.TensorInfo) error {
			if in.DType != tfmodels.Float32 || len(in.Shape) != 4 || in.Shape[3] != int64(man.Input.Channels) {
				return fmt.Errorf("input is %s, edgeinfer.toml says float32 [batch, %d, %d, %d]", in, man.Input.Height, man.Input.Width, man.Input.Channels)
			}
			shapes := make([][]int64, len(outs))
			for i, o := range outs {
				if o.DType != tfmodels.Float32 || o.UnknownRank {
					return fmt.Errorf("output %q is %s, want float32 of known rank", o.Key, o)
				}
				shapes[i] = o.Shape
			}
			return d.dec.check(shapes)
		},
		Options: parseOptions,
	}
}

// Load loads and warms up the detection model version in req.ModelDir.
func (d *detector) Load(ctx context.Context, req sdk.LoadRequest) (sdk.ModelInfo, error) {
	return d.Model.Load(ctx, req, d.spec())
}

// Box is a box in source-frame pixels.
type Box struct {
	X1 float64 `json:"x1"`
	Y1 float64 `json:"y1"`
	X2 float64 `json:"x2"`
	Y2 float64 `json:"y2"`
}

// Detection is one object of the result.
type Detection struct {
	Label string     `json:"label"`
	Class int        `json:"class"`
	Score float32    `json:"score"`
	Box   Box        `json:"box"`
	Mask  *masks.RLE `json:"mask,omitempty"` // COCO RLE over the whole frame
	Area  int        `json:"mask_area,omitempty"`
}

// output is the task's JSON output (README.md).
type output struct {
	Detections []Detection `json:"detections"`
	Candidates int         `json:"candidates"` // over the score threshold, before filters and suppression
}

// Infer detects the objects of one frame with its pipeline's options.
func (d *detector) Infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	opts, ok := d.Pipelines()[f.Pipeline]
	letterbox := ok && opts.Resize == "letterbox"
	return d.RunFrame(ctx, f, letterbox, func(fr tfplugin.Frame[options], outs []*tfmodels.Tensor) (any, map[string][]byte, error) {
		return d.decodeFrame(f, fr, outs)
	})
}

// decodeFrame decodes, filters and suppresses one frame's candidates and
// pastes their masks.
func (d *detector) decodeFrame(f sdk.Frame, fr tfplugin.Frame[options], outs []*tfmodels.Tensor) (any, map[string][]byte, error) {
	raw := make([]tensor, len(outs))
	for i, t := range outs {
		v, err := tfmodels.Data[float32](t)
		if err != nil {
			return nil, nil, err
		}
		raw[i] = tensor{data: v, shape: t.Shape()}
	}
	cands, err := d.dec.decode(raw, fr.Options)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s: %w", d.Dir, err)
	}
	kept := postprocess(cands, fr.Transform, f.Width, f.Height, fr.Options, d.dec.nms())
	res := output{Detections: make([]Detection, 0, len(kept)), Candidates: len(cands)}
	withMasks := d.Man.Output.Masks != "" && (fr.Options.Masks == nil || *fr.Options.Masks)
	var index []uint8 // mask_png: detection i + 1 where its mask is on (the best on top)
	if fr.Options.MaskPNG {
		index = make([]uint8, f.Width*f.Height)
	}
	for _, k := range kept {
		det := Detection{
			Label: d.Man.Labels[k.Class], Class: k.Class, Score: float32(k.Score),
			Box: Box{X1: k.Box.X1, Y1: k.Box.Y1, X2: k.Box.X2, Y2: k.Box.Y2},
		}
		if withMasks && k.mask >= 0 {
			m := raw[len(raw)-1]
			mh, mw := int(m.shape[2]), int(m.shape[3])
			px, n := masks.Paste(m.data[k.mask*mh*mw:(k.mask+1)*mh*mw], mw, mh, k.unclipped, f.Width, f.Height, fr.Options.MaskThreshold)
			rle := masks.Encode(px, f.Width, f.Height)
			det.Mask, det.Area = &rle, n
			if i := len(res.Detections); index != nil && i < 255 {
				for p, on := range px {
					if on && index[p] == 0 {
						index[p] = uint8(i + 1)
					}
				}
			}
		}
		res.Detections = append(res.Detections, det)
	}
	if index == nil {
		return res, nil, nil
	}
	images, err := masks.MaskImage(index, f.Width, f.Height)
	return res, images, err
}
