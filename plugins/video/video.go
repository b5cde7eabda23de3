package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin"
	"github.com/edgeinfer/edgeinfer/plugins/common/topk"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// classifier is the video Task: one model version for every pipeline
// configured. tfplugin.Model loads the model with a runner for its features
// signature (one frame in, one feature vector out) and prepares each frame;
// this file keeps each stream's features and runs the clip signature on
// clips sampled from them, so the CNN runs exactly once per frame.
type classifier struct {
	tfplugin.Model[options]
	clip    *tfmodels.Runner // the clip signature: features [1, N, D], lengths [1] -> logits [1, labels]
	clipIn  *tfmodels.Tensor // [1, N, D], reused
	lengths *tfmodels.Tensor // [1] int32, reused
	n, dim  int              // N (input.frames) and D (a feature vector's length)

	streams  map[streamKey]*stream
	computed uint64 // frames through the CNN in this process
	clips    uint64 // clip signature runs in this process
}

func newClassifier() *classifier { return &classifier{} }

// streamKey names a stream: the frames of one sensor for one pipeline.
type streamKey struct{ pipeline, sensor string }

// stream is what a stream keeps between frames.
type stream struct {
	buf      ring
	computed uint64 // frames of the stream through the CNN
	frames   uint64 // frames buffered (clip points count these)
	scene    int    // the current scene (scene sampling)
	file     fileFeatures
}

// spec is what tfplugin needs to know of video: the runner it makes is the
// features signature's.
var spec = tfplugin.Spec[options]{
	Task:  "video",
	Tasks: []string{manifest.TaskVideo},
	Signature: func(man manifest.Manifest) (string, string) {
		return man.Video.FeaturesSignature, man.Video.FeaturesInput
	},
	Outputs: func(man manifest.Manifest) ([]string, error) {
		if f := man.Video.Missing(); f != "" {
			return nil, fmt.Errorf("%s is missing: the video plugin runs the frame CNN once per frame (the [video] "+
				"features signature) and classifies clips of cached features (the clip signature); one frames -> "+
				"logits signature would run the CNN on every frame again in every clip", f)
		}
		if man.Input.Resize != "stretch" {
			return nil, fmt.Errorf("input.resize %q is not supported for video (stretch only)", man.Input.Resize)
		}
		if man.Input.Height == 0 {
			return nil, fmt.Errorf("input.height is 0: video needs a fixed frame size (every feature vector from the same input size)")
		}
		return []string{man.Video.FeaturesOutput}, nil
	},
	Check:   checkFeatures,
	Options: parseOptions,
}

// checkFeatures checks the features signature: float32 [batch, height,
// width, channels] in, float32 [batch, D] out.
func checkFeatures(man manifest.Manifest, in tfmodels.TensorInfo, outs []tfmodels.TensorInfo) error {
	sizeOK := func(got int64, want int) bool { return got == -1 || got == int64(want) }
	if in.DType != tfmodels.Float32 || in.UnknownRank || len(in.Shape) != 4 || !sizeOK(in.Shape[0], 1) ||
		!sizeOK(in.Shape[1], man.Input.Height) || !sizeOK(in.Shape[2], man.Input.Width) || in.Shape[3] != int64(man.Input.Channels) {
		return fmt.Errorf("input is %s, edgeinfer.toml says float32 [batch, %d, %d, %d] (video.features_input; input.height, width, channels)",
			in, man.Input.Height, man.Input.Width, man.Input.Channels)
	}
	out := outs[0]
	if out.DType != tfmodels.Float32 || out.UnknownRank || len(out.Shape) != 2 || !sizeOK(out.Shape[0], 1) || out.Shape[1] == 0 || out.Shape[1] < -1 {
		return fmt.Errorf("output is %s, want float32 [batch, D] (video.features_output: one feature vector per frame)", out)
	}
	return nil
}

