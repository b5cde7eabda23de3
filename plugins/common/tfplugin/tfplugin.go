// Package tfplugin is what every TensorFlow task plugin does around its own
// decoding, written once: read and check edgeinfer.toml, load the
// SavedModel with a runner for the task's outputs, warm it up, keep each
// pipeline's options (Configure replaces the set atomically), validate the
// golden samples, check a frame and turn it into the input tensor (stretch
// or letterbox, normalised as the manifest says), and close. A plugin keeps
// a Model and implements the rest of sdk.Task with it; see plugins/classify.
package tfplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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

// WarmupSize is the side of the zero image the warm-up runs when the model
// takes any input size (input.height = input.width = 0).
const WarmupSize = 64

// Spec is what a plugin tells Load about itself.
type Spec[O any] struct {
	Task string // the plugin's name in errors, e.g. "classify"
	// Tasks are the manifest tasks the plugin serves.
	Tasks []string
	// Signature picks the signature the frame's input tensor feeds and its
	// input key; nil: the manifest's signature and input.key. (The video
	// plugin runs its per-frame features signature.)
	Signature func(man manifest.Manifest) (signature, input string)
	// Outputs names the signature outputs to fetch, from the manifest; an
	// error (naming the field) refuses the model.
	Outputs func(man manifest.Manifest) ([]string, error)
	// Check checks the signature's input and outputs (in Outputs' order)
	// against the manifest; nil accepts any.
	Check func(man manifest.Manifest, in tfmodels.TensorInfo, outs []tfmodels.TensorInfo) error
	// Options parses one pipeline's options (DecodeOptions does the strict
	// JSON part) and checks them against the manifest.
	Options func(raw json.RawMessage, man manifest.Manifest) (O, error)
}

// Model is one loaded model version and the options of the pipelines it
// serves. Calls come one at a time (sdk.Task), so the input tensor and the
// scratch buffers are reused without locking.
type Model[O any] struct {
	Dir       string
	Man       manifest.Manifest
	Runner    *tfmodels.Runner
	spec      Spec[O]
	tolerance float64 // for Validate; 0: golden.Tolerance
	model     *tfmodels.Model
	pipelines map[string]O

	input *tfmodels.Tensor // [1, height, width, channels], reused across frames
	// pair is the zero image fed to a Siamese model's second input
	// (input.pair_key): its towers share their weights, so the first
	// tower's output depends on the frame alone. nil for other models.
	pair          *tfmodels.Tensor
	height, width int
	rgb, inner    []float32 // scratch: the frame's RGB values at the input size; letterbox scratch
}

// Load reads and checks the manifest, loads the SavedModel, checks its
// signature and runs it once on a zero image. On error nothing stays loaded.
func (m *Model[O]) Load(ctx context.Context, req sdk.LoadRequest, spec Spec[O]) (sdk.ModelInfo, error) {
	if m.model != nil {
		return sdk.ModelInfo{}, fmt.Errorf("%s: model %s is already loaded", spec.Task, m.Dir)
	}
	if err := ctx.Err(); err != nil {
		return sdk.ModelInfo{}, err
	}
	info, err := m.load(req, spec)
	if err != nil {
		m.Close()
		return sdk.ModelInfo{}, err
	}
	return info, nil
}

