package sdk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgeinfer/edgeinfer/plugins/sdk/taskpb"
)

// The test binary doubles as a plugin: started with EDGEINFER_SDK_TEST=1 it
// serves echoTask instead of running the tests.
func TestMain(m *testing.M) {
	if os.Getenv("EDGEINFER_SDK_TEST") == "1" {
		Serve(&echoTask{crash: func() { os.Exit(3) }})
		return
	}
	os.Exit(m.Run())
}

// echoTask returns what it saw of a frame (its pipeline's options, a digest
// of the pixels, how many calls were in it at once), refuses frames with a
// zero width and options containing "bad", fails Validate for the model
// "drifted", crashes on seq 999 and blocks on seq 998 until its ctx ends.
type echoTask struct {
	crash     func() // seq 999: the process dies
	model     string
	tolerance float64
	pipelines map[string]json.RawMessage
	inflight  atomic.Int32
}

func (e *echoTask) Load(_ context.Context, req LoadRequest) (ModelInfo, error) {
	if req.Model == "broken" {
		return ModelInfo{}, fmt.Errorf("model %s: cannot load", req.ModelDir)
	}
	e.model, e.tolerance = req.Model, req.Tolerance
	return ModelInfo{Task: "echo", Signature: "serving_default", InputShape: []int64{-1, 4, 4, 3}, Labels: 2}, nil
}

func (e *echoTask) Configure(_ context.Context, pipelines map[string]json.RawMessage) error {
	for name, opts := range pipelines {
		if strings.Contains(string(opts), "bad") {
			return fmt.Errorf("pipeline %s: option bad is not allowed", name)
		}
	}
	e.pipelines = pipelines
	return nil
}

func (e *echoTask) Validate(context.Context) (Validation, error) {
	if e.model == "drifted" {
		return Validation{}, fmt.Errorf(`output "logits" differs: max abs difference 0.5 > tolerance %g`, e.tolerance)
	}
	return Validation{Samples: 8, MaxAbsDiff: 1e-6, Tolerance: e.tolerance}, nil
}

// echo is echoTask's output.
type echo struct {
	Model    string
	Pipeline string
	Options  json.RawMessage
	Seq      uint64
	Sensor   string
	Source   string
	Time     time.Time
	SHA256   string
	Inflight int32
}

func (e *echoTask) Infer(ctx context.Context, f Frame) (Result, error) {
	inflight := e.inflight.Add(1)
	defer e.inflight.Add(-1)
	switch f.Seq {
	case 999:
		e.crash()
	case 998:
		select {
		case <-ctx.Done():
		case <-time.After(time.Hour):
		}
		return Result{}, errors.New("blocked call ended")
	}
	opts, ok := e.pipelines[f.Pipeline]
	if !ok {
		return Result{}, fmt.Errorf("pipeline %q is not configured", f.Pipeline)
	}
	if f.Width == 0 || len(f.RGB) != f.Width*f.Height*3 {
		return Result{}, fmt.Errorf("%w: %dx%d with %d bytes", ErrBadFrame, f.Width, f.Height, len(f.RGB))
	}
	sum := sha256.Sum256(f.RGB)
	out, _ := json.Marshal(echo{Model: e.model, Pipeline: f.Pipeline, Options: opts, Seq: f.Seq,
		Sensor: f.Sensor, Source: f.Source, Time: f.Time, SHA256: hex.EncodeToString(sum[:]), Inflight: inflight})
	return Result{Output: out, Timings: Timings{Inference: 1234}, Images: map[string][]byte{"corner": slices.Clone(f.RGB[:3])}}, nil
}

// Close writes the file EDGEINFER_SDK_TEST_CLOSED names, if any: the test
// of Stop looks for it.
func (e *echoTask) Close() error {
	if path := os.Getenv("EDGEINFER_SDK_TEST_CLOSED"); path != "" {
		return os.WriteFile(path, []byte("closed"), 0o644)
	}
	return nil
}