// Load loads the video model version in req.ModelDir: the features
// signature through tfplugin (checked and warmed up), then the clip
// signature, checked against it and warmed up on a clip of one zero vector.
func (c *classifier) Load(ctx context.Context, req sdk.LoadRequest) (sdk.ModelInfo, error) {
	info, err := c.Model.Load(ctx, req, spec)
	if err != nil {
		return info, err
	}
	if err := c.loadClip(); err != nil {
		c.Close()
		return sdk.ModelInfo{}, err
	}
	c.streams = map[streamKey]*stream{}
	return info, nil
}

func (c *classifier) loadClip() error {
	v := c.Man.Video
	r, err := c.TF().Runner(v.ClipSignature, []string{v.ClipFeatures, v.ClipLengths}, []string{v.ClipLogits})
	if err != nil {
		return err
	}
	c.n = c.Man.Input.Frames
	feats, lengths, logits := r.Inputs()[0], r.Inputs()[1], r.Outputs()[0]
	dim := c.Runner.Outputs()[0].Shape[1]
	if dim == -1 && !feats.UnknownRank && len(feats.Shape) == 3 {
		dim = feats.Shape[2]
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("model %s: signature %q: %s", c.Dir, v.ClipSignature, fmt.Sprintf(format, args...))
	}
	ok := func(got, want int64) bool { return got == -1 || got == want }
	switch {
	case dim < 1:
		return bad("the feature length D is unknown: neither %s nor %s gives it", c.Runner.Outputs()[0], feats)
	case feats.DType != tfmodels.Float32 || feats.UnknownRank || len(feats.Shape) != 3 || !ok(feats.Shape[0], 1) ||
		!ok(feats.Shape[1], int64(c.n)) || !ok(feats.Shape[2], dim):
		return bad("input is %s, want float32 [batch, %d, %d] (video.clip_features; input.frames, the features' D)", feats, c.n, dim)
	case lengths.DType != tfmodels.Int32 || lengths.UnknownRank || len(lengths.Shape) != 1 || !ok(lengths.Shape[0], 1):
		return bad("input is %s, want int32 [batch] (video.clip_lengths)", lengths)
	case logits.DType != tfmodels.Float32 || logits.UnknownRank || len(logits.Shape) != 2 || !ok(logits.Shape[0], 1) ||
		!ok(logits.Shape[1], int64(len(c.Man.Labels))):
		return bad("output is %s, want float32 [batch, %d] (video.clip_logits: one score per label)", logits, len(c.Man.Labels))
	}
	c.clip, c.dim = r, int(dim)
	if c.clipIn, err = tfmodels.NewTensor(tfmodels.Float32, 1, int64(c.n), dim); err != nil {
		return err
	}
	if c.lengths, err = tfmodels.NewTensor(tfmodels.Int32, 1); err != nil {
		return err
	}
	zero := feature{vec: make([]float32, c.dim)}
	if _, err := c.classify([]*feature{&zero}, 1); err != nil {
		return fmt.Errorf("warm-up of signature %q: %w", v.ClipSignature, err)
	}
	c.clips = 0
	return nil
}

// Configure replaces the set of pipelines; the streams of pipelines no
// longer served are dropped, and a stream whose buffer size changed keeps
// its newest features.
func (c *classifier) Configure(ctx context.Context, pipelines map[string]json.RawMessage) error {
	if err := c.Model.Configure(ctx, pipelines); err != nil {
		return err
	}
	for key, st := range c.streams {
		o, ok := c.Pipelines()[key.pipeline]
		switch {
		case !ok:
			delete(c.streams, key)
		case cap(st.buf.items) != o.Buffer:
			buf := newRing(o.Buffer)
			for i := max(0, st.buf.len()-o.Buffer); i < st.buf.len(); i++ {
				buf.push(*st.buf.at(i))
			}
			st.buf = buf
		}
	}
	return nil
}

// clipResult is the classification of one clip (README.md).
type clipResult struct {
	Label  string       `json:"label"`
	Class  int          `json:"class"`
	Score  float32      `json:"score"`
	Top    []topk.Entry `json:"top"`
	Frames []uint64     `json:"frames"` // the seqs of the frames used, oldest first
	Length int          `json:"length"` // len(frames): the valid frames of the N fed (the rest is padding)
	Scene  *int         `json:"scene,omitempty"`
}