func (m *Model[O]) load(req sdk.LoadRequest, spec Spec[O]) (sdk.ModelInfo, error) {
	path := filepath.Join(req.ModelDir, manifest.File)
	man, err := manifest.Read(req.ModelDir)
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	if err := man.Validate(); err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	if !slices.Contains(spec.Tasks, man.Task) {
		return sdk.ModelInfo{}, fmt.Errorf("%s: task is %q, this plugin serves %s", path, man.Task, strings.Join(spec.Tasks, ", "))
	}
	outputs, err := spec.Outputs(man)
	if err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	m.Dir, m.Man, m.spec, m.tolerance = req.ModelDir, man, spec, req.Tolerance
	if m.model, err = tfmodels.Load(req.ModelDir, tfmodels.Options{IntraOpThreads: req.Threads}); err != nil {
		return sdk.ModelInfo{}, err
	}
	signature, inputs := man.Signature, []string{man.Input.Key}
	if spec.Signature != nil {
		var input string
		signature, input = spec.Signature(man)
		inputs = []string{input}
	} else if man.Input.PairKey != "" {
		inputs = append(inputs, man.Input.PairKey)
	}
	if m.Runner, err = m.model.Runner(signature, inputs, outputs); err != nil {
		return sdk.ModelInfo{}, err
	}
	in := m.Runner.Inputs()[0]
	if spec.Check != nil {
		if err := spec.Check(man, in, m.Runner.Outputs()); err != nil {
			return sdk.ModelInfo{}, fmt.Errorf("model %s: signature %q: %w", m.Dir, signature, err)
		}
	}
	// One run on a zero image: a model that loads but fails at its first run
	// (e.g. variables not restored) fails here, not on the first frame.
	w, h := man.Input.Width, man.Input.Height
	if h == 0 {
		w, h = WarmupSize, WarmupSize
	}
	start := time.Now()
	if err := m.prepare(w, h); err != nil {
		return sdk.ModelInfo{}, err
	}
	outs, err := m.Run()
	if err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("warm-up: %w", err)
	}
	Free(outs)
	labels := len(man.Labels)
	return sdk.ModelInfo{
		Task:        man.Task,
		Signature:   signature,
		InputShape:  in.Shape,
		Labels:      labels,
		Warmup:      time.Since(start),
		Description: strings.TrimSpace(man.Architecture + " " + man.Variant),
	}, nil
}

// DecodeOptions decodes a pipeline's options JSON into o (which holds the
// defaults) strictly: an unknown option is an error naming it.
func DecodeOptions(raw json.RawMessage, o any) error {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(o); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	return nil
}

// Configure replaces the set of pipelines served: every pipeline's options
// are parsed first (in name order, so the error is always the same one), and
// the set changes only if all are good.
func (m *Model[O]) Configure(ctx context.Context, pipelines map[string]json.RawMessage) error {
	if m.model == nil {
		return errors.New("Configure called before Load")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	next := make(map[string]O, len(pipelines))
	for _, name := range slices.Sorted(maps.Keys(pipelines)) {
		o, err := m.spec.Options(pipelines[name], m.Man)
		if err != nil {
			return fmt.Errorf("pipeline %s: %w", name, err)
		}
		next[name] = o
	}
	m.pipelines = next
	return nil
}

// Pipelines are the options of every pipeline served, by name.
func (m *Model[O]) Pipelines() map[string]O { return m.pipelines }

// Validate runs the version's golden samples through the loaded model
// (tfmodels/golden.Verify: the signature in edgeinfer.toml, every output
// compared within the tolerance given at Load).
func (m *Model[O]) Validate(ctx context.Context) (sdk.Validation, error) {
	if m.model == nil {
		return sdk.Validation{}, errors.New("Validate called before Load")
	}
	if err := ctx.Err(); err != nil {
		return sdk.Validation{}, err
	}
	rep, err := golden.Verify(m.Dir, m.model, m.Man, m.tolerance)
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		return sdk.Validation{}, fmt.Errorf("validate model %s: %w", m.Dir, err)
	}
	return sdk.Validation{Samples: rep.Samples, MaxAbsDiff: rep.MaxAbsDiff(), Tolerance: rep.Tolerance}, nil
}

// Frame is a frame ready to run: its pipeline's options and the map from
// model-input pixels back to the frame's.
type Frame[O any] struct {
	Options   O
	Transform imageprep.Transform
}

// Prepare checks f (its pipeline is configured, its pixels fit its size)
// and writes it into the input tensor: resized to the model's input
// (stretch, or letterbox when letterbox is true) and normalised.
func (m *Model[O]) Prepare(ctx context.Context, f sdk.Frame, letterbox bool) (Frame[O], error) {
	if m.Runner == nil {
		return Frame[O]{}, errors.New("Infer called before Load")
	}
	opts, ok := m.pipelines[f.Pipeline]
	if !ok {
		return Frame[O]{}, fmt.Errorf("%s: pipeline %q is not configured (configured: %s)",
			m.spec.Task, f.Pipeline, strings.Join(slices.Sorted(maps.Keys(m.pipelines)), ", "))
	}
	if err := ctx.Err(); err != nil {
		return Frame[O]{}, err
	}
	if f.Width <= 0 || f.Height <= 0 || len(f.RGB) != f.Width*f.Height*3 {
		return Frame[O]{}, fmt.Errorf("%w: %dx%d frame needs %d RGB bytes, got %d",
			sdk.ErrBadFrame, f.Width, f.Height, 3*f.Width*f.Height, len(f.RGB))
	}
	w, h := m.Man.Input.Width, m.Man.Input.Height
	if h == 0 {
		w, h = f.Width, f.Height
	}
	if err := m.prepare(w, h); err != nil {
		return Frame[O]{}, err
	}
	x, err := tfmodels.Data[float32](m.input)
	if err != nil {
		return Frame[O]{}, err
	}
	tr := imageprep.Stretch(f.Width, f.Height, w, h)
	if letterbox {
		m.rgb, m.inner, tr = imageprep.Letterbox(m.rgb, m.inner, f.RGB, f.Width, f.Height, w, h)
	} else {
		m.rgb = imageprep.Resize(m.rgb, f.RGB, f.Width, f.Height, w, h)
	}
	imageprep.Normalize(x, m.rgb, m.Man.Input)
	return Frame[O]{Options: opts, Transform: tr}, nil
}

