package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/plugins/common/imageprep"
	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin/tfplugintest"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/golden"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// testPipeline is the pipeline load configures and the test frames are for.
const testPipeline = "p"

// load loads a model version into a new classifier closed at the end of the
// test and configures it for testPipeline with options.
func load(t *testing.T, dir, options string) (*classifier, sdk.ModelInfo) {
	t.Helper()
	c := newClassifier()
	t.Cleanup(func() { c.Close() })
	info, err := c.Load(context.Background(), sdk.LoadRequest{ModelDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	configure(t, c, map[string]string{testPipeline: options})
	return c, info
}

// configure sets the classifier's pipelines (name -> options JSON).
func configure(t *testing.T, c *classifier, pipelines map[string]string) {
	t.Helper()
	if err := c.Configure(context.Background(), rawOptions(pipelines)); err != nil {
		t.Fatal(err)
	}
}

func rawOptions(pipelines map[string]string) map[string]json.RawMessage {
	raw := make(map[string]json.RawMessage, len(pipelines))
	for name, opts := range pipelines {
		raw[name] = json.RawMessage(opts)
	}
	return raw
}

// infer runs one frame and decodes the output.
func infer(t *testing.T, c *classifier, f sdk.Frame) output {
	t.Helper()
	return tfplugintest.Infer[output](t, c, f)
}

// grayFrame is an RGB frame with R = G = B = the gray pixels.
func grayFrame(gray []byte, w, h int) sdk.Frame {
	rgb := make([]byte, 0, 3*len(gray))
	for _, p := range gray {
		rgb = append(rgb, p, p, p)
	}
	return sdk.Frame{Pipeline: testPipeline, Width: w, Height: h, RGB: rgb}
}

// python runs testdata/reference.py with the project's venv (make test
// builds it); EDGEINFER_PYTHON overrides the interpreter.
func python(t *testing.T, args ...string) {
	t.Helper()
	py := os.Getenv("EDGEINFER_PYTHON")
	if py == "" {
		py = "../../.venv/bin/python"
	}
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("python with TensorFlow not found (run `make deps` or set EDGEINFER_PYTHON): %v", err)
	}
	cmd := exec.Command(py, append([]string{"testdata/reference.py"}, args...)...)
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference.py %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// LeNet-5 classifies the held-out digits through Infer, and its scores are
// the softmax of the logits tfmodels gives for the same digits normalised
// independently.
func TestLeNet5ClassifiesTheDigitsTestSplit(t *testing.T) {
	dir := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5")
	c, info := load(t, dir, `{"top_k": 10}`)
	if info.Task != "classify" || info.Labels != 10 || info.Description != "LeNet-5 tiny" || len(info.InputShape) != 4 || info.InputShape[1] != 32 {
		t.Errorf("ModelInfo %+v", info)
	}
	images, err := npy.Read(filepath.Join(dir, "golden", "digits_test_images.npy"))
	if err != nil {
		t.Fatal(err)
	}
	pixels, err := images.Uint8s()
	if err != nil {
		t.Fatal(err)
	}
	labelsNpy, err := npy.Read(filepath.Join(dir, "golden", "digits_test_labels.npy"))
	if err != nil {
		t.Fatal(err)
	}
	labels, err := labelsNpy.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	n := len(labels)
	if n < 400 || len(pixels) != n*32*32 {
		t.Fatalf("%d labels, %d pixels: want a 32x32 split of at least 400 digits", n, len(pixels))
	}

	// The reference: tfmodels run directly on the digit normalised as
	// edgeinfer.toml says, and a softmax computed here.
	man, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tfmodels.Load(dir, tfmodels.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.Runner(man.Signature, []string{man.Input.Key}, []string{man.Output.Logits})
	if err != nil {
		t.Fatal(err)
	}
	reference := func(digit []byte) (input []float32, probs []float64) {
		input = make([]float32, len(digit))
		for i, p := range digit {
			input[i] = float32((float64(p)*man.Input.Scale - man.Input.Mean[0]) / man.Input.Std[0])
		}
		x, err := tfmodels.NewTensorOf([]int64{1, 32, 32, 1}, input)
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		outs, err := r.Run(x)
		if err != nil {
			t.Fatal(err)
		}
		defer outs[0].Close()
		logits, _ := tfmodels.Data[float32](outs[0])
		sum := 0.0
		for _, l := range logits {
			probs = append(probs, math.Exp(float64(l)))
			sum += probs[len(probs)-1]
		}
		for i := range probs {
			probs[i] /= sum
		}
		return input, probs
	}

	correct := 0
	for i := range n {
		digit := pixels[i*32*32 : (i+1)*32*32]
		out := infer(t, c, grayFrame(digit, 32, 32))
		if len(out.Top) != 10 {
			t.Fatalf("digit %d: %d entries, want top_k 10", i, len(out.Top))
		}
		if out.Top[0].Label == string(rune('0'+labels[i])) {
			correct++
		}
		if i >= 20 {
			continue
		}
		input, probs := reference(digit)
		x, _ := tfmodels.Data[float32](c.Input())
		for j := range input {
			if x[j] != input[j] {
				t.Fatalf("digit %d pixel %d: plugin input %v, reference %v (no resize: must be exact)", i, j, x[j], input[j])
			}
		}
		for _, e := range out.Top {
			if d := math.Abs(float64(e.Score) - probs[e.Index]); d > 1e-6 {
				t.Errorf("digit %d label %d: score %v, softmax of tfmodels' logits %v", i, e.Index, e.Score, probs[e.Index])
			}
		}
	}
	acc := float64(correct) / float64(n)
	t.Logf("LeNet-5 through the plugin: digits test accuracy %.4f (%d/%d)", acc, correct, n)
	if acc < 0.95 {
		t.Errorf("accuracy %.4f < 0.95", acc)
	}
}

// The bilinear resize matches tf.image.resize (antialias=False): down,
// up, and the identity when the sizes match.
func TestResizeMatchesTensorFlow(t *testing.T) {
	t.Parallel()
	const w, h, scale = 64, 48, 1.0 / 255
	f := tfplugintest.NoiseFrame(testPipeline, w, h, 1)
	tmp := t.TempDir()
	framePath := filepath.Join(tmp, "frame.rgb")
	if err := os.WriteFile(framePath, f.RGB, 0o644); err != nil {
		t.Fatal(err)
	}
	sizes := []struct{ w, h int }{{32, 32}, {100, 70}, {64, 48}, {1, 1}}
	args := []string{"resize", framePath, "64", "48", "0.00392156862745098", tmp}
	for _, s := range sizes {
		args = append(args, sizeName(s.w, s.h))
	}
	python(t, args...)

	in := manifest.Input{Channels: 3, Scale: scale, Mean: []float64{0, 0, 0}, Std: []float64{1, 1, 1}}
	for _, s := range sizes {
		want, shape := tfplugintest.ReadFloats(t, filepath.Join(tmp, "resize_"+sizeName(s.w, s.h)+".npy"))
		if len(want) != s.w*s.h*3 {
			t.Fatalf("%s: reference shape %v", sizeName(s.w, s.h), shape)
		}
		got := make([]float32, len(want))
		imageprep.Normalize(got, imageprep.Resize(nil, f.RGB, w, h, s.w, s.h), in)
		worst := 0.0
		for i := range want {
			worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
		}
		t.Logf("64x48 -> %s: max |Go - TensorFlow| = %.3g", sizeName(s.w, s.h), worst)
		if worst > 1e-4 {
			t.Errorf("64x48 -> %s: max abs difference %g > 1e-4", sizeName(s.w, s.h), worst)
		}
	}
}

func sizeName(w, h int) string { return fmt.Sprintf("%dx%d", w, h) }

// ResNet-50 on a camera-sized frame: the plugin's input tensor and scores
// equal Python TensorFlow's for the same frame (tf.image.resize + the
// SavedModel), with the default top_k 5.
func TestResNet50MatchesTensorFlow(t *testing.T) {
	t.Parallel()
	dir := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "resnet50")
	f := tfplugintest.NoiseFrame(testPipeline, 640, 480, 2)
	tmp := t.TempDir()
	framePath := filepath.Join(tmp, "frame.rgb")
	if err := os.WriteFile(framePath, f.RGB, 0o644); err != nil {
		t.Fatal(err)
	}
	python(t, "classify", dir, framePath, "640", "480", tmp)
	wantInput, _ := tfplugintest.ReadFloats(t, filepath.Join(tmp, "input.npy"))
	wantScores, _ := tfplugintest.ReadFloats(t, filepath.Join(tmp, "scores.npy"))

	c, _ := load(t, dir, "")
	out := infer(t, c, f)

	x, _ := tfmodels.Data[float32](c.Input())
	if len(x) != len(wantInput) {
		t.Fatalf("input has %d values, Python's %d", len(x), len(wantInput))
	}
	worst := 0.0
	for i := range x {
		worst = math.Max(worst, math.Abs(float64(x[i]-wantInput[i])))
	}
	t.Logf("640x480 -> 64x64 input: max |Go - Python| = %.3g", worst)
	if worst > 1e-4 {
		t.Errorf("input differs from Python's by %g > 1e-4", worst)
	}

	if len(out.Top) != 5 {
		t.Fatalf("%d entries, want the default top_k 5: %+v", len(out.Top), out)
	}
	best, sum := 0, 0.0
	for i, s := range wantScores {
		if s > wantScores[best] {
			best = i
		}
	}
	for i, e := range out.Top {
		sum += float64(e.Score)
		if i > 0 && e.Score > out.Top[i-1].Score {
			t.Errorf("entries not sorted by score: %+v", out.Top)
		}
		if e.Label != c.Man.Labels[e.Index] {
			t.Errorf("entry %+v: label of index %d is %q", e, e.Index, c.Man.Labels[e.Index])
		}
		if d := math.Abs(float64(e.Score - wantScores[e.Index])); d > 1e-4 {
			t.Errorf("label %d: score %v, Python %v", e.Index, e.Score, wantScores[e.Index])
		}
	}
	if sum > 1+1e-6 {
		t.Errorf("top scores sum to %v > 1", sum)
	}
	if out.Top[0].Index != best {
		t.Errorf("top-1 is %d, Python's %d", out.Top[0].Index, best)
	}
}

// A model that takes any size (vgg16_fcn) gets each frame at its own size.
func TestAnySizeModelRunsFramesAtTheirSize(t *testing.T) {
	c, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "vgg16_fcn"), `{"top_k": 3}`)
	for _, s := range []struct{ w, h int }{{80, 48}, {80, 48}, {40, 64}} {
		out := infer(t, c, tfplugintest.NoiseFrame(testPipeline, s.w, s.h, 3))
		if got := c.Input().Shape(); got[1] != int64(s.h) || got[2] != int64(s.w) || len(out.Top) != 3 {
			t.Errorf("%dx%d frame: input shape %v, %d entries", s.w, s.h, got, len(out.Top))
		}
	}
}

