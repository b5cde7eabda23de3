package main

// edgeinferd as systemd runs it (Type=notify, WatchdogSec=): the real
// daemon binary, with NOTIFY_SOCKET on a socket this test reads and
// WATCHDOG_USEC as systemd sets it. The plugin is this test binary (see
// TestMain): a pure-Go task that takes a second to load, records its
// validation, and never answers a frame whose file name says "stuck", so
// no TensorFlow is needed. systemctl cannot be used (no systemd as PID 1 in
// a test), so the test is systemd's side of the protocol itself.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
	"github.com/edgeinfer/edgeinfer/internal/sdnotify"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

// markerEnv names the folder where the test plugin records what it did; the
// plugin inherits it from edgeinferd's environment.
const markerEnv = "EDGEINFERD_TEST_MARKERS"

func TestMain(m *testing.M) {
	if os.Getenv(sdk.Handshake.MagicCookieKey) == sdk.Handshake.MagicCookieValue {
		sdk.Serve(&testTask{}) // started by edgeinferd as its plugin
		return
	}
	os.Exit(m.Run())
}

// testTask is the plugin's task: Load takes a second and records the
// plugin's view of the systemd variables (it must inherit none), Validate
// records that it ran, Infer never returns for a frame from a file whose
// name holds "stuck" (it does not even look at its context: a plugin
// wedged in native code).
type testTask struct{ model string }

func (k *testTask) Load(_ context.Context, req sdk.LoadRequest) (sdk.ModelInfo, error) {
	time.Sleep(time.Second)
	k.model = req.Model
	env := fmt.Sprintf("NOTIFY_SOCKET=%s WATCHDOG_USEC=%s", os.Getenv(sdnotify.SocketEnv), os.Getenv(sdnotify.WatchdogEnv))
	mark("loaded-"+k.model, env)
	return sdk.ModelInfo{Task: "classify", Description: "systemd test task"}, nil
}

func (k *testTask) Configure(context.Context, map[string]json.RawMessage) error { return nil }

func (k *testTask) Validate(context.Context) (sdk.Validation, error) {
	mark("validated-"+k.model, "")
	return sdk.Validation{}, nil
}

func (k *testTask) Infer(_ context.Context, f sdk.Frame) (sdk.Result, error) {
	if strings.Contains(f.Source, "stuck") {
		mark("wedged", f.Source)
		select {}
	}
	return sdk.Result{Output: json.RawMessage(`{"label":"ok"}`)}, nil
}

func mark(name, content string) {
	os.WriteFile(filepath.Join(os.Getenv(markerEnv), name), []byte(content), 0o644)
}

// service is one edgeinferd run as a notify service with a watchdog.
type service struct {
	t       *testing.T
	dir     string // inbox1, inbox2, markers, config.toml
	config  string
	broker  string
	prefix  string
	cmd     *exec.Cmd
	log     bytes.Buffer
	logMu   sync.Mutex
	exited  chan struct{}
	listen  *sdnotify.Listener
	mu      sync.Mutex
	notes   []sdnotify.Message
	arrived chan struct{}
}

func (s *service) Write(p []byte) (int, error) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.Write(p)
}

// configFor is a config with pipeline one on model a from inbox1 and, when
// both, pipeline two on model b from inbox2; each pipeline's timeout is
// long, so that edgeinferd does not kill a wedged plugin within the test.
func (s *service) configFor(both bool, stuckAfter string) string {
	c := fmt.Sprintf(`device = "sd"
plugin_dir = %q
stats_interval = "500ms"
[models]
repository = %q
settle = "100ms"
# The test's plugin writes markers into the test's folder, out of a
# confined plugin's reach.
confine = "off"
[mqtt]
broker = "embedded"
listen = %q
prefix = %q
[systemd]
stuck_after = %q
[sensors.inbox1]
kind = "dir"
path = %q
settle = "100ms"
[pipelines.one]
sensor = "inbox1"
model = "a"
timeout = "10m"
`, filepath.Join(s.dir, "bin"), filepath.Join(s.dir, "models"), s.broker, s.prefix, stuckAfter, filepath.Join(s.dir, "inbox1"))
	if both {
		c += fmt.Sprintf(`[sensors.inbox2]
kind = "dir"
path = %q
settle = "100ms"
[pipelines.two]
sensor = "inbox2"
model = "b"
timeout = "10m"
`, filepath.Join(s.dir, "inbox2"))
	}
	return c
}