// fileResult is the classification of the frames of the current source.
type fileResult struct {
	Source     string `json:"source"`      // the file: the frames' Source without "#<n>"
	FramesSeen uint64 `json:"frames_seen"` // frames of the source so far
	Kept       int    `json:"kept"`        // feature vectors kept for it (at most file_frames)
	clipResult
}

// output is the task's JSON output (README.md).
type output struct {
	FeaturesComputed uint64      `json:"features_computed"`         // frames of this stream through the CNN: one per frame
	ProcessComputed  uint64      `json:"features_computed_process"` // frames through the CNN in this plugin process
	Buffered         int         `json:"buffered"`                  // feature vectors in the stream's buffer
	Scene            *int        `json:"scene,omitempty"`           // scene sampling: the frame's scene
	Clip             *clipResult `json:"clip"`                      // null between clip points
	File             *fileResult `json:"file,omitempty"`            // whole_file only
}

// Infer computes the frame's features, buffers them in its stream and, at
// a clip point (every stride frames), classifies a clip sampled from the
// buffer; with whole_file also the frames of its source so far.
func (c *classifier) Infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	start := time.Now()
	fr, err := c.Prepare(ctx, f, false)
	if err != nil {
		return sdk.Result{}, err
	}
	o := fr.Options
	if o.Sampling == samplingPerSecond && f.Time.IsZero() {
		return sdk.Result{}, fmt.Errorf("%w: frame %d of sensor %q has no capture time; pipeline %s samples per_second by it",
			sdk.ErrBadFrame, f.Seq, f.Sensor, f.Pipeline)
	}
	key := streamKey{f.Pipeline, f.Sensor}
	st := c.streams[key]
	if st == nil {
		st = &stream{buf: newRing(o.Buffer)}
		c.streams[key] = st
	}
	preprocessed := time.Now()
	feat, err := c.features(f, st)
	if err != nil {
		return sdk.Result{}, err
	}
	inference := time.Since(preprocessed)

	if o.Sampling == samplingScene && st.buf.len() > 0 &&
		cosineDistance(st.buf.at(st.buf.len()-1).vec, feat.vec) > o.SceneThreshold {
		st.scene++
	}
	feat.scene = st.scene
	st.buf.push(feat)
	st.frames++
	out := output{FeaturesComputed: st.computed, ProcessComputed: c.computed, Buffered: st.buf.len()}
	if o.Sampling == samplingScene {
		out.Scene = &feat.scene
	}
	if st.frames%uint64(o.Stride) == 0 {
		var idx []int
		switch o.Sampling {
		case samplingEven:
			idx = sampleEven(&st.buf, o.Window, c.n)
		case samplingPerSecond:
			idx = samplePerSecond(&st.buf, o.FPS, c.n)
		case samplingScene:
			idx = sampleScene(&st.buf, c.n)
		}
		feats := make([]*feature, len(idx))
		for i, j := range idx {
			feats[i] = st.buf.at(j)
		}
		t := time.Now()
		if out.Clip, err = c.classify(feats, o.TopK); err != nil {
			return sdk.Result{}, fmt.Errorf("frame %d: %w", f.Seq, err)
		}
		inference += time.Since(t)
		if out.Clip != nil && o.Sampling == samplingScene {
			out.Clip.Scene = &feat.scene
		}
	}
	if o.WholeFile {
		st.file.add(f.Source, feat, o.FileFrames)
		t := time.Now()
		cl, err := c.classify(st.file.sample(c.n), o.TopK)
		if err != nil {
			return sdk.Result{}, fmt.Errorf("frame %d: whole file %q: %w", f.Seq, f.Source, err)
		}
		inference += time.Since(t)
		out.File = &fileResult{Source: st.file.source, FramesSeen: st.file.seen, Kept: len(st.file.kept), clipResult: *cl}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return sdk.Result{}, err
	}
	return sdk.Result{Output: b, Timings: sdk.Timings{
		Preprocess:  preprocessed.Sub(start),
		Inference:   inference,
		Postprocess: time.Since(preprocessed) - inference,
	}}, nil
}

