package golden

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// zooModels are the tiny exports `make models` writes (tfmodels/zoo/export.py
// REGISTRY) and the models `make models-trained` trains on generated sets:
// the shapes detectors, the segmenter, the video model, the embedding
// models and the face detector.
var zooModels = []string{
	"alexnet", "anchorfree", "clips_video", "facenet", "faces_faster_rcnn", "faster_rcnn", "fcn16s", "fcn32s", "fcn8s",
	"googlenet", "ident_facenet", "ident_siamese", "lenet5", "mask_rcnn", "resnet50", "shapes_faster_rcnn",
	"shapes_mask_rcnn", "shapes_seg", "shapes_yolov3", "siamese", "unet", "vgg16", "vgg16_fcn", "video_lstm", "yolov3",
}

// modelRepo is the exported tiny zoo; make test sets EDGEINFER_MODELS.
func modelRepo(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEINFER_MODELS")
	if dir == "" {
		dir = "../../models"
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("model repository %s missing: run `make models` (make test does): %v", dir, err)
	}
	return dir
}

// Each exported tiny model, run on its golden input through the C API,
// matches Python TensorFlow's output within 1e-4.
func TestZooModelsMatchPythonGoldenOutputs(t *testing.T) {
	repo := modelRepo(t)
	for _, name := range zooModels {
		t.Run(name, func(t *testing.T) {
			rep, err := Check(filepath.Join(repo, name, "1"))
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Outputs) == 0 {
				t.Fatal("no outputs compared")
			}
			for _, o := range rep.Outputs {
				t.Logf("%s %v: max |Go - Python| = %.3g", o.Key, o.Shape, o.MaxAbsDiff)
				if !o.OK() {
					t.Errorf("%s: shape differs %v or max abs difference %g > %g", o.Key, o.ShapeDiffer, o.MaxAbsDiff, Tolerance)
				}
			}
		})
	}
}

func TestZooRepositoryHoldsExactlyTheKnownModels(t *testing.T) {
	entries, err := os.ReadDir(modelRepo(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			got = append(got, e.Name())
		}
	}
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(zooModels, ",") {
		t.Errorf("repository holds %v, tests know %v", got, zooModels)
	}
}

// copyVersion copies <repo>/<name>/1 into a temporary directory.
func copyVersion(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "1")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(modelRepo(t), name, "1"))); err != nil {
		t.Fatal(err)
	}
	return dir
}

// moveLastValue adds delta to the last float32 of the .npy file at path.
func moveLastValue(t *testing.T, path string, delta float32) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	last := b[len(b)-4:]
	binary.LittleEndian.PutUint32(last, math.Float32bits(math.Float32frombits(binary.LittleEndian.Uint32(last))+delta))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The check itself must catch a wrong output: perturb one golden value.
func TestCheckCatchesAnOutputThatDiffersFromPython(t *testing.T) {
	dir := copyVersion(t, "lenet5")
	moveLastValue(t, filepath.Join(dir, "golden", "output_logits.npy"), 1e-3)
	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatalf("a golden value moved by 1e-3 still passed: %+v", rep.Outputs)
	}
}

