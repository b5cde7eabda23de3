package tfmodels_test

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// zooModels are the tiny exports `make models` writes (tfmodels/zoo/export.py REGISTRY).
var zooModels = []string{
	"alexnet", "facenet", "faster_rcnn", "fcn16s", "fcn32s", "fcn8s", "googlenet", "lenet5",
	"mask_rcnn", "resnet50", "siamese", "unet", "vgg16", "vgg16_fcn", "video_lstm", "yolov3",
}

// modelRepo is the exported tiny zoo; make test sets EDGEINFER_MODELS.
func modelRepo(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEINFER_MODELS")
	if dir == "" {
		dir = "../models"
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("model repository %s missing: run `make models` (or make test): %v", dir, err)
	}
	return dir
}

// manifest is the part of edgeinfer.toml these tests read.
type manifest struct {
	Task      string   `toml:"task"`
	Signature string   `toml:"signature"`
	Labels    []string `toml:"labels"`
	Input     struct {
		Key   string    `toml:"key"`
		DType string    `toml:"dtype"`
		Scale float64   `toml:"scale"`
		Mean  []float64 `toml:"mean"`
		Std   []float64 `toml:"std"`
	} `toml:"input"`
}

func readManifest(t *testing.T, dir string) manifest {
	t.Helper()
	var m manifest
	if _, err := toml.DecodeFile(filepath.Join(dir, "edgeinfer.toml"), &m); err != nil {
		t.Fatalf("edgeinfer.toml: %v", err)
	}
	return m
}

// TestZooModelsMatchPythonGoldenOutputs runs each exported tiny model on its
// golden input through the C API and compares with Python TensorFlow's output.
func TestZooModelsMatchPythonGoldenOutputs(t *testing.T) {
	repo := modelRepo(t)
	for _, name := range zooModels {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(repo, name, "1")
			man := readManifest(t, dir)
			m, err := tfmodels.Load(dir, tfmodels.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			sig, err := m.Signature(man.Signature)
			if err != nil {
				t.Fatal(err)
			}
			in, ok := sig.Input(man.Input.Key)
			if !ok || in.DType.String() != man.Input.DType {
				t.Fatalf("edgeinfer.toml input %q %s does not match the signature's inputs %v", man.Input.Key, man.Input.DType, sig.Inputs)
			}

			inputs := map[string]*tfmodels.Tensor{}
			for _, info := range sig.Inputs {
				tt, err := tfmodels.FromNpy(readNpy(t, filepath.Join(dir, "golden", "input_"+info.Key+".npy")))
				if err != nil {
					t.Fatal(err)
				}
				defer tt.Close()
				inputs[info.Key] = tt
			}
			outs, err := m.Run(man.Signature, inputs)
			if err != nil {
				t.Fatal(err)
			}
			for _, info := range sig.Outputs {
				got := outs[info.Key]
				want := readNpy(t, filepath.Join(dir, "golden", "output_"+info.Key+".npy"))
				if !equalShape(got.Shape(), want.Shape) {
					t.Errorf("%s: shape %v, Python %v", info.Key, got.Shape(), want.Shape)
					continue
				}
				d := maxAbsDiff(t, got, want)
				t.Logf("%s %v: max |Go - Python| = %.3g", info.Key, got.Shape(), d)
				if d > 1e-4 {
					t.Errorf("%s: max abs difference from Python %g > 1e-4", info.Key, d)
				}
				got.Close()
			}
		})
	}
}

// TestZooHasNoUnexpectedModels keeps zooModels in step with the exporter.
func TestZooHasNoUnexpectedModels(t *testing.T) {
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

// TestLeNet5ClassifiesTheDigitsTestSplit classifies scikit-learn's digits
// test split (never seen in training) through tfmodels, normalising the raw
// pixels as edgeinfer.toml says, and checks accuracy against the true labels.
func TestLeNet5ClassifiesTheDigitsTestSplit(t *testing.T) {
	dir := filepath.Join(modelRepo(t), "lenet5", "1")
	man := readManifest(t, dir)
	images, err := readNpy(t, filepath.Join(dir, "golden", "digits_test_images.npy")).Uint8s()
	if err != nil {
		t.Fatal(err)
	}
	labels, err := readNpy(t, filepath.Join(dir, "golden", "digits_test_labels.npy")).Int64s()
	if err != nil {
		t.Fatal(err)
	}
	n := len(labels)
	if n < 400 || len(images) != n*32*32 {
		t.Fatalf("%d labels and %d pixels: want a 32x32 test split of at least 400 digits", n, len(images))
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
	for i, p := range images {
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
		if int64(best) == labels[i] {
			correct++
		}
	}
	acc := float64(correct) / float64(n)
	t.Logf("LeNet-5 digits test accuracy %.4f (%d/%d)", acc, correct, n)
	if acc < 0.95 {
		t.Errorf("accuracy %.4f < 0.95", acc)
	}
}

func readNpy(t *testing.T, path string) *npy.Array {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// maxAbsDiff compares a tensor with a golden array of the same dtype.
func maxAbsDiff(t *testing.T, got *tfmodels.Tensor, want *npy.Array) float64 {
	t.Helper()
	var g, w []float64
	switch got.DType() {
	case tfmodels.Float32:
		gs, _ := tfmodels.Data[float32](got)
		ws, err := want.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		for i := range gs {
			g, w = append(g, float64(gs[i])), append(w, float64(ws[i]))
		}
	case tfmodels.Int64:
		gs, _ := tfmodels.Data[int64](got)
		ws, err := want.Int64s()
		if err != nil {
			t.Fatal(err)
		}
		for i := range gs {
			g, w = append(g, float64(gs[i])), append(w, float64(ws[i]))
		}
	case tfmodels.Int32:
		gs, _ := tfmodels.Data[int32](got)
		ws, err := want.Int32s()
		if err != nil {
			t.Fatal(err)
		}
		for i := range gs {
			g, w = append(g, float64(gs[i])), append(w, float64(ws[i]))
		}
	default:
		t.Fatalf("no comparison for dtype %s", got.DType())
	}
	d := 0.0
	for i := range g {
		if math.IsNaN(g[i]) || math.IsNaN(w[i]) {
			return math.Inf(1)
		}
		d = math.Max(d, math.Abs(g[i]-w[i]))
	}
	return d
}