// Command takes {"say": text} for a configured pipeline and says it back.
// The confinement tests probe what the process may do with {"read": file},
// {"write": file}, {"connect": host:port}, {"unix": address},
// {"signal": pid} and {"exec": program}: the answer is "ok" or the error.
func (e *echoTask) Command(_ context.Context, pipeline string, command json.RawMessage) (string, error) {
	if _, ok := e.pipelines[pipeline]; !ok {
		return "", fmt.Errorf("pipeline %q is not configured", pipeline)
	}
	var c struct {
		Say     string `json:"say"`
		Read    string `json:"read"`
		Write   string `json:"write"`
		Connect string `json:"connect"`
		Unix    string `json:"unix"`   // a socket's address ("@name": abstract)
		Signal  int    `json:"signal"` // a pid, sent signal 0
		Exec    string `json:"exec"`   // a program, run
	}
	if err := json.Unmarshal(command, &c); err != nil {
		return "", fmt.Errorf("say what? (%s)", command)
	}
	var err error
	switch {
	case c.Say != "":
		return pipeline + " says " + c.Say, nil
	case c.Read != "":
		_, err = os.ReadFile(c.Read)
	case c.Write != "":
		err = os.WriteFile(c.Write, []byte("written by the plugin"), 0o644)
	case c.Connect != "" || c.Unix != "":
		network, addr := "tcp", c.Connect
		if c.Unix != "" {
			network, addr = "unix", c.Unix
		}
		var conn net.Conn
		if conn, err = net.DialTimeout(network, addr, 5*time.Second); err == nil {
			conn.Close()
		}
	case c.Signal != 0:
		err = syscall.Kill(c.Signal, 0)
	case c.Exec != "":
		err = exec.Command(c.Exec).Run()
	default:
		return "", fmt.Errorf("say what? (%s)", command)
	}
	if err != nil {
		return err.Error(), nil
	}
	return "ok", nil
}

// ready loads model m into p and configures pipeline cam, as the daemon would.
func ready(t *testing.T, p Process) Process {
	t.Helper()
	t.Cleanup(p.Kill)
	if _, err := p.Load(context.Background(), LoadRequest{Model: "m", ModelDir: "/models/m/1", Tolerance: 1e-3}); err != nil {
		t.Fatal(err)
	}
	if err := p.Configure(context.Background(), map[string]json.RawMessage{"cam": json.RawMessage(`{"k":1}`)}); err != nil {
		t.Fatal(err)
	}
	return p
}

