package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgeinfer/edgeinfer/plugins/common/imageprep"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/golden"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// warmupSize is the side of the zero image the warm-up runs when the model
// takes any input size (input.height = input.width = 0).
const warmupSize = 64

// classifier is the classify Task: one model version for every pipeline
// configured. Calls come one at a time (sdk.Task), so the input tensor and
// scratch buffer are reused without locking.
type classifier struct {
	dir       string
	man       manifest.Manifest
	tolerance float64            // for Validate; 0: golden.Tolerance
	pipelines map[string]options // set by Configure
	model     *tfmodels.Model
	runner    *tfmodels.Runner

	input         *tfmodels.Tensor // [1, height, width, channels], reused across frames
	height, width int              // the input tensor's size
	rgb           []float32        // scratch: the frame's RGB values at height x width
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
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			return o, fmt.Errorf("options: %w", err)
		}
	}
	if o.TopK < 1 || o.TopK > labels {
		return o, fmt.Errorf("top_k is %d, must be 1..%d (the model's labels)", o.TopK, labels)
	}
	if !(o.MinScore >= 0 && o.MinScore <= 1) {
		return o, fmt.Errorf("min_score is %g, must be in [0, 1]", o.MinScore)
	}
	return o, nil
}

// Configure replaces the set of pipelines served: every pipeline's options
// are parsed first (in name order, so the error is always the same one), and
// the set changes only if all are good.
func (c *classifier) Configure(ctx context.Context, pipelines map[string]json.RawMessage) error {
	if c.model == nil {
		return errors.New("classify: Configure called before Load")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	next := make(map[string]options, len(pipelines))
	for _, name := range slices.Sorted(maps.Keys(pipelines)) {
		o, err := parseOptions(pipelines[name], len(c.man.Labels))
		if err != nil {
			return fmt.Errorf("pipeline %s: %w", name, err)
		}
		next[name] = o
	}
	c.pipelines = next
	return nil
}

// Validate runs the version's golden samples through the loaded model
// (tfmodels/golden.Verify: the signature in edgeinfer.toml, every output
// compared within the tolerance given at Load).
func (c *classifier) Validate(ctx context.Context) (sdk.Validation, error) {
	if c.model == nil {
		return sdk.Validation{}, errors.New("classify: Validate called before Load")
	}
	if err := ctx.Err(); err != nil {
		return sdk.Validation{}, err
	}
	rep, err := golden.Verify(c.dir, c.model, c.man, c.tolerance)
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		return sdk.Validation{}, fmt.Errorf("validate model %s: %w", c.dir, err)
	}
	return sdk.Validation{Samples: rep.Samples, MaxAbsDiff: rep.MaxAbsDiff(), Tolerance: rep.Tolerance}, nil
}

// Load reads and checks the manifest, loads the SavedModel, checks its
// signature against the manifest and warms it up.
func (c *classifier) Load(ctx context.Context, req sdk.LoadRequest) (sdk.ModelInfo, error) {
	if c.model != nil {
		return sdk.ModelInfo{}, fmt.Errorf("classify: model %s is already loaded", c.dir)
	}
	if err := ctx.Err(); err != nil {
		return sdk.ModelInfo{}, err
	}
	info, err := c.load(req)
	if err != nil {
		c.Close()
		return sdk.ModelInfo{}, err
	}
	return info, nil
}

func (c *classifier) load(req sdk.LoadRequest) (sdk.ModelInfo, error) {
	path := filepath.Join(req.ModelDir, manifest.File)
	man, err := manifest.Read(req.ModelDir)
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	if err := man.Validate(); err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	if man.Task != manifest.TaskClassify {
		return sdk.ModelInfo{}, fmt.Errorf("%s: task is %q, this plugin serves %q", path, man.Task, manifest.TaskClassify)
	}
	if man.Input.Resize != "stretch" {
		return sdk.ModelInfo{}, fmt.Errorf("%s: input.resize %q is not supported for classify (stretch only)", path, man.Input.Resize)
	}
	c.dir, c.man, c.tolerance = req.ModelDir, man, req.Tolerance

	if c.model, err = tfmodels.Load(req.ModelDir, tfmodels.Options{IntraOpThreads: req.Threads}); err != nil {
		return sdk.ModelInfo{}, err
	}
	if c.runner, err = c.model.Runner(man.Signature, []string{man.Input.Key}, []string{man.Output.Logits}); err != nil {
		return sdk.ModelInfo{}, err
	}
	in := c.runner.Inputs()[0]
	if err := checkSignature(man, in, c.runner.Outputs()[0]); err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("model %s: signature %q: %w", c.dir, man.Signature, err)
	}

	// One run on a zero image: a model that loads but fails at its first run
	// (e.g. variables not restored) fails here, not on the first frame.
	w, h := man.Input.Width, man.Input.Height
	if h == 0 {
		w, h = warmupSize, warmupSize
	}
	start := time.Now()
	if err := c.prepare(w, h); err != nil {
		return sdk.ModelInfo{}, err
	}
	if _, err := c.run(); err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("warm-up: %w", err)
	}
	return sdk.ModelInfo{
		Task:        man.Task,
		Signature:   man.Signature,
		InputShape:  in.Shape,
		Labels:      len(man.Labels),
		Warmup:      time.Since(start),
		Description: strings.TrimSpace(man.Architecture + " " + man.Variant),
	}, nil
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

