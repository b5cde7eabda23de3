package tfmodels

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// fixtures is written by testdata/make_fixtures.py (make test does it).
const fixtures = "testdata/fixtures"

func multiDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(fixtures, "multi")
	if _, err := os.Stat(filepath.Join(d, "saved_model.pb")); err != nil {
		t.Fatalf("fixture model missing (run `make test`, which runs testdata/make_fixtures.py): %v", err)
	}
	return d
}

func loadMulti(t *testing.T, opts Options) *Model {
	t.Helper()
	m, err := Load(multiDir(t), opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func readNpy(t *testing.T, path string) *npy.Array {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tensorFromFile(t *testing.T, path string) *Tensor {
	t.Helper()
	tt, err := FromNpy(readNpy(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	t.Cleanup(func() { tt.Close() })
	return tt
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		out = append(out, s.Text())
	}
	return out
}

func mustData[T Elem](t *testing.T, tt *Tensor) []T {
	t.Helper()
	d, err := Data[T](tt)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// wantError checks err wraps kind and that its message names every fragment.
func wantError(t *testing.T, err error, kind error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %v error, got nil", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("want %v error, got %v", kind, err)
	}
	t.Logf("error: %v", err)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *tfmodels.Error, got %T", err)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err, f)
		}
	}
}

func asError(err error, target **Error) bool { return errors.As(err, target) }