func startEcho(t *testing.T, copyPixels bool) *Plugin {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(Options{Path: exe, Env: []string{"EDGEINFER_SDK_TEST=1"}, CopyPixels: copyPixels, Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	ready(t, p)
	return p
}

// startFake is the echo task in a Fake; seq 999 crashes the Fake.
func startFake(t *testing.T) (*Fake, *echoTask) {
	t.Helper()
	task := &echoTask{}
	f := NewFake(task)
	task.crash = f.Crash
	ready(t, f)
	return f, task
}

// eachProcess runs test on a real plugin process and on a Fake: the Fake
// is the daemon's test harness, so it must behave as the real one does.
func eachProcess(t *testing.T, test func(t *testing.T, p Process)) {
	t.Run("plugin", func(t *testing.T) { test(t, startEcho(t, false)) })
	t.Run("fake", func(t *testing.T) {
		f, _ := startFake(t)
		test(t, f)
	})
}

func frame(seq uint64, w, h int) Frame {
	rgb := make([]byte, w*h*3)
	for i := range rgb {
		rgb[i] = byte(i*7 + int(seq))
	}
	f := Frame{Pipeline: "cam", Seq: seq, Width: w, Height: h, RGB: rgb}
	if seq%2 == 0 { // odd frames: no sensor, source or time (zero values travel as such)
		f.Sensor, f.Source = "porch", fmt.Sprintf("porch#%d", seq)
		f.Time = time.Date(2026, 12, 6, 4, 0, int(seq), 123456789, time.UTC)
	}
	return f
}

// inferEcho runs f and decodes the echo; the task's image (the first
// pixel) must have travelled with it.
func inferEcho(t *testing.T, p Process, f Frame) (echo, Timings) {
	t.Helper()
	res, err := p.Infer(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 1 || !bytes.Equal(res.Images["corner"], f.RGB[:3]) {
		t.Fatalf("images %v, want corner = %v", res.Images, f.RGB[:3])
	}
	var out echo
	if err := json.Unmarshal(res.Output, &out); err != nil {
		t.Fatal(err)
	}
	return out, res.Timings
}

// blockedInfer starts a frame that blocks in the task (seq 998) and gives it
// time to get there; the channel gets its error.
func blockedInfer(p Process) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := p.Infer(context.Background(), frame(998, 4, 4))
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	return done
}

// exitedSoon checks the blocked call returns ErrPluginExited (not hung:
// nobody's deadline passed) within 5 s of what ended the process.
func exitedSoon(t *testing.T, blocked <-chan error, after string) {
	t.Helper()
	select {
	case err := <-blocked:
		if !errors.Is(err, ErrPluginExited) || errors.Is(err, ErrHung) {
			t.Errorf("the blocked call: got %v, want ErrPluginExited", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the blocked call did not return after %s", after)
	}
}

func TestPixelsAndWhereAndWhenReachThePluginIntactThroughSharedMemoryAndInline(t *testing.T) {
	for _, copyPixels := range []bool{false, true} {
		t.Run(fmt.Sprintf("copy=%v", copyPixels), func(t *testing.T) {
			p := startEcho(t, copyPixels)
			// Growing sizes make the shared buffer grow and the plugin re-map it.
			for i, size := range [][2]int{{4, 4}, {640, 480}, {32, 32}, {1920, 1080}, {640, 480}} {
				f := frame(uint64(i+1), size[0], size[1])
				out, timings := inferEcho(t, p, f)
				want := sha256.Sum256(f.RGB)
				if out.SHA256 != hex.EncodeToString(want[:]) || out.Seq != f.Seq || out.Model != "m" {
					t.Fatalf("frame %d (%dx%d): plugin saw %+v", i, size[0], size[1], out)
				}
				if out.Sensor != f.Sensor || out.Source != f.Source || !out.Time.Equal(f.Time) {
					t.Fatalf("frame %d: the plugin saw sensor %q source %q time %v, sent %q %q %v",
						i, out.Sensor, out.Source, out.Time, f.Sensor, f.Source, f.Time)
				}
				if timings.Inference != 1234 {
					t.Fatalf("timings did not travel: %+v", timings)
				}
			}
		})
	}
}

// Every call's own error comes back with its message; Infer's keeps
// ErrBadFrame; none is taken for a dead or hung process, which still serves.
func TestErrorsKeepTheirKind(t *testing.T) {
	eachProcess(t, func(t *testing.T, p Process) {
		ctx := context.Background()
		_, err := p.Infer(ctx, Frame{Pipeline: "cam", Seq: 1, Width: 0, Height: 5, RGB: []byte{1, 2, 3}})
		if !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), "0x5 with 3 bytes") {
			t.Fatalf("bad frame: got %v", err)
		}
		_, err = p.Infer(ctx, frame(1, 4, 4))
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Infer(ctx, Frame{Pipeline: "door", Seq: 1, Width: 4, Height: 4, RGB: make([]byte, 48)})
		if err == nil || errors.Is(err, ErrBadFrame) || err.Error() != `pipeline "door" is not configured` {
			t.Fatalf("unknown pipeline: got %v", err)
		}
		err = p.Configure(ctx, map[string]json.RawMessage{"cam": json.RawMessage(`{}`), "door": json.RawMessage(`{"bad":1}`)})
		if err == nil || err.Error() != "pipeline door: option bad is not allowed" {
			t.Fatalf("configure error: got %v", err)
		}
		v, err := p.Validate(ctx)
		if err != nil || v != (Validation{Samples: 8, MaxAbsDiff: 1e-6, Tolerance: 1e-3}) {
			t.Fatalf("validation %+v, %v (the tolerance comes from Load)", v, err)
		}
		if _, err := p.Load(ctx, LoadRequest{Model: "broken", ModelDir: "/models/broken/1"}); err == nil || err.Error() != "model /models/broken/1: cannot load" {
			t.Fatalf("load error: got %v", err)
		}
		if _, err := p.Load(ctx, LoadRequest{Model: "drifted", Tolerance: 1e-4}); err != nil {
			t.Fatal(err)
		}
		_, err = p.Validate(ctx)
		if err == nil || err.Error() != `output "logits" differs: max abs difference 0.5 > tolerance 0.0001` {
			t.Fatalf("validate error: got %v", err)
		}
		for _, kind := range []error{ErrPluginExited, ErrHung, ErrBadFrame} {
			if errors.Is(err, kind) {
				t.Errorf("a task's refusal is taken for %v", kind)
			}
		}
		if p.Exited() {
			t.Fatal("the process died on an ordinary error")
		}
		// It still serves after all these errors, with the set Configure kept.
		if out, _ := inferEcho(t, p, frame(2, 8, 8)); string(out.Options) != `{"k":1}` {
			t.Fatalf("after errors: %+v", out)
		}
	})
}

// One process serves several pipelines, each frame with its own
// pipeline's options, from calls that come at once.
func TestFramesUseTheirPipelinesOptionsOneCallAtATime(t *testing.T) {
	eachProcess(t, func(t *testing.T, p Process) {
		opts := map[string]json.RawMessage{"cam": json.RawMessage(`{"k":1}`), "door": json.RawMessage(`{"k":2}`)}
		if err := p.Configure(context.Background(), opts); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				f := frame(uint64(i), 16, 8)
				f.Pipeline = []string{"cam", "door"}[i%2]
				res, err := p.Infer(context.Background(), f)
				if err != nil {
					t.Error(err)
					return
				}
				var out echo
				if err := json.Unmarshal(res.Output, &out); err != nil {
					t.Error(err)
				}
				if out.Pipeline != f.Pipeline || string(out.Options) != string(opts[f.Pipeline]) || out.Seq != f.Seq || out.Inflight != 1 {
					t.Errorf("frame %d for %s: the task saw %+v", f.Seq, f.Pipeline, out)
				}
			})
		}
		wg.Wait()
	})
}

