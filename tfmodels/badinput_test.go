package tfmodels

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyDir copies a model directory so a test can damage the copy.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "model")
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func truncate(t *testing.T, path string, keep float64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:int(float64(len(b))*keep)], 0o644); err != nil {
		t.Fatal(err)
	}
}

func variablesData(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "variables", "variables.data-*"))
	if len(m) != 1 {
		t.Fatalf("want one variables data shard in %s, got %v", dir, m)
	}
	return m[0]
}

func TestLoadRejectsBrokenModelDirectories(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T) string // returns the directory to load
		opts   Options
		kind   error
		detail string
	}{
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, Options{}, ErrNotFound, "does not exist"},
		{"empty directory", func(t *testing.T) string { return t.TempDir() }, Options{}, ErrNotFound, "no saved_model.pb"},
		{"a file, not a directory", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "file")
			os.WriteFile(p, []byte("x"), 0o644)
			return p
		}, Options{}, ErrNotFound, "not a directory"},
		{"corrupt saved_model.pb", func(t *testing.T) string {
			d := copyDir(t, multiDir(t))
			os.WriteFile(filepath.Join(d, "saved_model.pb"), []byte("this is not a protobuf \x00\xff\xfe"), 0o644)
			return d
		}, Options{}, ErrInvalidModel, "loading with tags"},
		{"truncated saved_model.pb", func(t *testing.T) string {
			d := copyDir(t, multiDir(t))
			truncate(t, filepath.Join(d, "saved_model.pb"), 0.5)
			return d
		}, Options{}, ErrInvalidModel, "loading with tags"},
		{"empty saved_model.pb", func(t *testing.T) string {
			d := copyDir(t, multiDir(t))
			truncate(t, filepath.Join(d, "saved_model.pb"), 0)
			return d
		}, Options{}, ErrInvalidModel, ""},
		{"missing variables", func(t *testing.T) string {
			d := copyDir(t, multiDir(t))
			os.RemoveAll(filepath.Join(d, "variables"))
			return d
		}, Options{}, ErrInvalidModel, "variables/variables.index is missing"},
		{"truncated variables data", func(t *testing.T) string {
			d := copyDir(t, multiDir(t))
			truncate(t, variablesData(t, d), 0.3)
			return d
		}, Options{}, ErrInvalidModel, ""},
		{"corrupt variables index", func(t *testing.T) string {
			d := copyDir(t, multiDir(t))
			os.WriteFile(filepath.Join(d, "variables", "variables.index"), []byte("garbage"), 0o644)
			return d
		}, Options{}, ErrInvalidModel, ""},
		{"signature naming a missing operation", func(t *testing.T) string {
			return filepath.Join(fixtures, "bad_signature")
		}, Options{}, ErrInvalidModel, `graph has no operation "no_such_op"`},
		{"unknown tag", func(t *testing.T) string { return multiDir(t) }, Options{Tags: []string{"gpu-only"}}, ErrInvalidModel, "gpu-only"},
		{"negative thread count", func(t *testing.T) string { return multiDir(t) }, Options{IntraOpThreads: -1}, ErrInvalidArgument, "thread"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.setup(t)
			m, err := Load(dir, tc.opts)
			if err == nil {
				m.Close()
			}
			wantError(t, err, tc.kind, dir, tc.detail)
		})
	}
}

// Random byte damage to saved_model.pb must give an error or a model that
// loads, never a crash of the process. The seed is fixed, so the run is the
// same every time.
func TestLoadSurvivesRandomlyCorruptedSavedModels(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(multiDir(t), "saved_model.pb"))
	if err != nil {
		t.Fatal(err)
	}
	dir := copyDir(t, multiDir(t))
	rng := rand.New(rand.NewPCG(7, 7))
	failed := 0
	for i := 0; i < 40; i++ {
		b := append([]byte(nil), orig...)
		for n := 1 + rng.IntN(10); n > 0; n-- {
			b[rng.IntN(len(b))] = byte(rng.IntN(256))
		}
		if err := os.WriteFile(filepath.Join(dir, "saved_model.pb"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Load(dir, Options{})
		if err != nil {
			if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("corruption %d: want ErrInvalidModel naming %s, got %v", i, dir, err)
			}
			failed++
			continue
		}
		m.Close()
	}
	t.Logf("%d of 40 corrupted models were rejected with an error, the rest loaded", failed)
	if failed < 20 {
		t.Errorf("only %d of 40 corrupted models were rejected", failed)
	}
}

