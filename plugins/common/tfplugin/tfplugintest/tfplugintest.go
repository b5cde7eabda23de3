// Package tfplugintest holds what the TensorFlow plugins' tests share:
// versions with an edited edgeinfer.toml, a plugin's sample.conf checked
// against the manifests of the models it names, bad frames, a frame's
// decoded output and golden .npy files.
package tfplugintest

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// EditedCopy copies the version in dir with its edgeinfer.toml changed by
// a one-line sed-style substitution s/old/new/: old anchored with ^ (and
// ending in .*) replaces the first line starting with it; otherwise every
// occurrence of old is replaced. \n in new splits lines.
func EditedCopy(t testing.TB, dir, sub string) string {
	t.Helper()
	parts := strings.Split(sub, "/")
	old, repl := parts[1], strings.ReplaceAll(parts[2], `\n`, "\n")
	dst := filepath.Join(t.TempDir(), "1")
	if err := os.CopyFS(dst, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dst, manifest.File))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	done := false
	for i, l := range lines {
		if strings.HasPrefix(old, "^") {
			prefix := strings.TrimSuffix(strings.TrimPrefix(old, "^"), ".*")
			if strings.HasPrefix(l, prefix) && !done {
				lines[i], done = repl, true
			}
		} else if strings.Contains(l, old) {
			lines[i], done = strings.ReplaceAll(l, old, repl), true
		}
	}
	if !done {
		t.Fatalf("%s: %q not found", manifest.File, old)
	}
	if err := os.WriteFile(filepath.Join(dst, manifest.File), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// CheckSampleConf reads the plugin's sample.conf and checks every
// pipeline's options with parse against the manifest of the model it
// names; dirs maps each model name to its version directory.
func CheckSampleConf(t *testing.T, dirs map[string]string, parse func(json.RawMessage, manifest.Manifest) error) {
	t.Helper()
	var conf struct {
		Pipelines map[string]struct {
			Model   string         `toml:"model"`
			Options map[string]any `toml:"options"`
		} `toml:"pipelines"`
	}
	if _, err := toml.DecodeFile("sample.conf", &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.Pipelines) == 0 {
		t.Fatal("sample.conf has no pipelines")
	}
	for name, p := range conf.Pipelines {
		dir, ok := dirs[p.Model]
		if !ok {
			t.Fatalf("pipeline %s: model %q is not one this test knows", name, p.Model)
		}
		man, err := manifest.Read(dir)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(p.Options)
		if err := parse(raw, man); err != nil {
			t.Errorf("pipeline %s: %v", name, err)
		}
	}
}

// Inferrer is what CheckBadFrames calls: a plugin's task.
type Inferrer interface {
	Infer(context.Context, sdk.Frame) (sdk.Result, error)
}

// CheckBadFrames checks that frames whose pixels do not match their size
// are sdk.ErrBadFrame for pipeline, and that a pipeline not configured is
// named. The caller then checks the task still serves.
func CheckBadFrames(t *testing.T, task Inferrer, pipeline string) {
	t.Helper()
	for _, f := range []sdk.Frame{
		{Pipeline: pipeline, Width: 10, Height: 10, RGB: make([]byte, 10)},
		{Pipeline: pipeline, Width: 10, Height: 10, RGB: make([]byte, 10*10*3-1)},
		{Pipeline: pipeline, Width: 0, Height: 10},
		{Pipeline: pipeline, Width: -1, Height: -1, RGB: make([]byte, 3)},
	} {
		if _, err := task.Infer(context.Background(), f); !errors.Is(err, sdk.ErrBadFrame) {
			t.Errorf("%dx%d with %d bytes: %v", f.Width, f.Height, len(f.RGB), err)
		}
	}
	_, err := task.Infer(context.Background(), sdk.Frame{Pipeline: "other", Width: 1, Height: 1, RGB: make([]byte, 3)})
	if err == nil || !strings.Contains(err.Error(), `pipeline "other" is not configured`) {
		t.Errorf("unknown pipeline: %v", err)
	}
}

// Infer runs f through task and decodes its output JSON into a T (the
// plugin's output type); an error fails the test.
func Infer[T any](t testing.TB, task Inferrer, f sdk.Frame) T {
	t.Helper()
	res, err := task.Infer(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(res.Output, &out); err != nil {
		t.Fatalf("output %s: %v", res.Output, err)
	}
	return out
}

// ReadFloats reads a float32 .npy file (a golden file): its values and shape.
func ReadFloats(t testing.TB, path string) ([]float32, []int64) {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v, a.Shape
}

// ModelDir is version 1 of model name in the repository the environment
// variable env names (EDGEINFER_MODELS, or EDGEINFER_REAL_MODELS for the
// imported real models); make test sets both. A missing version fails the
// test naming what installs it.
func ModelDir(t testing.TB, env, name string) string {
	t.Helper()
	repo := os.Getenv(env)
	if repo == "" {
		t.Fatalf("%s is not set: point it at the model repository (make test does)", env)
	}
	dir := filepath.Join(repo, name, "1")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("%v: make models, models-trained or models-real installs it", err)
	}
	return dir
}

// NoiseFrame is a w x h frame of seeded random pixels for pipeline.
func NoiseFrame(pipeline string, w, h int, seed uint64) sdk.Frame {
	r := rand.New(rand.NewPCG(seed, 1))
	rgb := make([]byte, w*h*3)
	for i := range rgb {
		rgb[i] = byte(r.IntN(256))
	}
	return sdk.Frame{Pipeline: pipeline, Width: w, Height: h, RGB: rgb}
}