// A process that died is reported as exited, to the call that was in it
// and to every later one.
func TestADeadPluginIsReportedAsExited(t *testing.T) {
	eachProcess(t, func(t *testing.T, p Process) {
		if _, err := p.Infer(context.Background(), frame(999, 4, 4)); !errors.Is(err, ErrPluginExited) {
			t.Fatalf("the call that crashed it: got %v, want ErrPluginExited", err)
		}
		if !p.Exited() {
			t.Fatal("Exited() is false")
		}
		for _, err := range []error{
			p.Configure(context.Background(), nil),
			func() error { _, err := p.Infer(context.Background(), frame(5, 4, 4)); return err }(),
			func() error { _, err := p.Validate(context.Background()); return err }(),
		} {
			if !errors.Is(err, ErrPluginExited) || errors.Is(err, ErrHung) {
				t.Errorf("a later call: got %v, want ErrPluginExited", err)
			}
		}
	})
	t.Run("sigkill", func(t *testing.T) {
		p := startEcho(t, false)
		syscall.Kill(p.Pid(), syscall.SIGKILL)
		if _, err := p.Infer(context.Background(), frame(5, 4, 4)); !errors.Is(err, ErrPluginExited) {
			t.Fatalf("got %v, want ErrPluginExited", err)
		}
		if !p.Exited() {
			t.Fatal("Exited() is false")
		}
	})
}

// waitFor polls cond for up to 2 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i == 200 {
			t.Fatalf("still not %s after 2s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isHung checks err is a hung call's: ErrHung, ErrPluginExited and ctx's reason.
func isHung(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrHung) || !errors.Is(err, ErrPluginExited) || !strings.Contains(err.Error(), context.DeadlineExceeded.Error()) {
		t.Fatalf("got %v, want ErrHung and ErrPluginExited with the deadline", err)
	}
}

// A call still in the task when its deadline passes kills the process.
func TestACallPastItsDeadlineKillsTheProcess(t *testing.T) {
	eachProcess(t, func(t *testing.T, p Process) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := p.Infer(ctx, frame(998, 4, 4))
		isHung(t, err)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("returned after %s", took)
		}
		if !p.Exited() {
			t.Error("Exited() is false after a hung call")
		}
		if _, err := p.Infer(context.Background(), frame(1, 4, 4)); !errors.Is(err, ErrPluginExited) || errors.Is(err, ErrHung) {
			t.Errorf("the next call: %v", err)
		}
	})
}