// features runs the features signature on the prepared input (the one
// place the CNN runs) and checks the vector: one NaN or infinity and the
// frame is refused, named, and not buffered.
func (c *classifier) features(f sdk.Frame, st *stream) (feature, error) {
	outs, err := c.Run()
	if err != nil {
		return feature{}, err
	}
	defer tfplugin.Free(outs)
	c.computed++
	st.computed++
	vec, err := tfmodels.Data[float32](outs[0])
	if err != nil {
		return feature{}, err
	}
	if len(vec) != c.dim {
		return feature{}, fmt.Errorf("model %s: output %q has %d values, want %d", c.Dir, c.Man.Video.FeaturesOutput, len(vec), c.dim)
	}
	if err := checkFinite(vec); err != nil {
		return feature{}, fmt.Errorf("frame %d (pipeline %s, sensor %q, source %q): features: %w; the frame is not buffered",
			f.Seq, f.Pipeline, f.Sensor, f.Source, err)
	}
	return feature{seq: f.Seq, time: f.Time, vec: slices.Clone(vec)}, nil
}

// checkFinite names the first NaN or infinite value of v and counts them.
func checkFinite(v []float32) error {
	first, n := -1, 0
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	if n > 0 {
		return fmt.Errorf("%d of %d values are NaN or infinite (the first, [%d], is %v)", n, len(v), first, v[first])
	}
	return nil
}

// classify classifies a clip of feats (at most N, oldest first) with the
// clip signature. No frames: no clip (nil), the model is not run.
func (c *classifier) classify(feats []*feature, k int) (*clipResult, error) {
	if len(feats) == 0 {
		return nil, nil
	}
	logits, err := c.clipLogits(feats)
	if err != nil {
		return nil, err
	}
	res := &clipResult{Length: len(feats), Frames: make([]uint64, len(feats))}
	for i, f := range feats {
		res.Frames[i] = f.seq
	}
	res.Top = topk.Top(logits, c.Man.Labels, c.Man.Output.Softmax, k, 0)
	res.Label, res.Class, res.Score = res.Top[0].Label, res.Top[0].Index, res.Top[0].Score
	return res, nil
}

// clipLogits runs the clip signature on 1..N feature vectors: the rest of
// the N rows are zero padding, masked by lengths.
func (c *classifier) clipLogits(feats []*feature) ([]float64, error) {
	if len(feats) == 0 || len(feats) > c.n {
		return nil, fmt.Errorf("clip of %d frames, the model takes 1..%d", len(feats), c.n)
	}
	x, err := tfmodels.Data[float32](c.clipIn)
	if err != nil {
		return nil, err
	}
	clear(x)
	for i, f := range feats {
		copy(x[i*c.dim:(i+1)*c.dim], f.vec)
	}
	ln, err := tfmodels.Data[int32](c.lengths)
	if err != nil {
		return nil, err
	}
	ln[0] = int32(len(feats))
	outs, err := c.clip.Run(c.clipIn, c.lengths)
	if err != nil {
		return nil, err
	}
	defer tfplugin.Free(outs)
	c.clips++
	logits, err := tfmodels.Data[float32](outs[0])
	if err != nil {
		return nil, err
	}
	if len(logits) != len(c.Man.Labels) {
		return nil, fmt.Errorf("model %s: output %q has %d values for %d labels", c.Dir, c.Man.Video.ClipLogits, len(logits), len(c.Man.Labels))
	}
	if err := checkFinite(logits); err != nil {
		return nil, fmt.Errorf("clip logits: %w", err)
	}
	scores := make([]float64, len(logits))
	for i, v := range logits {
		scores[i] = float64(v)
	}
	return scores, nil
}

// Close frees the clip tensors and the model. Safe to call more than once.
func (c *classifier) Close() error {
	for _, t := range []*tfmodels.Tensor{c.clipIn, c.lengths} {
		if t != nil {
			t.Close()
		}
	}
	c.clipIn, c.lengths, c.clip, c.streams = nil, nil, nil, nil
	return c.Model.Close()
}