func TestBadFramesAreErrBadFrame(t *testing.T) {
	c, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5"), "")
	for _, f := range []sdk.Frame{
		{Pipeline: testPipeline, Width: 32, Height: 32, RGB: make([]byte, 32*32*3-1)},
		{Pipeline: testPipeline, Width: 32, Height: 32, RGB: make([]byte, 32*32)},
		{Pipeline: testPipeline, Width: 0, Height: 0},
		{Pipeline: testPipeline, Width: -1, Height: -1, RGB: make([]byte, 3)},
	} {
		_, err := c.Infer(context.Background(), f)
		if !errors.Is(err, sdk.ErrBadFrame) || !strings.Contains(err.Error(), "RGB bytes") {
			t.Errorf("%dx%d frame of %d bytes: %v", f.Width, f.Height, len(f.RGB), err)
		}
	}
	// The classifier still works after bad frames.
	if out := infer(t, c, grayFrame(make([]byte, 32*32), 32, 32)); len(out.Top) != 5 {
		t.Errorf("after bad frames: %+v", out)
	}
}

// Each pipeline's options are checked at Configure; a bad one names the
// pipeline and the option, and the set in force stays as it was.
func TestOptions(t *testing.T) {
	c, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5"), `{"top_k": 2}`)
	for _, tc := range []struct{ options, want string }{
		{`{"top_k": 0}`, "pipeline bad: top_k is 0, must be 1..10"},
		{`{"top_k": 11}`, "pipeline bad: top_k is 11, must be 1..10"},
		{`{"topk": 3}`, `pipeline bad: options: json: unknown field "topk"`},
		{`{"top_k": "3"}`, "top_k"},
		{`{"min_score": 1.5}`, "pipeline bad: min_score is 1.5, must be in [0, 1]"},
		{`[1]`, "pipeline bad: options"},
	} {
		err := c.Configure(context.Background(), rawOptions(map[string]string{"good": `{"top_k": 4}`, "bad": tc.options}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("options %s: got %v, want an error containing %q", tc.options, err, tc.want)
		}
		if len(c.Pipelines()) != 1 || c.Pipelines()[testPipeline] != (options{TopK: 2}) {
			t.Errorf("options %s: the set changed to %+v", tc.options, c.Pipelines())
		}
	}
	for _, tc := range []struct {
		options string
		want    options
	}{
		{``, options{TopK: 5}},
		{`null`, options{TopK: 5}},
		{`{}`, options{TopK: 5}},
		{`{"top_k": 10, "min_score": 0.25}`, options{TopK: 10, MinScore: 0.25}},
	} {
		configure(t, c, map[string]string{testPipeline: tc.options})
		if got := c.Pipelines()[testPipeline]; got != tc.want {
			t.Errorf("options %q: got %+v, want %+v", tc.options, got, tc.want)
		}
	}
}

// One process serves several pipelines, each with its own options; a
// Configure replaces the whole set.
func TestPipelinesOnOneProcessUseTheirOwnOptions(t *testing.T) {
	c, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5"), "")
	configure(t, c, map[string]string{"one": `{"top_k": 1}`, "three": `{"top_k": 3}`})
	f := grayFrame(make([]byte, 32*32), 32, 32)
	f.Pipeline = "one"
	one := infer(t, c, f)
	f.Pipeline = "three"
	three := infer(t, c, f)
	if len(one.Top) != 1 || len(three.Top) != 3 || one.Top[0] != three.Top[0] {
		t.Fatalf("top_k 1: %+v; top_k 3: %+v", one.Top, three.Top)
	}

	configure(t, c, map[string]string{"three": `{"top_k": 2}`})
	if out := infer(t, c, f); len(out.Top) != 2 {
		t.Errorf("after reconfiguring pipeline three to top_k 2: %+v", out.Top)
	}
	f.Pipeline = "one"
	if _, err := c.Infer(context.Background(), f); err == nil || !strings.Contains(err.Error(), `pipeline "one" is not configured (configured: three)`) {
		t.Errorf("a pipeline dropped from the set: %v", err)
	}
}

// Validate reruns the golden samples through the loaded model.
func TestValidatePassesOnTheExportedModel(t *testing.T) {
	c, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5"), "")
	v, err := c.Validate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lenet5 validation: %+v", v)
	if v.Samples < 1 || v.Tolerance != golden.Tolerance || v.MaxAbsDiff > v.Tolerance {
		t.Errorf("validation %+v", v)
	}
}

// copyVersion copies a model version into a temporary directory.
func copyVersion(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "1")
	if err := os.CopyFS(dir, os.DirFS(tfplugintest.ModelDir(t, "EDGEINFER_MODELS", name))); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A golden output that no longer matches the model fails Validate, naming
// the output, its difference and the tolerance; a larger tolerance given at
// Load accepts it.
func TestValidateNamesTheOutputThatDiffers(t *testing.T) {
	dir := copyVersion(t, "lenet5")
	path := filepath.Join(dir, "golden", "output_logits.npy")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := npy.Decode(b) // a.Data is b's data section
	if err != nil || a.Descr != "<f4" {
		t.Fatalf("%s: %v %+v", path, err, a)
	}
	v := math.Float32frombits(binary.LittleEndian.Uint32(a.Data))
	binary.LittleEndian.PutUint32(a.Data, math.Float32bits(v+0.5))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}

	c, _ := load(t, dir, "")
	_, err = c.Validate(context.Background())
	if err == nil || !strings.Contains(err.Error(), `output "logits" differs`) ||
		!strings.Contains(err.Error(), "max abs difference 0.5 > tolerance 0.0001") {
		t.Fatalf("got %v, want the output, its difference and the tolerance named", err)
	}

	lax := newClassifier()
	t.Cleanup(func() { lax.Close() })
	if _, err := lax.Load(context.Background(), sdk.LoadRequest{ModelDir: dir, Tolerance: 1}); err != nil {
		t.Fatal(err)
	}
	if v, err := lax.Validate(context.Background()); err != nil || v.Tolerance != 1 || v.MaxAbsDiff < 0.49 {
		t.Errorf("tolerance 1: %+v, %v", v, err)
	}
}

