package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"sync"

	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin"
	"github.com/edgeinfer/edgeinfer/plugins/embed/identify"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

var _ sdk.Commander = (*embedder)(nil)

// embedder is the embed Task: one model version for every pipeline
// configured. tfplugin.Model does the loading, options, validation and
// input; this file runs frames and images through the model, pipelines.go
// keeps each pipeline's identifier.
type embedder struct {
	tfplugin.Model[options]

	// mu guards the model (its input tensor and runner), which frames and
	// the gallery reloads of every pipeline (their own goroutines) share,
	// and pipes.
	mu    sync.Mutex
	pipes map[string]*pipeline
	raw   map[string]json.RawMessage // the options of pipes, to restore them if a Configure fails
	space string                     // the embedding space: <model>/<version>

	stopSaver context.CancelFunc // nil until Load succeeds
	saverDone chan struct{}
}

func newEmbedder() *embedder { return &embedder{} }

// spec is what tfplugin needs to know of embedding models.
var spec = tfplugin.Spec[options]{
	Task:  "embed",
	Tasks: []string{manifest.TaskEmbed, manifest.TaskSiamese}, // a Siamese model: its first tower (tfplugin feeds the pair a zero image)
	Outputs: func(man manifest.Manifest) ([]string, error) {
		if man.Input.Batch > 1 {
			return nil, fmt.Errorf("input.batch is %d: embed runs one image at a time (batch 1, or 0: any)", man.Input.Batch)
		}
		return []string{man.Output.Embedding}, nil
	},
	Check: func(man manifest.Manifest, in tfmodels.TensorInfo, outs []tfmodels.TensorInfo) error {
		return checkSignature(man, in, outs[0])
	},
	Options: func(raw json.RawMessage, _ manifest.Manifest) (options, error) { return parseOptions(raw) },
}

// checkSignature checks the input is a float32 image batch (its sizes are
// the warm-up's to check: it runs the manifest's size) and the output
// float32 [batch, output.dim], the batch 1 or any.
func checkSignature(man manifest.Manifest, in, out tfmodels.TensorInfo) error {
	if in.DType != tfmodels.Float32 || in.UnknownRank || len(in.Shape) != 4 {
		return fmt.Errorf("input is %s, want float32 [batch, height, width, %d]", in, man.Input.Channels)
	}
	if out.DType != tfmodels.Float32 || out.UnknownRank || len(out.Shape) != 2 ||
		(out.Shape[0] != -1 && out.Shape[0] != 1) || (out.Shape[1] != -1 && out.Shape[1] != int64(man.Output.Dim)) {
		return fmt.Errorf("output is %s, edgeinfer.toml says float32 [batch, %d] (output.dim; batch 1 or any)", out, man.Output.Dim)
	}
	return nil
}

// Load loads and warms up the embedding model version in req.ModelDir and
// starts saving the pipelines' states every saveEvery.
func (e *embedder) Load(ctx context.Context, req sdk.LoadRequest) (sdk.ModelInfo, error) {
	info, err := e.Model.Load(ctx, req, spec)
	if err != nil {
		return info, err
	}
	e.space = req.Model + "/" + req.Version
	if req.Model == "" {
		e.space = req.ModelDir // loaded by path (tests, tools)
	}
	e.startSaver()
	return info, nil
}

// letterbox says how frames reach the input size (input.resize).
func (e *embedder) letterbox() bool { return e.Man.Input.Resize == "letterbox" }

// embedFrame runs f through the model (tfplugin's preprocessing) and gives
// what decode makes of the embedding: the model's raw vector and its unit
// vector. It is the one path of frames and of images (Embed); the caller
// holds e.mu.
func (e *embedder) embedFrame(ctx context.Context, f sdk.Frame, decode func(raw []float32, unit []float64) (any, error)) (sdk.Result, error) {
	return e.RunFrame(ctx, f, e.letterbox(), func(_ tfplugin.Frame[options], outs []*tfmodels.Tensor) (any, map[string][]byte, error) {
		raw, unit, err := e.vector(outs[0])
		if err != nil {
			return nil, nil, err
		}
		out, err := decode(raw, unit)
		return out, nil, err
	})
}

