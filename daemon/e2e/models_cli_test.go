package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// `edgeinferd models` on the config of a running daemon lists every version
// in its repository with its task, signature, input and golden samples,
// the state the daemon gives it (from the retained model state), and, for
// a version that cannot be served, the file that is wrong.
func TestTheModelsCommandListsTheRepositoryWithTheRunningDaemonsStates(t *testing.T) {
	repo := t.TempDir()
	copyVersion(t, filepath.Join(models(t), "lenet5", "1"), filepath.Join(repo, "lenet5", "1"), nil)
	if err := os.MkdirAll(filepath.Join(repo, "lenet5", "2"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Version 2 is only a manifest: no saved_model.pb.
	b, err := os.ReadFile(filepath.Join(repo, "lenet5", "1", "edgeinfer.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "lenet5", "2", "edgeinfer.toml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := setup{broker: mosquitto.Start(t), sensors: dirSensor(t.TempDir()), repo: repo}
	cfgText := s.config(t, prefixOf(t))
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	p, w := run(t, s)
	w.serving(t, p, "lenet5", "digits")

	out, err := exec.Command(filepath.Join(binDir, "edgeinferd"), "models", "-config", cfg, "-json").Output()
	if err != nil {
		t.Fatalf("edgeinferd models: %v", err)
	}
	var rows []struct {
		Model, Version, Task, Signature, Input, Problem, State string
		Labels, Golden                                         int
	}
	if err := json.Unmarshal(out, &rows); err != nil || len(rows) != 2 {
		t.Fatalf("edgeinferd models -json: %v\n%s", err, out)
	}
	v2, v1 := rows[0], rows[1] // newest first
	t.Logf("%+v\n%+v", v2, v1)
	if v1.Model != "lenet5" || v1.Version != "1" || v1.Task != "classify" || v1.Signature != "serving_default" ||
		v1.Input != "32x32x1" || v1.Labels != 10 || v1.Golden < 1 || v1.State != "serving" || v1.Problem != "" {
		t.Errorf("version 1: %+v", v1)
	}
	if v2.Version != "2" || !strings.Contains(v2.Problem, filepath.Join("2", "saved_model.pb")) || v2.State == "serving" {
		t.Errorf("version 2 (no saved_model.pb): %+v", v2)
	}

	// Without a daemon on the broker: the repository alone, said so.
	text, err := exec.Command(filepath.Join(binDir, "edgeinferd"), "models", "-config", cfg, "-wait", "0").Output()
	if err != nil || !strings.Contains(string(text), "lenet5") || !strings.Contains(string(text), "serving_default") || strings.Contains(string(text), "serving\n") {
		t.Errorf("edgeinferd models -wait 0: %v\n%s", err, text)
	}
}