// loadLeNet5 loads a version directory of lenet5 with its manifest.
func loadLeNet5(t *testing.T, dir string) (*tfmodels.Model, manifest.Manifest) {
	t.Helper()
	man, err := readManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tfmodels.Load(dir, tfmodels.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, man
}

// Verify runs the golden batch through a model already loaded (as a plugin
// holds it) and reports how many samples it compared.
func TestVerifyComparesTheGoldenBatchOnALoadedModel(t *testing.T) {
	dir := filepath.Join(modelRepo(t), "lenet5", "1")
	m, man := loadLeNet5(t, dir)
	rep, err := Verify(dir, m, man, 0)
	if err != nil {
		t.Fatal(err)
	}
	batch := int(mustNpy(t, filepath.Join(dir, "golden", "input_images.npy")).Shape[0])
	if batch < 2 || rep.Samples != batch || rep.Tolerance != Tolerance || len(rep.Outputs) != 1 || !rep.OK() || rep.Err() != nil {
		t.Fatalf("report %+v (err %v), want %d samples, 1 output, within %g", rep, rep.Err(), batch, Tolerance)
	}
	if d := rep.MaxAbsDiff(); d != rep.Outputs[0].MaxAbsDiff || d > Tolerance {
		t.Errorf("MaxAbsDiff %g, outputs %+v", d, rep.Outputs)
	}
}

// A difference is held to the tolerance given, and Err says which output,
// by how much and against what.
func TestVerifyHoldsOutputsToTheGivenTolerance(t *testing.T) {
	dir := copyVersion(t, "lenet5")
	moveLastValue(t, filepath.Join(dir, "golden", "output_logits.npy"), 1e-3)
	m, man := loadLeNet5(t, dir)
	rep, err := Verify(dir, m, man, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := `output "logits" differs from ` + filepath.Join(dir, "golden", "output_logits.npy") + ": max abs difference 0.001 > tolerance 0.0001"
	if rep.OK() || rep.Err() == nil || rep.Err().Error() != want {
		t.Fatalf("default tolerance: OK %v, Err %v; want %q", rep.OK(), rep.Err(), want)
	}
	if rep, err := Verify(dir, m, man, 1e-2); err != nil || !rep.OK() || rep.Tolerance != 1e-2 {
		t.Fatalf("tolerance 1e-2: %+v, %v", rep, err)
	}
}

// A version exported without golden/ has nothing to verify: no samples, no
// error. Check, a test of tfmodels, needs them.
func TestVerifyWithoutGoldenSamplesReportsNone(t *testing.T) {
	dir := copyVersion(t, "lenet5")
	if err := os.RemoveAll(filepath.Join(dir, "golden")); err != nil {
		t.Fatal(err)
	}
	m, man := loadLeNet5(t, dir)
	rep, err := Verify(dir, m, man, 0)
	if err != nil || rep.Samples != 0 || len(rep.Outputs) != 0 || rep.Err() != nil {
		t.Fatalf("got %+v, %v; want no samples and no error", rep, err)
	}
	if _, err := Check(dir); err == nil || !strings.Contains(err.Error(), "no golden samples") {
		t.Errorf("Check without golden/: %v", err)
	}
}

// The signature check must catch a misread dtype or shape.
func TestCheckCatchesASignatureReadDifferentlyFromTensorFlow(t *testing.T) {
	dir := copyVersion(t, "lenet5")
	p := filepath.Join(dir, "golden", "signatures.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to string }{{`"dtype": 1`, `"dtype": 2`}, {`32,`, `31,`}} {
		if !strings.Contains(string(b), tc.from) {
			t.Fatalf("signatures.json has no %q", tc.from)
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(b), tc.from, tc.to, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Check(dir); err == nil || !strings.Contains(err.Error(), "TensorFlow") {
			t.Errorf("reference changed %s -> %s: Check returned %v", tc.from, tc.to, err)
		}
	}
}

// LeNet-5 classifies scikit-learn's digits test split (never seen in
// training) through tfmodels, normalising raw pixels as edgeinfer.toml says.
func TestLeNet5ClassifiesTheDigitsTestSplit(t *testing.T) {
	dir := filepath.Join(modelRepo(t), "lenet5", "1")
	man, err := readManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	images := mustNpy(t, filepath.Join(dir, "golden", "digits_test_images.npy"))
	pixels, err := images.Uint8s()
	if err != nil {
		t.Fatal(err)
	}
	labels, err := mustNpy(t, filepath.Join(dir, "golden", "digits_test_labels.npy")).Int64s()
	if err != nil {
		t.Fatal(err)
	}
	n := len(labels)
	if n < 400 || len(pixels) != n*32*32 {
		t.Fatalf("%d labels and %d pixels: want a 32x32 test split of at least 400 digits", n, len(pixels))
	}
	m, err := tfmodels.Load(dir, tfmodels.Options{IntraOpThreads: 2, InterOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.Runner(man.Signature, []string{man.Input.Key}, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	x, err := tfmodels.NewTensor(tfmodels.Float32, int64(n), 32, 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	xs, _ := tfmodels.Data[float32](x)
	for i, p := range pixels {
		xs[i] = float32((float64(p)*man.Input.Scale - man.Input.Mean[0]) / man.Input.Std[0])
	}
	outs, err := r.Run(x)
	if err != nil {
		t.Fatal(err)
	}
	defer outs[0].Close()
	logits, _ := tfmodels.Data[float32](outs[0])
	classes := len(man.Labels)
	correct := 0
	for i := 0; i < n; i++ {
		row := logits[i*classes : (i+1)*classes]
		best := 0
		for c := range row {
			if row[c] > row[best] {
				best = c
			}
		}
		if man.Labels[best] == labelName(labels[i]) {
			correct++
		}
	}
	acc := float64(correct) / float64(n)
	t.Logf("LeNet-5 digits test accuracy %.4f (%d/%d)", acc, correct, n)
	if acc < 0.95 {
		t.Errorf("accuracy %.4f < 0.95", acc)
	}
}

func labelName(digit int64) string { return string(rune('0' + digit)) }

func mustNpy(t *testing.T, path string) *npy.Array {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// realModels are what scripts/real-models.sh imports: real pretrained TF.js
// models, each with golden outputs from TF.js itself on real photos.
var realModels = map[string]string{"emotion": "classify", "centernet": "detect_rows", "selfie": "segment", "faceres": "embed"}

// Each real model imported from TF.js, loaded through the C API, gives the
// outputs TF.js gave on the real photos within the tolerance its manifest
// states (set from the difference between two TF.js backends), and the
// tolerance is tighter than the outputs' own spread, so it checks something.
func TestRealModelsImportedFromTFJSMatchTheOriginalOnRealPhotos(t *testing.T) {
	repo := os.Getenv("EDGEINFER_REAL_MODELS")
	if repo == "" {
		t.Fatal("EDGEINFER_REAL_MODELS is not set (make test sets it to models-real, made by make models-real)")
	}
	for name, task := range realModels {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(repo, name, "1")
			rep, err := Check(dir)
			if err != nil {
				t.Fatal(err)
			}
			man, err := manifest.Read(dir)
			if err != nil {
				t.Fatal(err)
			}
			if man.Task != task || man.Source.Format != "tfjs" || man.Validation.Tolerance <= 0 {
				t.Fatalf("manifest: task %q, source %+v, validation %+v", man.Task, man.Source, man.Validation)
			}
			if want := math.Max(Tolerance, man.Validation.Tolerance); rep.Samples < 2 || rep.Tolerance != want {
				t.Fatalf("%d samples checked within %g; want >= 2 real photos within %g", rep.Samples, rep.Tolerance, want)
			}
			if err := rep.Err(); err != nil {
				t.Fatal(err)
			}
			for _, o := range rep.Outputs {
				a, err := npy.Read(filepath.Join(dir, "golden", "output_"+o.Key+".npy"))
				if err != nil {
					t.Fatal(err)
				}
				v, err := a.Float32s()
				if err != nil {
					t.Fatal(err)
				}
				lo, hi := math.Inf(1), math.Inf(-1)
				for _, x := range v {
					lo, hi = math.Min(lo, float64(x)), math.Max(hi, float64(x))
				}
				t.Logf("%s: %d real photos, max |C API - TF.js| = %.2g, tolerance %.2g, values in [%.3g, %.3g]", o.Key, rep.Samples, o.MaxAbsDiff, o.Tolerance, lo, hi)
				if o.Tolerance >= (hi-lo)/10 {
					t.Fatalf("%s: tolerance %g is not small against the outputs' range %g", o.Key, o.Tolerance, hi-lo)
				}
			}
		})
	}
}