// Input is the input tensor, [1, height, width, channels].
func (m *Model[O]) Input() *tfmodels.Tensor { return m.input }

// TF is the loaded SavedModel, for a task that runs more than one of its
// signatures (nil before Load and after Close).
func (m *Model[O]) TF() *tfmodels.Model { return m.model }

// prepare makes the input tensor [1, h, w, channels]; it is allocated again
// only when the size changes (models that take any size).
func (m *Model[O]) prepare(w, h int) error {
	if m.input != nil && w == m.width && h == m.height {
		return nil
	}
	for _, t := range []*tfmodels.Tensor{m.input, m.pair} {
		if t != nil {
			t.Close()
		}
	}
	m.input, m.pair = nil, nil
	m.width, m.height = 0, 0
	shape := []int64{1, int64(h), int64(w), int64(m.Man.Input.Channels)}
	var err error
	if m.input, err = tfmodels.NewTensor(tfmodels.Float32, shape...); err != nil {
		return err
	}
	if len(m.Runner.Inputs()) > 1 { // input.pair_key: a Siamese model
		if m.pair, err = tfmodels.NewTensor(tfmodels.Float32, shape...); err != nil { // zeros
			return err
		}
	}
	m.width, m.height = w, h
	return nil
}

// Run runs the input tensor (and a Siamese model's zero pair); the caller
// frees the outputs (Free).
func (m *Model[O]) Run() ([]*tfmodels.Tensor, error) {
	if m.pair != nil {
		return m.Runner.Run(m.input, m.pair)
	}
	return m.Runner.Run(m.input)
}

// Decoder turns the output tensors of one frame into the task's output
// (marshalled to JSON) and the images published beside it (nil: none). The
// tensors are freed after it returns: it must copy what it keeps.
type Decoder[O any] func(fr Frame[O], outs []*tfmodels.Tensor) (output any, images map[string][]byte, err error)

// RunFrame is the frame path every task shares: Prepare the input (letterbox
// or stretch), Run the model, decode its outputs, marshal the output and
// time the three steps.
func (m *Model[O]) RunFrame(ctx context.Context, f sdk.Frame, letterbox bool, decode Decoder[O]) (sdk.Result, error) {
	start := time.Now()
	fr, err := m.Prepare(ctx, f, letterbox)
	if err != nil {
		return sdk.Result{}, err
	}
	preprocessed := time.Now()
	outs, err := m.Run()
	if err != nil {
		return sdk.Result{}, err
	}
	defer Free(outs)
	inferred := time.Now()
	out, images, err := decode(fr, outs)
	if err != nil {
		return sdk.Result{}, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return sdk.Result{}, err
	}
	return sdk.Result{Output: b, Images: images, Timings: sdk.Timings{
		Preprocess:  preprocessed.Sub(start),
		Inference:   inferred.Sub(preprocessed),
		Postprocess: time.Since(inferred),
	}}, nil
}

// Free closes tensors.
func Free(ts []*tfmodels.Tensor) {
	for _, t := range ts {
		t.Close()
	}
}

// Close frees the input tensor and the model. It is safe to call more than once.
func (m *Model[O]) Close() error {
	for _, t := range []*tfmodels.Tensor{m.input, m.pair} {
		if t != nil {
			t.Close()
		}
	}
	var err error
	if m.model != nil {
		err = m.model.Close()
	}
	*m = Model[O]{}
	return err
}
