package repo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const manifestTOML = `task = "classify"
signature = "serving_default"
labels = ["a", "b"]
[input]
key = "images"
height = 8
width = 8
channels = 1
layout = "NHWC"
dtype = "float32"
resize = "stretch"
scale = 1.0
mean = [0.0]
std = [1.0]
[output]
logits = "logits"
softmax = true
`

// version makes <repo>/m/<v> with the given files ("variables" is a folder).
func version(t *testing.T, repo, v string, files ...string) {
	dir := filepath.Join(repo, "m", v)
	os.MkdirAll(dir, 0o755)
	for _, f := range files {
		var err error
		switch f {
		case "variables":
			err = os.Mkdir(filepath.Join(dir, f), 0o755)
		case "edgeinfer.toml":
			err = os.WriteFile(filepath.Join(dir, f), []byte(manifestTOML), 0o644)
		default:
			err = os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewestServesTheHighestCompleteVersion(t *testing.T) {
	repo := t.TempDir()
	all := []string{"saved_model.pb", "variables", "edgeinfer.toml"}
	version(t, repo, "2", all...)
	version(t, repo, "10", all...)                        // numeric order: 10 > 2
	version(t, repo, "11", "saved_model.pb", "variables") // still being copied
	version(t, repo, "latest", all...)                    // not a version number
	v, err := Newest(repo, "m")
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "10" || v.Model != "m" || !filepath.IsAbs(v.Dir) || v.Manifest.Task != "classify" {
		t.Fatalf("got %+v", v)
	}
}

func TestNewestExplainsWhyNothingIsServable(t *testing.T) {
	repo := t.TempDir()
	if _, err := Newest(repo, "m"); err == nil || !strings.Contains(err.Error(), "model m") {
		t.Fatalf("missing model: %v", err)
	}
	os.MkdirAll(filepath.Join(repo, "m"), 0o755)
	if _, err := Newest(repo, "m"); err == nil || !strings.Contains(err.Error(), "no numbered version folder") {
		t.Fatalf("no versions: %v", err)
	}
	version(t, repo, "1", "saved_model.pb", "variables")
	if _, err := Newest(repo, "m"); err == nil || !strings.Contains(err.Error(), "incomplete version") || !strings.Contains(err.Error(), "edgeinfer.toml") {
		t.Fatalf("incomplete: %v", err)
	}
}