func TestRunRejectsBadInputsBeforeTensorFlowSeesThem(t *testing.T) {
	m := loadMulti(t, Options{})
	f := func(shape ...int64) *Tensor { return mustTensor(t, Float32, shape...) }
	tests := []struct {
		name      string
		signature string
		inputs    []*Tensor
		tensor    string
		detail    string
	}{
		{"wrong dtype", "serving_default", []*Tensor{mustTensor(t, Int32, 2, 3), f(2, 3)}, "x", "dtype int32, signature wants float32"},
		{"wrong rank", "serving_default", []*Tensor{f(2, 3), f(6)}, "y", "rank 1"},
		{"wrong size", "serving_default", []*Tensor{f(2, 4), f(2, 3)}, "x", "size 4 in dimension 1"},
		{"wrong batch", "fixed_batch", []*Tensor{f(2, 4)}, "x", "batch size 2"},
		{"too few inputs", "serving_default", []*Tensor{f(2, 3)}, "", "want 2 input tensors"},
		{"nil input", "serving_default", []*Tensor{f(2, 3), nil}, "y", "nil or closed"},
		{"closed input", "fixed_batch", []*Tensor{func() *Tensor { x := f(1, 4); x.Close(); return x }()}, "x", "nil or closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := m.Runner(tc.signature, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Run(tc.inputs...)
			wantError(t, err, ErrInvalidInput, m.Dir(), tc.signature, tc.tensor, tc.detail)
		})
	}
}

func TestRunReportsTensorFlowErrorsWithItsMessage(t *testing.T) {
	// The signature allows any batch for x and y, but x*y needs them equal:
	// only TensorFlow can see this, and its message must come back.
	m := loadMulti(t, Options{})
	r, err := m.Runner("serving_default", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Run(mustTensor(t, Float32, 2, 3), mustTensor(t, Float32, 3, 3))
	wantError(t, err, ErrRun, m.Dir(), "serving_default", "Incompatible shapes")
	var e *Error
	if ok := asError(err, &e); !ok || e.TFCode != 3 { // TF_INVALID_ARGUMENT
		t.Errorf("TF code %d, want 3 (INVALID_ARGUMENT)", e.TFCode)
	}
	// The model keeps working after a failed run.
	outs, err := r.Run(mustTensor(t, Float32, 1, 3), mustTensor(t, Float32, 1, 3))
	if err != nil {
		t.Fatalf("run after a failed run: %v", err)
	}
	for _, o := range outs {
		o.Close()
	}
}

func TestRunnerRejectsUnknownSignaturesAndTensors(t *testing.T) {
	m := loadMulti(t, Options{})
	_, err := m.Runner("predict_everything", nil, nil)
	wantError(t, err, ErrUnknownSignature, m.Dir(), "predict_everything", `"serving_default"`)
	_, err = m.Runner("serving_default", []string{"x", "z"}, nil)
	wantError(t, err, ErrUnknownTensor, "z", `"x", "y"`)
	_, err = m.Runner("serving_default", nil, []string{"quotient"})
	wantError(t, err, ErrUnknownTensor, "quotient", `"prod", "sum"`)
	_, err = m.Runner("serving_default", []string{"x"}, nil)
	wantError(t, err, ErrInvalidInput, "signature takes inputs")
	_, err = m.Runner("serving_default", []string{"x", "x"}, nil)
	wantError(t, err, ErrInvalidInput, "input named twice")
}
