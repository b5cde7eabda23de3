package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin"
	"github.com/edgeinfer/edgeinfer/plugins/common/topk"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// classifier is the classify Task: one model version for every pipeline
// configured. tfplugin.Model does the loading, options, validation and
// input; this file is what is particular to classification.
type classifier struct {
	tfplugin.Model[options]
}

func newClassifier() *classifier { return &classifier{} }

// options are the pipeline's options for this task.
type options struct {
	TopK     int     `json:"top_k"`     // how many labels to return, 1..len(labels); default 5
	MinScore float64 `json:"min_score"` // drop labels scoring less, 0..1; default 0
}

// parseOptions decodes one pipeline's options strictly, over the defaults.
func parseOptions(raw json.RawMessage, labels int) (options, error) {
	o := options{TopK: min(5, labels)}
	if err := tfplugin.DecodeOptions(raw, &o); err != nil {
		return o, err
	}
	if o.TopK < 1 || o.TopK > labels {
		return o, fmt.Errorf("top_k is %d, must be 1..%d (the model's labels)", o.TopK, labels)
	}
	if !(o.MinScore >= 0 && o.MinScore <= 1) {
		return o, fmt.Errorf("min_score is %g, must be in [0, 1]", o.MinScore)
	}
	return o, nil
}

// spec is what tfplugin needs to know of classification.
var spec = tfplugin.Spec[options]{
	Task:  "classify",
	Tasks: []string{manifest.TaskClassify},
	Outputs: func(man manifest.Manifest) ([]string, error) {
		if man.Input.Resize != "stretch" {
			return nil, fmt.Errorf("input.resize %q is not supported for classify (stretch only)", man.Input.Resize)
		}
		return []string{man.Output.Logits}, nil
	},
	Check: func(man manifest.Manifest, in tfmodels.TensorInfo, outs []tfmodels.TensorInfo) error {
		return checkSignature(man, in, outs[0])
	},
	Options: func(raw json.RawMessage, man manifest.Manifest) (options, error) {
		return parseOptions(raw, len(man.Labels))
	},
}

// Load loads and warms up the classify model version in req.ModelDir.
func (c *classifier) Load(ctx context.Context, req sdk.LoadRequest) (sdk.ModelInfo, error) {
	return c.Model.Load(ctx, req, spec)
}

// checkSignature checks the signature's input is float32 [batch, height,
// width, channels] and its output float32 [batch, labels] as the manifest
// says; -1 (any) is accepted where the manifest gives a size, and required
// where it says any size (0).
func checkSignature(man manifest.Manifest, in, out tfmodels.TensorInfo) error {
	sizeOK := func(got int64, want int) bool { return got == -1 || (want > 0 && got == int64(want)) }
	if in.DType != tfmodels.Float32 || in.UnknownRank || len(in.Shape) != 4 ||
		!sizeOK(in.Shape[0], 1) || !sizeOK(in.Shape[1], man.Input.Height) || !sizeOK(in.Shape[2], man.Input.Width) ||
		in.Shape[3] != int64(man.Input.Channels) {
		return fmt.Errorf("input is %s, edgeinfer.toml says float32 [batch, %d, %d, %d] (input.height, width, channels; 0: any)",
			in, man.Input.Height, man.Input.Width, man.Input.Channels)
	}
	if out.DType != tfmodels.Float32 || out.UnknownRank || len(out.Shape) != 2 || !sizeOK(out.Shape[1], len(man.Labels)) {
		return fmt.Errorf("output is %s, edgeinfer.toml says float32 [batch, %d] (one score per label)", out, len(man.Labels))
	}
	return nil
}

// scores copies the model's output, one score per label.
func (c *classifier) scores(out *tfmodels.Tensor) ([]float64, error) {
	logits, err := tfmodels.Data[float32](out)
	if err != nil {
		return nil, err
	}
	if len(logits) != len(c.Man.Labels) {
		return nil, fmt.Errorf("model %s: output %q has %d values for %d labels", c.Dir, c.Man.Output.Logits, len(logits), len(c.Man.Labels))
	}
	scores := make([]float64, len(logits))
	for i, v := range logits {
		scores[i] = float64(v)
	}
	return scores, nil
}

// output is the task's JSON output (README.md).
type output struct {
	Top []topk.Entry `json:"top"`
}

// Infer classifies one frame with its pipeline's options.
func (c *classifier) Infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	return c.RunFrame(ctx, f, false, func(fr tfplugin.Frame[options], outs []*tfmodels.Tensor) (any, map[string][]byte, error) {
		scores, err := c.scores(outs[0])
		if err != nil {
			return nil, nil, err
		}
		return output{Top: topk.Top(scores, c.Man.Labels, c.Man.Output.Softmax, fr.Options.TopK, fr.Options.MinScore)}, nil, nil
	})
}
