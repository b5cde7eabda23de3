package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/pipeline"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/daemon/serving"
	"github.com/edgeinfer/edgeinfer/daemon/telemetry"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	_ "github.com/edgeinfer/edgeinfer/sensors/dir"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// nopTask is a plugin task that serves anything.
type nopTask struct{}

func (nopTask) Load(context.Context, sdk.LoadRequest) (sdk.ModelInfo, error) {
	return sdk.ModelInfo{}, nil
}
func (nopTask) Configure(context.Context, map[string]json.RawMessage) error { return nil }
func (nopTask) Validate(context.Context) (sdk.Validation, error)            { return sdk.Validation{}, nil }
func (nopTask) Infer(context.Context, sdk.Frame) (sdk.Result, error)        { return sdk.Result{}, nil }

type nopBus struct{}

func (nopBus) Publish(string, bool, []byte) {}

// commandDaemon is a daemon with its config and a lifecycle of fake
// processes running task and serving model m (versions 1, 2 and 3) for
// pipeline p, and nothing else.
func commandDaemon(t testing.TB, enabled bool, task sdk.Task) (*Daemon, *serving.Model) {
	t.Helper()
	dir := t.TempDir()
	plugins, models := filepath.Join(dir, "bin"), filepath.Join(dir, "models")
	for _, d := range []string{plugins, filepath.Join(models, "m"), filepath.Join(dir, "in")} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(filepath.Join(plugins, "edgeinfer-classify"), []byte("binary"), 0o755)
	src := `device = "t"
plugin_dir = "` + plugins + `"
[models]
repository = "` + models + `"
[commands]
enabled = ` + map[bool]string{true: "true", false: "false"}[enabled] + `
[sensors.in]
kind = "dir"
path = "` + filepath.Join(dir, "in") + `"
[pipelines.p]
sensor = "in"
model = "m"
`
	cfg, err := config.Parse(filepath.Join(dir, "config.toml"), src)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := New(cfg, log)
	d.tel = &telemetry.Publisher{Bus: nopBus{}, Prefix: "t", Logger: log}
	d.mgr = serving.New(serving.Config{PluginDir: plugins, CacheDir: t.TempDir(), Logger: log,
		Start:   func(string, sdk.Access) (sdk.Process, error) { return sdk.NewFake(task), nil },
		Publish: func(payload.ModelState) {}, Event: func(payload.Event) {}})
	t.Cleanup(d.mgr.Close)
	md := d.mgr.Model("m")
	md.SetPipelines(map[string]json.RawMessage{"p": nil})
	var vs []repo.Version
	for _, n := range []string{"3", "2", "1"} {
		vs = append(vs, repo.Version{Model: "m", Version: n, Num: int(n[0] - '0'), Dir: "/m/" + n, Fingerprint: n,
			Manifest: manifest.Manifest{Task: "classify"}})
	}
	md.SetVersions(vs)
	d.pipelines["p"] = &pipeRun{p: pipeline.New("p", pipeline.Settings{Timeout: 10 * time.Second}, router.NewQueue(1), md, pipeline.Env{})}
	return d, md
}