// startService builds edgeinferd, lays out its plugin (this test binary)
// and two models, and starts it with NOTIFY_SOCKET and WATCHDOG_USEC=1 s.
func startService(t *testing.T, stuckAfter string) *service {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd") // short: a socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &service{t: t, dir: dir, broker: mosquitto.FreeAddr(t), prefix: "sdtest/" + t.Name(), exited: make(chan struct{}),
		arrived: make(chan struct{}, 1)}
	for _, d := range []string{"bin", "models", "inbox1", "inbox2", "markers"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	daemon := filepath.Join(dir, "edgeinferd")
	if out, err := exec.Command("go", "build", "-o", daemon, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build edgeinferd: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, self, filepath.Join(dir, "bin", "edgeinfer-classify"), 0o755)
	zoo := zooVersion(t)
	for _, m := range []string{"a", "b"} {
		for _, f := range []string{"saved_model.pb", "edgeinfer.toml", "variables/variables.index", "variables/variables.data-00000-of-00001"} {
			copyFile(t, filepath.Join(zoo, f), filepath.Join(dir, "models", m, "1", f), 0o644)
		}
	}
	s.config = filepath.Join(dir, "config.toml")
	if err := os.WriteFile(s.config, []byte(s.configFor(true, stuckAfter)), 0o644); err != nil {
		t.Fatal(err)
	}
	if s.listen, err = sdnotify.Listen(filepath.Join(dir, "notify")); err != nil {
		t.Fatal(err)
	}
	go s.collect()
	s.cmd = exec.Command(daemon, "-config", s.config)
	s.cmd.Env = append(os.Environ(), sdnotify.SocketEnv+"="+s.listen.Path(), sdnotify.WatchdogEnv+"=1000000",
		markerEnv+"="+filepath.Join(dir, "markers"))
	s.cmd.Stdout, s.cmd.Stderr = s, s
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.cmd.Process.Kill() // a stuck daemon cannot stop cleanly; its plugins die with it (Pdeathsig)
		<-s.exited
		s.listen.Close()
		if t.Failed() {
			s.logMu.Lock()
			t.Logf("edgeinferd log:\n%s", s.log.String())
			s.logMu.Unlock()
		}
	})
	return s
}

// zooVersion is lenet5's version folder in the exported tiny zoo: its files
// pass the repository's completeness check (the test plugin never reads
// them).
func zooVersion(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEINFER_MODELS")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "models")
	}
	v := filepath.Join(dir, "lenet5", "1")
	if _, err := os.Stat(filepath.Join(v, "saved_model.pb")); err != nil {
		t.Fatalf("%v: set EDGEINFER_MODELS to the exported tiny zoo (make models; make test sets it)", err)
	}
	return v
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// collect keeps every notification, as systemd's socket would get them.
func (s *service) collect() {
	for {
		m, err := s.listen.Next(time.Hour)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.notes = append(s.notes, m)
		s.mu.Unlock()
		select {
		case s.arrived <- struct{}{}:
		default:
		}
	}
}

// received returns the notifications so far.
func (s *service) received() []sdnotify.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sdnotify.Message(nil), s.notes...)
}

// await waits at most timeout for a notification after the first from
// that matches; it returns its index.
func (s *service) await(from int, timeout time.Duration, what string, match func(sdnotify.Message) bool) int {
	s.t.Helper()
	deadline := time.After(timeout)
	for {
		notes := s.received()
		for i := from; i < len(notes); i++ {
			if match(notes[i]) {
				return i
			}
		}
		select {
		case <-s.arrived:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			s.t.Fatalf("no %s within %s; got %q", what, timeout, states(notes[min(from, len(notes)):]))
		case <-s.exited:
			s.t.Fatalf("edgeinferd exited waiting for %s", what)
		}
	}
}

func states(ms []sdnotify.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.State)
	}
	return out
}

func has(kv string) func(sdnotify.Message) bool {
	return func(m sdnotify.Message) bool { return m.Has(kv) }
}