// prepare makes the input tensor [1, h, w, channels]; it is allocated again
// only when the size changes (models that take any size).
func (c *classifier) prepare(w, h int) error {
	if c.input != nil && w == c.width && h == c.height {
		return nil
	}
	if c.input != nil {
		c.input.Close()
	}
	var err error
	c.input, err = tfmodels.NewTensor(tfmodels.Float32, 1, int64(h), int64(w), int64(c.man.Input.Channels))
	if err != nil {
		c.width, c.height = 0, 0
		return err
	}
	c.width, c.height = w, h
	return nil
}

// run runs the input tensor and returns a copy of the scores, one per label.
func (c *classifier) run() ([]float64, error) {
	outs, err := c.runner.Run(c.input)
	if err != nil {
		return nil, err
	}
	defer outs[0].Close()
	logits, err := tfmodels.Data[float32](outs[0])
	if err != nil {
		return nil, err
	}
	if len(logits) != len(c.man.Labels) {
		return nil, fmt.Errorf("model %s: output %q has %d values for %d labels", c.dir, c.man.Output.Logits, len(logits), len(c.man.Labels))
	}
	scores := make([]float64, len(logits))
	for i, v := range logits {
		scores[i] = float64(v)
	}
	return scores, nil
}

// entry is one label of the result.
type entry struct {
	Label string  `json:"label"`
	Index int     `json:"index"`
	Score float32 `json:"score"`
}

// output is the task's JSON output (README.md).
type output struct {
	Top []entry `json:"top"`
}

// Infer classifies one frame with its pipeline's options.
func (c *classifier) Infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	if c.runner == nil {
		return sdk.Result{}, errors.New("classify: Infer called before Load")
	}
	opts, ok := c.pipelines[f.Pipeline]
	if !ok {
		return sdk.Result{}, fmt.Errorf("classify: pipeline %q is not configured (configured: %s)",
			f.Pipeline, strings.Join(slices.Sorted(maps.Keys(c.pipelines)), ", "))
	}
	if err := ctx.Err(); err != nil {
		return sdk.Result{}, err
	}
	if f.Width <= 0 || f.Height <= 0 || len(f.RGB) != f.Width*f.Height*3 {
		return sdk.Result{}, fmt.Errorf("%w: %dx%d frame needs %d RGB bytes, got %d",
			sdk.ErrBadFrame, f.Width, f.Height, 3*f.Width*f.Height, len(f.RGB))
	}

	start := time.Now()
	w, h := c.man.Input.Width, c.man.Input.Height
	if h == 0 {
		w, h = f.Width, f.Height
	}
	if err := c.prepare(w, h); err != nil {
		return sdk.Result{}, err
	}
	x, err := tfmodels.Data[float32](c.input)
	if err != nil {
		return sdk.Result{}, err
	}
	c.rgb = imageprep.Resize(c.rgb, f.RGB, f.Width, f.Height, w, h)
	imageprep.Normalize(x, c.rgb, c.man.Input)
	preprocessed := time.Now()

	scores, err := c.run()
	if err != nil {
		return sdk.Result{}, err
	}
	inferred := time.Now()

	top := topK(scores, c.man.Labels, c.man.Output.Softmax, opts.TopK, opts.MinScore)
	out, err := json.Marshal(output{Top: top})
	if err != nil {
		return sdk.Result{}, err
	}
	return sdk.Result{Output: out, Timings: sdk.Timings{
		Preprocess:  preprocessed.Sub(start),
		Inference:   inferred.Sub(preprocessed),
		Postprocess: time.Since(inferred),
	}}, nil
}

// Close frees the input tensor and the model. sdk.Serve calls it when the
// plugin ends; it is safe to call more than once.
func (c *classifier) Close() error {
	if c.input != nil {
		c.input.Close()
	}
	var err error
	if c.model != nil {
		err = c.model.Close()
	}
	*c = classifier{}
	return err
}

// topK turns scores into the k best labels, sorted by score (ties by index),
// without those scoring below minScore. With softmax the scores are logits
// and become probabilities first.
func topK(scores []float64, labels []string, softmax bool, k int, minScore float64) []entry {
	if softmax {
		scores = softmaxOf(scores)
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		return cmp.Or(cmp.Compare(scores[b], scores[a]), cmp.Compare(a, b))
	})
	top := make([]entry, 0, k)
	for _, i := range idx[:min(k, len(idx))] {
		if scores[i] < minScore {
			break
		}
		top = append(top, entry{Label: labels[i], Index: i, Score: float32(scores[i])})
	}
	return top
}

// softmaxOf is the softmax of x, computed after subtracting the maximum so
// that large logits do not overflow.
func softmaxOf(x []float64) []float64 {
	hi := slices.Max(x)
	p := make([]float64, len(x))
	sum := 0.0
	for i, v := range x {
		p[i] = math.Exp(v - hi)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}
