package e2e

// Vetting versions before they load, end to end: a repository whose
// versions must be signed ([models] trusted_keys), a crafted version whose
// graph reads a file (the op deny-list), and a version edgeinfer-import
// signs. In each, a refused version never gets a process, its reason is in
// the model state and a version_rejected event, and version 1 keeps
// answering.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// edgeinferd runs the edgeinferd built for the tests with args and returns
// its standard output.
func edgeinferd(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "edgeinferd"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("edgeinferd %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// vetKey makes a key pair with `edgeinferd keygen` in dir and returns the
// private key file and a trusted_keys file holding the public key.
func vetKey(t *testing.T, dir, name string) (key, trusted string) {
	t.Helper()
	key, trusted = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".trusted")
	line := edgeinferd(t, "keygen", "-out", key, name)
	if err := os.WriteFile(trusted, []byte("# who may publish models\n"+line), 0o644); err != nil {
		t.Fatal(err)
	}
	return key, trusted
}

// vetRejected waits for version's version_rejected event and its failed
// state, checks both say every word, and that version 1 still serves in
// the process old.
func vetRejected(t *testing.T, p *proc, w *watcher, model, version string, old reloadServed, words ...string) int {
	t.Helper()
	ev, at := reloadWaitEvent(t, p, w, 0, payload.EventVersionRejected, model, version, 60*time.Second)
	var st payload.ModelState
	waitFor(t, p, 10*time.Second, "version "+version+" failed in the model state", func() bool {
		st, _ = w.model(t, model)
		return st.Versions[version].State == payload.StateFailed
	})
	for _, word := range words {
		if !strings.Contains(ev.Message, word) || !strings.Contains(st.Versions[version].Reason, word) {
			t.Fatalf("version %s: the event and the state should say %q:\nevent: %s\nstate: %s", version, word, ev.Message, st.Versions[version].Reason)
		}
	}
	if st.Serving != old.version || st.Versions[old.version].PID != old.pid {
		t.Fatalf("version %s should still serve in pid %d: %+v", old.version, old.pid, st)
	}
	if n := reloadCountEvents(t, reloadSnapshot(w), payload.EventVersionLoading, model, version); n != 0 {
		t.Fatalf("version %s was loaded %d times; a refused version gets no process", version, n)
	}
	return at
}

// vetKeepsAnswering waits for n more results of pipeline main from
// version 1 after message at.
func vetKeepsAnswering(t *testing.T, p *proc, w *watcher, at, n int) {
	t.Helper()
	waitFor(t, p, 60*time.Second, fmt.Sprintf("%d more results from version 1", n), func() bool {
		return reloadResultsSince(t, w, at, "main", "1") >= n
	})
}

func TestASignedRepositoryServesOnlyVersionsSignedByATrustedKeyAndUnchanged(t *testing.T) {
	keys := t.TempDir()
	key, trusted := vetKey(t, keys, "release")
	other, _ := vetKey(t, keys, "stranger")
	repo := t.TempDir()
	modelDir := filepath.Join(repo, "lenet5")
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		t.Fatal(err)
	}
	zoo := filepath.Join(models(t), "lenet5", "1")
	stage := func(version string, sign string, spoil func(t *testing.T, dir string)) {
		dir := reloadStageVersion(t, zoo, modelDir, version, relabel("v"+version+"-"), nil)
		if sign != "" {
			edgeinferd(t, "sign", "-key", sign, dir)
		}
		if spoil != nil {
			spoil(t, dir)
		}
		if err := os.Rename(dir, filepath.Join(modelDir, version)); err != nil {
			t.Fatal(err)
		}
	}
	stage("1", key, nil)

	p, w := run(t, setup{broker: mosquitto.Start(t), repo: repo, models: reloadModels + fmt.Sprintf("\ntrusted_keys = %q", trusted),
		sensors: reloadMqttSensor(t, "main"), extra: reloadMainPipeline})
	w.serving(t, p, "lenet5", "main")
	old := reloadServingNow(t, w, "lenet5")
	if old.version != "1" {
		t.Fatalf("version %s serves, want the signed version 1", old.version)
	}
	reloadFeedMain(t, w, digits(t))
	vetKeepsAnswering(t, p, w, 0, 10)

	// Unsigned.
	stage("2", "", nil)
	at := vetRejected(t, p, w, "lenet5", "2", old, "/lenet5/2/edgeinfer.sig: missing: the version is not signed")
	vetKeepsAnswering(t, p, w, at, 20)

	// Signed, then one byte of the variables changed.
	stage("3", key, func(t *testing.T, dir string) {
		path := filepath.Join(dir, "variables", "variables.data-00000-of-00001")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	at = vetRejected(t, p, w, "lenet5", "3", old,
		"/lenet5/3/variables/variables.data-00000-of-00001: sha256 differs from the signed one (changed after signing)")
	vetKeepsAnswering(t, p, w, at, 20)

	// Signed by a key trusted_keys does not hold.
	stage("4", other, nil)
	at = vetRejected(t, p, w, "lenet5", "4", old, "which trusted_keys does not hold")
	vetKeepsAnswering(t, p, w, at, 20)
	if got := reloadVersionsOf(t, reloadSnapshot(w), "main"); len(got) != 1 || got["1"] == 0 {
		t.Fatalf("results by version while 2, 3 and 4 were refused: %v", got)
	}

	// A version signed by the trusted key is served.
	from := len(reloadSnapshot(w))
	stage("5", key, nil)
	_, at = reloadWaitEvent(t, p, w, from, payload.EventVersionServing, "lenet5", "5", 60*time.Second)
	waitFor(t, p, 60*time.Second, "results from version 5", func() bool { return reloadResultsSince(t, w, at, "main", "5") >= 10 })
	for _, m := range reloadSnapshot(w)[at:] {
		r, ok := reloadResultAt(t, m, "main")
		if !ok || r.Model.Version != "5" {
			continue
		}
		var out reloadClassTop
		if err := json.Unmarshal(r.Output, &out); err != nil || len(out.Top) == 0 || !strings.HasPrefix(out.Top[0].Label, "v5-") {
			t.Fatalf("a result of version 5 with output %s (%v), want v5- labels", r.Output, err)
		}
	}
}

func TestAVersionWhoseGraphReadsAFileIsRejectedBeforeAnyProcessLoadsIt(t *testing.T) {
	repo := reloadRepo(t, "lenet5")
	p, w := reloadStartMain(t, repo, "", "1")
	old := reloadServingNow(t, w, "lenet5")
	reloadFeedMain(t, w, digits(t))
	vetKeepsAnswering(t, p, w, 0, 10)

	// The crafted version reads a file outside its folder; it is made
	// elsewhere and moved in as version 2.
	secret := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(secret, []byte("not for models"), 0o600); err != nil {
		t.Fatal(err)
	}
	crafted := maliciousRepo(t, secret)
	if err := os.Rename(filepath.Join(crafted, "malicious", "1"), filepath.Join(repo, "lenet5", "2")); err != nil {
		t.Fatal(err)
	}
	at := vetRejected(t, p, w, "lenet5", "2", old, "/lenet5/2/saved_model.pb: op ReadFile (node \"ReadFile\" in function __inference_serve_",
		"reads files: denied", `allow it with [serving.lenet5] allow_ops = ["ReadFile"]`)
	vetKeepsAnswering(t, p, w, at, 30)
	time.Sleep(2500 * time.Millisecond) // a rescan: the version is not vetted nor loaded again
	if n := reloadCountEvents(t, reloadSnapshot(w), payload.EventVersionRejected, "lenet5", "2"); n != 1 {
		t.Fatalf("%d version_rejected events for version 2, want 1", n)
	}
	if got := reloadVersionsOf(t, reloadSnapshot(w), "main"); len(got) != 1 || got["1"] == 0 {
		t.Fatalf("results by version while version 2 is refused: %v", got)
	}

	// edgeinferd -check, which loads versions too, refuses it the same way.
	config := p.cmd.Args[2]
	check := exec.Command(filepath.Join(binDir, "edgeinferd"), "-check", "-config", config)
	if out, err := check.CombinedOutput(); err == nil || !strings.Contains(string(out), "version 2: refused before loading: ") ||
		!strings.Contains(string(out), "op ReadFile") {
		t.Fatalf("edgeinferd -check: %v, want it to refuse version 2 for ReadFile:\n%s", err, out)
	}

	// allow_ops in a reloaded config vets the version again: now it is
	// let through to a plugin process.
	b, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, append(b, "\n[serving.lenet5]\nallow_ops = [\"ReadFile\"]\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	from := len(reloadSnapshot(w))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloadWaitEvent(t, p, w, from, payload.EventVersionLoading, "lenet5", "2", 60*time.Second)
}

func TestAVersionEdgeinferImportSignsIsServedByADaemonThatTrustsTheKey(t *testing.T) {
	tools := t.TempDir()
	key, trusted := vetKey(t, tools, "importer")
	tfmodels := filepath.Join(binDir, "tfmodels")
	if out, err := exec.Command("go", "build", "-o", tfmodels, "github.com/edgeinfer/edgeinfer/tfmodels/cmd/tfmodels").CombinedOutput(); err != nil {
		t.Fatalf("go build tfmodels: %v\n%s", err, out)
	}
	labels := filepath.Join(tools, "labels.txt")
	if err := os.WriteFile(labels, []byte("0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	imp := exec.Command(filepath.Join("..", "..", "tools", "import", "edgeinfer-import"), "--repo", repo, "--name", "lenet5",
		"--labels", labels, "--sign-key", key, "--edgeinferd", filepath.Join(binDir, "edgeinferd"), "--tfmodels", tfmodels,
		filepath.Join(models(t), "lenet5", "1"))
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("edgeinfer-import: %v\n%s", err, out)
	}
	if out := edgeinferd(t, "verify", "-keys", trusted, filepath.Join(repo, "lenet5", "1")); !strings.HasPrefix(out, "ok ") {
		t.Fatalf("edgeinferd verify: %s", out)
	}
	p, w := run(t, setup{broker: mosquitto.Start(t), repo: repo, models: reloadModels + fmt.Sprintf("\ntrusted_keys = %q", trusted),
		sensors: reloadMqttSensor(t, "main"), extra: reloadMainPipeline})
	if vs := w.serving(t, p, "lenet5", "main"); vs.Validation == nil || vs.Validation.Samples == 0 {
		t.Fatalf("the imported version serves unvalidated: %+v", vs)
	}
	reloadFeedMain(t, w, digits(t))
	vetKeepsAnswering(t, p, w, 0, 10)
}