// A stopped plugin (SIGSTOP) answers nothing: every kind of call gives up
// at its deadline, and the process is SIGKILLed (go-plugin's own Kill would
// wait for it to shut down).
func TestAStoppedPluginIsKilledAtTheDeadline(t *testing.T) {
	for name, call := range map[string]func(ctx context.Context, p *Plugin) error{
		"infer":     func(ctx context.Context, p *Plugin) error { _, err := p.Infer(ctx, frame(1, 64, 64)); return err },
		"validate":  func(ctx context.Context, p *Plugin) error { _, err := p.Validate(ctx); return err },
		"configure": func(ctx context.Context, p *Plugin) error { return p.Configure(ctx, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			p := startEcho(t, false)
			inferEcho(t, p, frame(1, 4, 4)) // the frame stream is open
			if err := syscall.Kill(p.Pid(), syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			// The signal is delivered asynchronously: wait until every
			// thread is stopped (state T, field 3).
			waitFor(t, "every thread stopped", func() bool {
				for _, state := range threadStat(t, p.Pid(), 3) {
					if state != "T" {
						return false
					}
				}
				return true
			})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			isHung(t, call(ctx, p))
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("returned after %s", took)
			}
			if !p.Exited() {
				t.Error("Exited() is false")
			}
			proc := fmt.Sprintf("/proc/%d", p.Pid())
			waitFor(t, proc+" gone", func() bool { _, err := os.Stat(proc); return os.IsNotExist(err) })
		})
	}
}

// Kill does not wait for the call in progress: that call returns at once
// with ErrPluginExited (not hung: nobody's deadline passed). A call waiting
// behind it for its turn gives up at its own deadline and kills nothing.
func TestKillDuringABlockedCallReturnsPromptly(t *testing.T) {
	eachProcess(t, func(t *testing.T, p Process) {
		blocked := blockedInfer(p)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := p.Validate(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrHung) || errors.Is(err, ErrPluginExited) || p.Exited() {
			t.Fatalf("a call waiting for its turn: %v (exited %v)", err, p.Exited())
		}

		start := time.Now()
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(p.Kill)
		}
		exitedSoon(t, blocked, "Kill")
		wg.Wait()
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("Kill took %s", took)
		}
		if !p.Exited() {
			t.Error("Exited() is false after Kill")
		}
		p.Kill() // again: nothing happens
	})
}

// threadStat is field n (1-based, as in proc(5)) of /proc/<pid>/task/<tid>/stat
// for each thread of pid.
func threadStat(t *testing.T, pid, n int) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	stat := map[string]string{}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread ended
		}
		// Fields after the command name (in parentheses) start at field 3.
		stat[task.Name()] = strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))[n-3]
	}
	return stat
}

// SetNice reaches every thread of the plugin, not only its main one.
func TestSetNiceRenicesEveryThread(t *testing.T) {
	p := startEcho(t, false)
	const nice = 19 // the field of stat
	if before := threadStat(t, p.Pid(), nice); len(before) < 2 {
		t.Fatalf("the plugin has %d threads; the test needs several", len(before))
	}
	if err := p.SetNice(7); err != nil {
		t.Fatal(err)
	}
	after := threadStat(t, p.Pid(), nice)
	for tid, n := range after {
		if n != "7" {
			t.Errorf("thread %s: nice %s, want 7 (all: %v)", tid, n, after)
		}
	}
	inferEcho(t, p, frame(1, 4, 4)) // still serving
	p.Kill()
	if err := p.SetNice(5); !errors.Is(err, ErrPluginExited) {
		t.Errorf("SetNice after Kill: %v", err)
	}
}

func TestKillRemovesTheSharedBufferAndThePrivateFolder(t *testing.T) {
	p := startEcho(t, false)
	if _, err := p.Infer(context.Background(), frame(1, 64, 64)); err != nil {
		t.Fatal(err)
	}
	path := p.shm.path
	if _, err := os.Stat(path); err != nil || filepath.Dir(path) != filepath.Join(p.dir, framesDir) || filepath.Dir(p.dir) != shmDir() {
		t.Fatalf("shared buffer %q (private folder %q): %v", path, p.dir, err)
	}
	p.Kill()
	for _, left := range []string{path, p.dir} {
		if _, err := os.Stat(left); !os.IsNotExist(err) {
			t.Fatalf("%s left behind: %v", left, err)
		}
	}
}

func TestAPluginWithAnotherProtocolVersionIsRefused(t *testing.T) {
	exe, _ := os.Executable()
	old := Handshake.ProtocolVersion
	Handshake.ProtocolVersion = old + 1
	defer func() { Handshake.ProtocolVersion = old }()
	p, err := Start(Options{Path: exe, Env: []string{"EDGEINFER_SDK_TEST=1"}})
	if err == nil {
		p.Kill()
		t.Fatal("a plugin speaking another protocol version was accepted")
	}
	if !strings.Contains(err.Error(), "version") {
		t.Fatalf("error does not say why: %v", err)
	}
}