// servingVersion waits until md serves version.
func servingVersion(t testing.TB, md *serving.Model, version string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for md.State().Serving != version {
		if time.Now().After(deadline) {
			t.Fatalf("model serves %q, want %s", md.State().Serving, version)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCommandsPinRollBackAndUnpinAVersion(t *testing.T) {
	d, md := commandDaemon(t, true, nopTask{})
	servingVersion(t, md, "3")
	for _, step := range []struct {
		body, serves, says string
	}{
		{`{"id":"a","command":"pin","model":"m","version":"1"}`, "1", "model m pinned to version 1"},
		{`{"id":"b","command":"unpin","model":"m"}`, "3", "model m follows its config again"},
		{`{"id":"c","command":"rollback","model":"m"}`, "2", "model m rolled back to version 2 (held there until unpin)"},
		{`{"id":"d","command":"rollback","model":"m"}`, "1", "model m rolled back to version 1 (held there until unpin)"},
	} {
		r := d.command([]byte(step.body))
		if !r.OK || r.Message != step.says || r.ID == "" {
			t.Fatalf("%s: reply %+v", step.body, r)
		}
		servingVersion(t, md, step.serves)
	}
}

func TestCommandsThatCannotBeDoneAreRefusedSayingWhy(t *testing.T) {
	d, md := commandDaemon(t, true, nopTask{})
	servingVersion(t, md, "3")
	for _, tc := range []struct{ body, err string }{
		{`not json`, "the command is not JSON"},
		{`{"id":"x","command":"explode"}`, `unknown command "explode": one of reload, pin, unpin, rollback`},
		{`{"id":"x","command":"pin","model":"m"}`, "pin: version is required"},
		{`{"id":"x","command":"pin","model":"m","version":"9"}`, "model m has no version 9"},
		{`{"id":"x","command":"pin","model":"other","version":"1"}`, `pin: no pipeline uses model "other"`},
		{`{"id":"x","command":"rollback"}`, "rollback: model is required"},
	} {
		if r := d.command([]byte(tc.body)); r.OK || !strings.Contains(r.Error, tc.err) {
			t.Fatalf("%s: reply %+v, want an error with %q", tc.body, r, tc.err)
		}
	}
	if st := md.State(); st.Serving != "3" || st.Policy.Pinned != "" {
		t.Fatalf("a refused command changed the model: %+v", st)
	}
}

func TestCommandsAreRefusedUnlessEnabled(t *testing.T) {
	d, md := commandDaemon(t, false, nopTask{})
	servingVersion(t, md, "3")
	r := d.command([]byte(`{"id":"x","command":"pin","model":"m","version":"1"}`))
	if r.OK || !strings.Contains(r.Error, "commands are disabled") || r.ID != "x" {
		t.Fatalf("reply %+v", r)
	}
	if md.State().Policy.Pinned != "" {
		t.Fatal("a disabled command pinned the model")
	}
}

// sayTask takes commands: {"say": text} comes back as "<pipeline> heard <text>".
type sayTask struct{ nopTask }

func (sayTask) Command(_ context.Context, pipeline string, c json.RawMessage) (string, error) {
	var cmd struct {
		Say string `json:"say"`
	}
	if err := json.Unmarshal(c, &cmd); err != nil || cmd.Say == "" {
		return "", errors.New("say: nothing to say")
	}
	return pipeline + " heard " + cmd.Say, nil
}

// A command naming a pipeline goes, whole, to the task serving it; what
// the task says or refuses is the reply.
func TestACommandNamingAPipelineGoesToItsTask(t *testing.T) {
	d, md := commandDaemon(t, true, sayTask{})
	servingVersion(t, md, "3")
	r := d.command([]byte(`{"id":"e","command":"enrol","pipeline":"p","say":"alice"}`))
	if !r.OK || r.Message != "p heard alice" || r.ID != "e" || r.Command != "enrol" {
		t.Fatalf("reply %+v", r)
	}
	for _, tc := range []struct{ body, err string }{
		{`{"id":"x","command":"enrol","pipeline":"p"}`, "say: nothing to say"},
		{`{"id":"x","command":"enrol","pipeline":"nope","say":"a"}`, `no pipeline "nope"`},
	} {
		if r := d.command([]byte(tc.body)); r.OK || !strings.Contains(r.Error, tc.err) {
			t.Errorf("%s: reply %+v, want an error with %q", tc.body, r, tc.err)
		}
	}
}

func TestACommandForATaskThatTakesNoneIsRefusedSayingSo(t *testing.T) {
	d, md := commandDaemon(t, true, nopTask{})
	servingVersion(t, md, "3")
	r := d.command([]byte(`{"id":"x","command":"enrol","pipeline":"p"}`))
	if r.OK || !strings.Contains(r.Error, "pipeline p: its task (classify) takes no commands") {
		t.Fatalf("reply %+v", r)
	}
}
