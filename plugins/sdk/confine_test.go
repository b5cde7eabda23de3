package sdk

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/plugins/sdk/confine"
)

// needLandlock skips a test on a kernel that cannot confine (it is run on
// one that can: Landlock ABI 7).
func needLandlock(t *testing.T) {
	t.Helper()
	if err := confine.Check(); err != nil {
		t.Skip(err)
	}
}

// startEchoWith starts the test binary as the echo plugin with opts' Confine
// and Access, loaded and configured.
func startEchoWith(t *testing.T, opts Options) *Plugin {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	opts.Path, opts.Env, opts.Stderr = exe, []string{"EDGEINFER_SDK_TEST=1"}, os.Stderr
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	ready(t, p)
	return p
}

// probe asks the echo plugin to try something (echoTask.Command): "ok" or
// the error it met.
func probe(t *testing.T, p Process, what string, arg any) string {
	t.Helper()
	cmd, _ := json.Marshal(map[string]any{what: arg})
	msg, err := p.Command(context.Background(), "cam", cmd)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// The same plugin binary, once confined and once not: the confined one
// reads what it was granted and its frames, writes only its write folder,
// and reaches no other file (another process's /proc entry included), no
// TCP listener, no abstract unix socket, cannot signal the daemon and runs
// no program; the unconfined one does it all, so what stops the confined
// one is the confinement.
func TestAConfinedPluginReachesOnlyWhatItWasGranted(t *testing.T) {
	needLandlock(t)
	model, elsewhere, state := t.TempDir(), t.TempDir(), t.TempDir()
	secret := filepath.Join(elsewhere, "secret")
	for _, f := range []string{secret, filepath.Join(model, "saved_model.pb")} {
		if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	abstract, err := net.Listen("unix", "@edgeinfer-confine-test-"+filepath.Base(elsewhere))
	if err != nil {
		t.Fatal(err)
	}
	defer abstract.Close()
	for _, l := range []net.Listener{tcp, abstract} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	const denied = "permission denied"
	for _, tc := range []struct {
		name, what string
		arg        any
		// the answers unconfined and confined
		free, confined string
	}{
		{"read a file elsewhere", "read", secret, "ok", denied},
		{"read /etc/passwd", "read", "/etc/passwd", "ok", denied},
		{"read another process's /proc entry", "read", "/proc/1/cmdline", "ok", denied},
		{"read the model", "read", filepath.Join(model, "saved_model.pb"), "ok", "ok"},
		{"write into the model", "write", filepath.Join(model, "planted"), "ok", denied},
		{"write elsewhere", "write", filepath.Join(elsewhere, "planted"), "ok", denied},
		{"write the state", "write", filepath.Join(state, "clusters.json"), "ok", "ok"},
		{"connect over TCP", "connect", tcp.Addr().String(), "ok", denied},
		{"connect an abstract unix socket", "unix", abstract.Addr().String(), "ok", "operation not permitted"},
		{"signal the daemon", "signal", os.Getpid(), "ok", "operation not permitted"},
		{"run a program", "exec", "/bin/true", "ok", denied},
	} {
		for _, confined := range []bool{false, true} {
			want := tc.free
			if confined {
				want = tc.confined
			}
			t.Run(tc.name+map[bool]string{false: " unconfined", true: " confined"}[confined], func(t *testing.T) {
				p := startEchoWith(t, Options{Confine: confined, Access: Access{Read: []string{model}, Write: []string{state}}})
				if got := probe(t, p, tc.what, tc.arg); !strings.Contains(got, want) {
					t.Errorf("%s %v: got %q, want %q", tc.what, tc.arg, got, want)
				}
				// The frames still come through shared memory.
				f := frame(2, 32, 24)
				if out, _ := inferEcho(t, p, f); out.Seq != 2 {
					t.Errorf("frame: got seq %d", out.Seq)
				}
				os.Remove(filepath.Join(model, "planted"))
				os.Remove(filepath.Join(elsewhere, "planted"))
			})
		}
	}
}

// A confined plugin is granted the paths its pipelines' options name when
// it starts (a state folder is made first: Landlock grants only what
// exists); options naming another path later are refused before they reach
// it, naming the pipeline, the option and the path.
func TestAConfinedPluginIsNotSentOptionsNamingPathsItWasNotGranted(t *testing.T) {
	needLandlock(t)
	model, gallery, state := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "state")
	p := startEchoWith(t, Options{Confine: true, Access: AccessFor(model, map[string]json.RawMessage{
		"cam": json.RawMessage(`{"gallery":"` + gallery + `","state_dir":"` + state + `"}`)})})
	if st, err := os.Stat(state); err != nil || !st.IsDir() {
		t.Fatalf("the state folder was not made before the plugin started: %v", err)
	}
	ctx := context.Background()
	ok := json.RawMessage(`{"gallery":"` + filepath.Join(gallery, "people") + `","state_dir":"` + state + `"}`)
	if err := p.Configure(ctx, map[string]json.RawMessage{"cam": ok}); err != nil {
		t.Fatalf("options within the granted paths: %v", err)
	}
	other := t.TempDir()
	for _, tc := range []struct{ opts, want string }{
		{`{"gallery":"` + other + `"}`, "pipeline door: gallery " + other + " is out of reach"},
		// A folder granted read-only is no state_dir.
		{`{"state_dir":"` + gallery + `"}`, "pipeline door: state_dir " + gallery + " is out of reach"},
	} {
		err := p.Configure(ctx, map[string]json.RawMessage{"cam": ok, "door": json.RawMessage(tc.opts)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("options %s: got %v, want %q", tc.opts, err, tc.want)
		}
	}
	// The refused set changed nothing: cam still has its options.
	if out, _ := inferEcho(t, p, frame(1, 4, 4)); string(out.Options) != string(ok) {
		t.Errorf("cam's options after a refused set: %s", out.Options)
	}
}

// AccessFor grants the version read-only, the gallery and the reference
// image read-only and the state folder read-write, absolute, once each.
func TestAccessForGrantsTheVersionAndThePathsTheOptionsName(t *testing.T) {
	wd, _ := os.Getwd()
	a := AccessFor("/models/faces/3", map[string]json.RawMessage{
		"door":  json.RawMessage(`{"gallery":"galleries/staff","state_dir":"/var/lib/edgeinfer/door","threshold":0.6}`),
		"gate":  json.RawMessage(`{"gallery":"galleries/staff","verify":"/srv/ref.png"}`),
		"plain": json.RawMessage(`null`),
		"bad":   json.RawMessage(`{"gallery":`),
	})
	want := Access{
		Read:  []string{"/models/faces/3", "/srv/ref.png", filepath.Join(wd, "galleries/staff")},
		Write: []string{"/var/lib/edgeinfer/door"},
	}
	slices.Sort(want.Read)
	if !slices.Equal(a.Read, want.Read) || !slices.Equal(a.Write, want.Write) {
		t.Errorf("got %+v, want %+v", a, want)
	}
}

// A real task plugin (classify, linking TensorFlow) confined to its model
// version loads it, reproduces its golden samples and classifies a frame;
// the start time with and without confinement is logged (go test -v).
func TestAConfinedClassifyPluginLoadsValidatesAndRunsItsModel(t *testing.T) {
	needLandlock(t)
	models := os.Getenv("EDGEINFER_MODELS")
	if models == "" {
		t.Skip("EDGEINFER_MODELS is not set (make test sets it to the exported model repository)")
	}
	bin := filepath.Join(t.TempDir(), "edgeinfer-classify")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/edgeinfer/edgeinfer/plugins/classify").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	versions, err := filepath.Glob(filepath.Join(models, "lenet5", "[0-9]*"))
	if err != nil || len(versions) == 0 {
		t.Fatalf("no lenet5 version in %s", models)
	}
	dir := versions[len(versions)-1]
	for _, confined := range []bool{false, true} {
		began := time.Now()
		p, err := Start(Options{Path: bin, Stderr: os.Stderr, Confine: confined, Access: Access{Read: []string{dir}}})
		if err != nil {
			t.Fatal(err)
		}
		started := time.Since(began)
		ctx := context.Background()
		info, err := p.Load(ctx, LoadRequest{Model: "lenet5", Version: filepath.Base(dir), ModelDir: dir})
		if err != nil {
			p.Kill()
			t.Fatalf("confined %v: load: %v", confined, err)
		}
		loaded := time.Since(began)
		if err := p.Configure(ctx, map[string]json.RawMessage{"digits": nil}); err != nil {
			t.Fatal(err)
		}
		v, err := p.Validate(ctx)
		if err != nil || v.Samples == 0 {
			t.Fatalf("confined %v: validate: %+v %v", confined, v, err)
		}
		w, h := int(info.InputShape[2]), int(info.InputShape[1])
		res, err := p.Infer(ctx, Frame{Pipeline: "digits", Seq: 1, Width: w, Height: h, RGB: make([]byte, w*h*3)})
		if err != nil || !strings.Contains(string(res.Output), "label") {
			t.Fatalf("confined %v: infer: %s %v", confined, res.Output, err)
		}
		t.Logf("confined %v: process up in %v, model loaded %v after start, %d golden samples reproduced", confined, started, loaded, v.Samples)
		p.Stop()
	}
}