// A version exported without golden samples has nothing to validate.
func TestValidateWithoutGoldenRunsNoSamples(t *testing.T) {
	dir := copyVersion(t, "lenet5")
	if err := os.RemoveAll(filepath.Join(dir, "golden")); err != nil {
		t.Fatal(err)
	}
	c, _ := load(t, dir, "")
	if v, err := c.Validate(context.Background()); err != nil || v.Samples != 0 {
		t.Errorf("got %+v, %v; want Samples 0 and no error", v, err)
	}
}

// min_score drops entries: a blank image is not a confident digit.
func TestMinScoreDropsEntries(t *testing.T) {
	c, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5"), `{"top_k": 10, "min_score": 0.05}`)
	out := infer(t, c, grayFrame(make([]byte, 32*32), 32, 32))
	if len(out.Top) == 0 || len(out.Top) == 10 {
		t.Fatalf("min_score 0.05 kept %d of 10 entries: %+v", len(out.Top), out)
	}
	for _, e := range out.Top {
		if e.Score < 0.05 {
			t.Errorf("entry %+v below min_score", e)
		}
	}
}

// Manifests the plugin cannot serve are refused at Load, naming why.
func TestLoadRefusesOtherManifests(t *testing.T) {
	edited := func(from, to string) string {
		dir := copyVersion(t, "lenet5")
		p := filepath.Join(dir, manifest.File)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(b), from, to, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, tc := range []struct{ name, dir, want string }{
		{"embed model", tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "facenet"), `task is "embed", this plugin serves classify`},
		{"segment model", tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "unet"), `task is "segment"`},
		{"missing dir", filepath.Join(t.TempDir(), "none"), manifest.File},
		{"invalid manifest", edited("channels = 1", "channels = 2"), "input.channels must be 1 or 3"},
		{"letterbox", edited(`resize = "stretch"`, `resize = "letterbox"`), `input.resize "letterbox" is not supported for classify`},
		{"manifest size differs from the signature", edited("height = 32", "height = 28"), "edgeinfer.toml says float32 [batch, 28, 32, 1]"},
		{"more labels than outputs", edited(`"8", "9"]`, `"8", "9", "10"]`), "edgeinfer.toml says float32 [batch, 11]"},
		{"unknown output", edited(`logits = "logits"`, `logits = "probs"`), `"probs"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClassifier()
			_, err := c.Load(context.Background(), sdk.LoadRequest{ModelDir: tc.dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	dir := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5")
	c := newClassifier()
	ctx := context.Background()
	if _, err := c.Infer(ctx, grayFrame(make([]byte, 32*32), 32, 32)); err == nil {
		t.Error("Infer before Load succeeded")
	}
	if err := c.Configure(ctx, nil); err == nil || !strings.Contains(err.Error(), "before Load") {
		t.Errorf("Configure before Load: %v", err)
	}
	if _, err := c.Validate(ctx); err == nil || !strings.Contains(err.Error(), "before Load") {
		t.Errorf("Validate before Load: %v", err)
	}
	req := sdk.LoadRequest{ModelDir: dir}
	if _, err := c.Load(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Infer(ctx, grayFrame(make([]byte, 32*32), 32, 32)); err == nil || !strings.Contains(err.Error(), `pipeline "p" is not configured`) {
		t.Errorf("Infer before Configure: %v", err)
	}
	if _, err := c.Load(context.Background(), req); err == nil || !strings.Contains(err.Error(), "already loaded") {
		t.Errorf("second Load: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Infer(context.Background(), grayFrame(make([]byte, 32*32), 32, 32)); err == nil {
		t.Error("Infer after Close succeeded")
	}
}