func statusHas(text string) func(sdnotify.Message) bool {
	return func(m sdnotify.Message) bool {
		v, ok := m.Value("STATUS")
		return ok && strings.Contains(v, text)
	}
}

// pings are the times of the WATCHDOG=1 received from index from on.
func (s *service) pings(from int) []time.Time {
	var at []time.Time
	notes := s.received()
	for _, m := range notes[min(from, len(notes)):] {
		if m.Has("WATCHDOG=1") {
			at = append(at, m.At)
		}
	}
	return at
}

// drop writes a small PNG into inbox as name, the way files should be
// dropped (written aside, renamed in).
func (s *service) drop(inbox, name string) {
	s.t.Helper()
	var b bytes.Buffer
	png.Encode(&b, image.NewRGBA(image.Rect(0, 0, 16, 16)))
	tmp := filepath.Join(s.dir, inbox, name+".part")
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, inbox, name)); err != nil {
		s.t.Fatal(err)
	}
}

// modelStates reads the retained model states from the broker.
func (s *service) modelStates(want int) map[string]payload.ModelState {
	s.t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + s.broker).SetClientID(fmt.Sprintf("sdtest-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.t.Fatalf("connect to the embedded broker: %v", tok.Error())
	}
	defer c.Disconnect(100)
	var mu sync.Mutex
	got := map[string]payload.ModelState{}
	tok := c.Subscribe(s.prefix+"/models/+", 1, func(_ paho.Client, m paho.Message) {
		var st payload.ModelState
		if json.Unmarshal(m.Payload(), &st) == nil {
			mu.Lock()
			got[st.Model] = st
			mu.Unlock()
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.t.Fatalf("subscribe: %v", tok.Error())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

// maxGap is the longest time between two pings, and from the last one to
// until.
func maxGap(pings []time.Time, until time.Time) time.Duration {
	var gap time.Duration
	for i := 1; i < len(pings); i++ {
		gap = max(gap, pings[i].Sub(pings[i-1]))
	}
	if len(pings) > 0 {
		gap = max(gap, until.Sub(pings[len(pings)-1]))
	}
	return gap
}

// READY=1 comes only once both models have loaded, warmed up and been
// validated, and then every model's retained state says it serves its
// pipeline; WATCHDOG=1 comes every half second (WATCHDOG_USEC=1s); every
// notification comes from the daemon itself (NotifyAccess=main), whose
// plugins inherit none of the variables. Then a frame wedges pipeline
// two's plugin: once it has been there stuck_after (1 s), the status says
// so and the pings stop, while pipeline one goes on serving; systemd would
// kill and restart the daemon.
func TestUnderSystemdReadyWaitsForTheModelsAndTheWatchdogStopsWhenAPipelineIsStuck(t *testing.T) {
	s := startService(t, "1s")
	started := time.Now()
	ready := s.await(0, 60*time.Second, "READY=1", has("READY=1"))
	readyAt := s.received()[ready].At
	for _, m := range []string{"a", "b"} {
		for _, step := range []string{"loaded-", "validated-"} {
			st, err := os.Stat(filepath.Join(s.dir, "markers", step+m))
			if err != nil {
				t.Fatalf("READY=1 came before model %s was %s: %v", m, strings.TrimSuffix(step, "-"), err)
			}
			if st.ModTime().After(readyAt) {
				t.Fatalf("model %s was %s at %v, after READY=1 at %v", m, strings.TrimSuffix(step, "-"), st.ModTime(), readyAt)
			}
		}
		env, _ := os.ReadFile(filepath.Join(s.dir, "markers", "loaded-"+m))
		if string(env) != "NOTIFY_SOCKET= WATCHDOG_USEC=" {
			t.Fatalf("the plugin of model %s inherited the protocol: %s", m, env)
		}
	}
	if readyAt.Sub(started) < time.Second {
		t.Fatalf("READY=1 %s after the start; the models take 1 s to load", readyAt.Sub(started))
	}
	for _, m := range s.received()[:ready] {
		if m.Has("READY=1") {
			t.Fatalf("READY=1 twice")
		}
	}
	states := s.modelStates(2)
	for model, pipeline := range map[string]string{"a": "one", "b": "two"} {
		st := states[model]
		if v := st.Versions[st.Serving]; st.Serving != "1" || v.State != payload.StateServing || len(v.Pipelines) != 1 || v.Pipelines[0] != pipeline {
			t.Fatalf("after READY=1, model %s's retained state: %+v", model, st)
		}
	}

	// The watchdog, while idle: every half WATCHDOG_USEC.
	time.Sleep(3 * time.Second)
	pings := s.pings(ready)
	if gap := maxGap(pings, time.Now()); len(pings) < 4 || gap > 900*time.Millisecond {
		t.Fatalf("%d WATCHDOG=1 in 3 s, longest gap %s; want one every 500ms, never 1s (WatchdogSec) without", len(pings), gap)
	}
	s.await(ready, 5*time.Second, "a status with the frame rate", statusHas("2 pipelines serving, 0.0 frames/s"))
	pid := s.cmd.Process.Pid
	for _, m := range s.received() {
		if m.PID != pid {
			t.Fatalf("%q came from pid %d, not edgeinferd's %d", m.State, m.PID, pid)
		}
	}

	// A frame that never leaves pipeline two's plugin.
	dropped := time.Now()
	s.drop("inbox2", "stuck.png")
	s.wedged()
	stuck := s.await(ready, 10*time.Second, "a STUCK status", statusHas("STUCK: pipeline two"))
	stuckAt := s.received()[stuck].At
	if stuckAt.Sub(dropped) < time.Second {
		t.Fatalf("stuck %s after the frame was dropped, before stuck_after (1s)", stuckAt.Sub(dropped))
	}
	s.drop("inbox1", "fine.png") // pipeline one is not held up
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(s.dir, "inbox1", "done", "fine.png")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pipeline one did not finish its frame while two was stuck")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond)
	if late := s.pings(stuck + 1); len(late) > 0 {
		t.Fatalf("%d WATCHDOG=1 after the STUCK status, the last %s after it", len(late), late[len(late)-1].Sub(stuckAt))
	}
	select {
	case <-s.exited:
		t.Fatal("edgeinferd exited")
	default:
	}

	// SIGTERM: STOPPING=1 (the stuck frame keeps it from finishing; the
	// cleanup kills it as systemd would after TimeoutStopSec).
	n := len(s.received())
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.await(n, 10*time.Second, "STOPPING=1", has("STOPPING=1"))
}

// A reload that has to wait for a frame that never ends holds the main
// loop up (stopping pipeline two waits for its frame in the plugin), and
// WATCHDOG=1 stops with it. Before the reload the frame has been in the
// plugin for seconds, under stuck_after (1h): slow is not stuck, the pings
// go on.
func TestUnderSystemdTheWatchdogStopsWhenTheMainLoopIsHeldUp(t *testing.T) {
	s := startService(t, "1h")
	ready := s.await(0, 60*time.Second, "READY=1", has("READY=1"))
	s.drop("inbox2", "stuck.png")
	s.wedged()
	time.Sleep(time.Second)
	before := len(s.received())
	time.Sleep(2 * time.Second)
	if pings := s.pings(before); len(pings) < 3 || len(s.pings(ready)) < 6 {
		t.Fatalf("%d WATCHDOG=1 in 2 s with a frame under stuck_after in the plugin; want one every 500ms", len(pings))
	}

	// Pipeline two removed: the reload waits for its frame, in the main loop.
	if err := os.WriteFile(s.config, []byte(s.configFor(false, "1h")), 0o644); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGHUP)
	reloading := time.Now()
	time.Sleep(500 * time.Millisecond) // a ping already on its way
	from := len(s.received())
	time.Sleep(2500 * time.Millisecond)
	if late := s.pings(from); len(late) > 0 {
		t.Fatalf("%d WATCHDOG=1 while the main loop waits in a reload; the last %s after the reload began", len(late), late[len(late)-1].Sub(reloading))
	}
	if strings.Contains(s.logText(), "reloaded") {
		t.Fatal("the reload finished: the main loop was not held up")
	}
}

func (s *service) logText() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// wedged waits until the test plugin has taken the stuck frame.
func (s *service) wedged() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(s.dir, "markers", "wedged")); err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatal("the stuck frame never reached the plugin")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
