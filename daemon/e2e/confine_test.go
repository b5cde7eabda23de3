package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
	"github.com/edgeinfer/edgeinfer/plugins/sdk/confine"
)

// maliciousRepo writes a model repository holding tfmodels/zoo/malicious.py's
// classify version "malicious" 1, whose serving signature reads the file
// at read (tf.io.read_file): it must be readable now, since its golden
// outputs are made by running the signature.
func maliciousRepo(t *testing.T, read string) string {
	t.Helper()
	py := os.Getenv("EDGEINFER_PYTHON")
	if py == "" {
		py = "../../.venv/bin/python"
	}
	py, err := filepath.Abs(py)
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	cmd := exec.Command(py, "-m", "tfmodels.zoo.malicious", "--out", repo, "--read", read)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tfmodels.zoo.malicious: %v\n%s", err, out)
	}
	return repo
}

// A model version whose graph reads a file outside its folder, let past the
// op deny-list (allow_ops), is stopped by the confinement of its plugin
// process: the read fails with the kernel's permission error naming the
// file, and the version is rejected. The same daemon with [models]
// confine = "off" serves the same version (its read succeeds: file modes
// do not stop it), so what stops it is the confinement.
func TestAConfinedPluginCannotReadAFileItsModelAsksForAndAnUnconfinedOneCan(t *testing.T) {
	if err := confine.Check(); err != nil {
		t.Skip(err)
	}
	secret := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(secret, []byte("not for models"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := maliciousRepo(t, secret)
	broker := mosquitto.Start(t)
	const pipeline = `
[pipelines.probe]
sensor = "inbox"
model = "malicious"

[serving.malicious]
allow_ops = ["ReadFile"]
`
	for _, mode := range []string{"auto", "off"} {
		t.Run("confine="+mode, func(t *testing.T) {
			inbox := t.TempDir()
			p, w := run(t, setup{broker: broker, sensors: dirSensor(inbox), extra: pipeline, repo: repo,
				models: fmt.Sprintf("confine = %q", mode)})
			if mode == "off" {
				w.serving(t, p, "malicious", "probe")
				dropDigits(t, inbox, digits(t)[:1])
				waitFor(t, p, 60*time.Second, "a result of the version that read the file", func() bool {
					return len(w.results(t, "probe")) == 1
				})
				return
			}
			var vs payload.VersionState
			waitFor(t, p, 60*time.Second, "version 1 rejected", func() bool {
				st, _ := w.model(t, "malicious")
				vs = st.Versions["1"]
				return vs.State == payload.StateFailed
			})
			if !strings.Contains(vs.Reason, secret) || !strings.Contains(strings.ToLower(vs.Reason), "permission denied") {
				t.Errorf("reason %q: want the kernel's permission error naming %s", vs.Reason, secret)
			}
			t.Logf("rejected: %s", vs.Reason)
		})
	}
}

// A confined plugin process is granted the galleries its pipelines name
// when it starts. A reload that adds a pipeline naming another gallery to
// the running process leaves that pipeline out, with the path in the model
// state's refused reasons, and the pipeline that was there keeps its
// process.
func TestAGalleryNamedAfterTheConfinedProcessStartedIsRefusedNamingThePath(t *testing.T) {
	if err := confine.Check(); err != nil {
		t.Skip(err)
	}
	repo, thr, _ := identFacenet(t)
	door, gate := t.TempDir(), t.TempDir()
	pipeline := func(name, gallery string) string {
		return fmt.Sprintf("\n[pipelines.%s]\nsensor = \"inbox\"\nmodel = \"ident_facenet\"\n[pipelines.%s.options]\ngallery = %q\nthreshold = %g\n",
			name, name, gallery, thr)
	}
	p, w := run(t, setup{broker: mosquitto.Start(t), repo: repo, sensors: dirSensor(t.TempDir()), extra: pipeline("door", door)})
	vs := w.serving(t, p, "ident_facenet", "door")

	config := p.cmd.Args[len(p.cmd.Args)-1]
	opsRewrite(t, config, func(s string) string { return s + pipeline("gate", gate) }, false)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var why string
	waitFor(t, p, 30*time.Second, "pipeline gate refused", func() bool {
		st, _ := w.model(t, "ident_facenet")
		why = st.Versions[st.Serving].Refused["gate"]
		return why != ""
	})
	if !strings.Contains(why, "pipeline gate: gallery "+gate+" is out of reach of the confined plugin process") {
		t.Errorf("refused: %q", why)
	}
	st, _ := w.model(t, "ident_facenet")
	if now := st.Versions[st.Serving]; now.PID != vs.PID || !slices.Contains(now.Pipelines, "door") || slices.Contains(now.Pipelines, "gate") {
		t.Errorf("after the reload: %+v, want door alone on pid %d", now, vs.PID)
	}
	t.Logf("refused: %s", why)
}