// A plugin runs TensorFlow's Eigen kernels unless the daemon's environment
// or the options choose (pluginEnv).
func TestPluginsGetEigenKernelsUnlessTheEnvironmentChooses(t *testing.T) {
	has := func(env []string, kv string) bool { return slices.Contains(env, kv) }
	for _, tc := range []struct {
		name          string
		daemon, extra []string
		want          string
		count         int
	}{
		{"nothing set", []string{"PATH=/bin"}, nil, KernelsEnv + "=0", 1},
		{"the daemon chose oneDNN", []string{KernelsEnv + "=1"}, nil, KernelsEnv + "=1", 1},
		{"the options chose oneDNN", nil, []string{KernelsEnv + "=1"}, KernelsEnv + "=1", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := pluginEnv(tc.daemon, tc.extra)
			n := 0
			for _, kv := range env {
				if strings.HasPrefix(kv, KernelsEnv+"=") {
					n++
				}
			}
			if !has(env, tc.want) || n != tc.count {
				t.Errorf("env %q: want %s once", env, tc.want)
			}
			for _, kv := range append(tc.daemon, tc.extra...) {
				if !has(env, kv) {
					t.Errorf("env %q lost %s", env, kv)
				}
			}
		})
	}
}

// A command reaches the task of a pipeline and its answer comes back; the
// task's refusal comes back as its message.
func TestCommandsReachTheTaskAndItsAnswerComesBack(t *testing.T) {
	eachProcess(t, func(t *testing.T, p Process) {
		ctx := context.Background()
		msg, err := p.Command(ctx, "cam", json.RawMessage(`{"say":"hello"}`))
		if err != nil || msg != "cam says hello" {
			t.Fatalf("got %q, %v; want \"cam says hello\"", msg, err)
		}
		_, err = p.Command(ctx, "door", json.RawMessage(`{"say":"hello"}`))
		if err == nil || !strings.Contains(err.Error(), `pipeline "door" is not configured`) || errors.Is(err, ErrNoCommands) {
			t.Fatalf("a command for another pipeline: got %v", err)
		}
		// The process still serves frames after a refused command.
		if _, err := p.Infer(ctx, frame(2, 4, 4)); err != nil {
			t.Fatal(err)
		}
	})
}

// plain is a task without commands.
type plain struct{ Task }

// A task that takes no commands answers ErrNoCommands, in a Fake and from
// the gRPC server (Unimplemented, which the client turns into it).
func TestATaskWithoutCommandsSaysSo(t *testing.T) {
	f := NewFake(plain{&echoTask{}})
	defer f.Kill()
	if _, err := f.Command(context.Background(), "cam", json.RawMessage(`{}`)); !errors.Is(err, ErrNoCommands) {
		t.Errorf("fake: got %v, want ErrNoCommands", err)
	}
	_, err := (&server{impl: plain{&echoTask{}}}).Command(context.Background(), &taskpb.CommandRequest{Pipeline: "cam"})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("server: got %v, want Unimplemented", err)
	}
}

// Stop lets the task close (a plugin that keeps state saves it then), and
// the process ends; Kill does not close it. The Fake does the same.
func TestStopClosesTheTaskAndKillDoesNot(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, stop := range []bool{true, false} {
		marker := filepath.Join(t.TempDir(), "closed")
		p, err := Start(Options{Path: exe, Env: []string{"EDGEINFER_SDK_TEST=1", "EDGEINFER_SDK_TEST_CLOSED=" + marker}})
		if err != nil {
			t.Fatal(err)
		}
		ready(t, p)
		start := time.Now()
		if stop {
			p.Stop()
		} else {
			p.Kill()
		}
		_, statErr := os.Stat(marker)
		if closed := statErr == nil; closed != stop || !p.Exited() {
			t.Errorf("stop=%v: task closed %v, exited %v", stop, closed, p.Exited())
		}
		if took := time.Since(start); took > StopTimeout {
			t.Errorf("stop=%v took %v: the plugin ended by itself, within StopTimeout", stop, took)
		}
		p.Kill() // after Stop: nothing more happens
	}
	closer := &closeRecorder{}
	f := NewFake(closer)
	f.Stop()
	if !closer.closed || !f.Exited() {
		t.Errorf("fake: closed %v, exited %v", closer.closed, f.Exited())
	}
}

// closeRecorder records its Close.
type closeRecorder struct {
	echoTask
	closed bool
}

func (c *closeRecorder) Close() error {
	c.closed = true
	return nil
}