// vector copies the embedding out of the output tensor and L2-normalises
// it (identify.Unit, whether or not the model does). A zero vector is the
// frame's fault (the model found nothing in it: sdk.ErrBadFrame); NaN or
// Inf is the model's: its input is always finite, so a non-finite output
// is a failure of the model (inference_failed), not bad input.
func (e *embedder) vector(t *tfmodels.Tensor) ([]float32, []float64, error) {
	shape := t.Shape()
	if len(shape) != 2 || shape[0] != 1 || shape[1] != int64(e.Man.Output.Dim) {
		return nil, nil, fmt.Errorf("model %s: output %q is %v, want [1, %d]", e.Dir, e.Man.Output.Embedding, shape, e.Man.Output.Dim)
	}
	v, err := tfmodels.Data[float32](t)
	if err != nil {
		return nil, nil, err
	}
	raw := append([]float32(nil), v...)
	unit, err := identify.Unit(raw)
	switch {
	case errors.Is(err, identify.ErrZeroVector):
		return nil, nil, fmt.Errorf("%w: model %s: the embedding is a %w", sdk.ErrBadFrame, e.Dir, err)
	case err != nil:
		return nil, nil, fmt.Errorf("model %s: output %q: %w", e.Dir, e.Man.Output.Embedding, err)
	}
	return raw, unit, nil
}

// modelEmbedder is the identify.Embedder of one pipeline: the loaded
// model, run on an image as on a frame of that pipeline.
type modelEmbedder struct {
	e        *embedder
	pipeline string
}

// errUniform refuses an image of one colour given to be enrolled (gallery,
// enrol command), verified against or re-embedded: a model gives it an
// embedding like any other, and an identity enrolled from a blank image
// would match every blank frame.
var errUniform = errors.New("an image of one colour: no usable content")

// uniformLevels is the spread (of 0..255 per channel) under which an image
// counts as one colour: a flat image saved as JPEG varies by a level or two.
const uniformLevels = 2

// uniform reports whether every pixel of packed RGB is within
// uniformLevels of one colour in each channel.
func uniform(rgb []byte) bool {
	lo, hi := [3]byte{255, 255, 255}, [3]byte{}
	for i, v := range rgb {
		c := i % 3
		lo[c], hi[c] = min(lo[c], v), max(hi[c], v)
	}
	return hi[0]-lo[0] <= uniformLevels && hi[1]-lo[1] <= uniformLevels && hi[2]-lo[2] <= uniformLevels
}

// Embed runs img through the model as a frame; alpha is ignored. An image
// of one colour is refused (errUniform).
func (m modelEmbedder) Embed(img image.Image) ([]float32, error) {
	rgb, w, h := rgbOf(img)
	if uniform(rgb) {
		return nil, errUniform
	}
	var raw []float32
	m.e.mu.Lock()
	defer m.e.mu.Unlock()
	_, err := m.e.embedFrame(context.Background(), sdk.Frame{Pipeline: m.pipeline, Width: w, Height: h, RGB: rgb},
		func(r []float32, _ []float64) (any, error) {
			raw = r
			return nil, nil
		})
	return raw, err
}

// Infer embeds one frame and says whose it is, with its pipeline's
// options.
func (e *embedder) Infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pipes[f.Pipeline] // nil for a pipeline not configured: Prepare says so
	res, err := e.embedFrame(ctx, f, func(raw []float32, unit []float64) (any, error) {
		return p.decide(raw, unit, f)
	})
	if err != nil {
		return res, fmt.Errorf("pipeline %s, frame %d (%dx%d): %w", f.Pipeline, f.Seq, f.Width, f.Height, err)
	}
	return res, nil
}

// Command runs an identity command for one pipeline (sdk.Commander): enrol
// an image under a name, name a cluster, forget a name, as the daemon's
// command topic brought it (identify.DecodeCommand).
func (e *embedder) Command(ctx context.Context, pipeline string, command json.RawMessage) (string, error) {
	c, err := identify.DecodeCommand(command)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	p := e.pipes[pipeline]
	e.mu.Unlock()
	switch {
	case p == nil:
		return "", fmt.Errorf("pipeline %q is not configured", pipeline)
	case p.id == nil:
		return "", fmt.Errorf("pipeline %s keeps no identities: give it a gallery or a state_dir", pipeline)
	}
	// Enrol embeds the image through the model (modelEmbedder takes e.mu).
	if err := p.id.Apply(c); err != nil {
		return "", fmt.Errorf("pipeline %s: %w", pipeline, err)
	}
	switch c.Command {
	case "enrol":
		return fmt.Sprintf("pipeline %s: %s enrolled", pipeline, c.Name), nil
	case "name_cluster":
		return fmt.Sprintf("pipeline %s: cluster %d is now %s", pipeline, c.Cluster, c.Name), nil
	default:
		return fmt.Sprintf("pipeline %s: %s forgotten", pipeline, c.Name), nil
	}
}

// Close stops the saver and the gallery watchers, saves every state and
// frees the model. It is safe to call more than once.
func (e *embedder) Close() error {
	if e.stopSaver != nil {
		e.stopSaver()
		<-e.saverDone
		e.stopSaver = nil
	}
	e.closePipelines(e.pipes, nil)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pipes, e.raw = nil, nil
	return e.Model.Close()
}
