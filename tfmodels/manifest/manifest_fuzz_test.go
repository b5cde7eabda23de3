package manifest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzReadAndValidate writes arbitrary bytes as edgeinfer.toml: Read
// returns a manifest or an error naming the file, Validate an error or
// nil, never a panic; and what Validate passes has a known task, a
// signature and no empty label.
func FuzzReadAndValidate(f *testing.F) {
	// Every manifest of the exported zoo and of the imported real models.
	var paths []string
	for _, env := range []string{"EDGEINFER_MODELS", "EDGEINFER_REAL_MODELS"} {
		if dir := os.Getenv(env); dir != "" {
			more, _ := filepath.Glob(filepath.Join(dir, "*", "*", File))
			paths = append(paths, more...)
		}
	}
	if len(paths) == 0 {
		f.Fatal("no manifest to seed with: point EDGEINFER_MODELS at the exported model repository (make test does)")
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("task = \"classify\"\nsignature = \"serving_default\"\nlabels = [\"\"]\n[validation]\ntolerance = nan\n"))
	dir := f.TempDir()
	path := filepath.Join(dir, File)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Read(dir)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path+": ") {
				t.Fatalf("the error does not name the file: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			return
		}
		if !slices.Contains(Tasks, m.Task) || m.Signature == "" || slices.Contains(m.Labels, "") {
			t.Fatalf("valid: task %q, signature %q, labels %q", m.Task, m.Signature, m.Labels)
		}
	})
}
