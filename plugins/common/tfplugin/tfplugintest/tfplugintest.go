// Package tfplugintest holds what the TensorFlow plugins' tests share:
// versions with an edited edgeinfer.toml, and a plugin's sample.conf
// checked against the manifests of the models it names.
package tfplugintest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
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
