package serving

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// wait bounds every wait of the tests; nothing should take near as long.
const wait = 10 * time.Second

// script makes a fake plugin misbehave, for one version (whatever binary
// runs it) or for one binary (by its content, whatever version it runs).
type script struct {
	startErr     error             // Start fails (binary scripts only)
	loadErr      error             // Load fails
	crashLoad    bool              // the process dies during Load
	validateErr  error             // Validate fails
	configureErr error             // Configure refuses every set, naming no pipeline
	loadGate     chan struct{}     // Load waits until it is closed
	validateGate chan struct{}     // Validate waits until it is closed
	inferGate    chan struct{}     // Infer waits (hangs) until it is closed
	refuse       map[string]string // Configure refuses these pipelines, with why
}

// merge is s with what o sets on top.
func (s script) merge(o script) script {
	if o.startErr != nil {
		s.startErr = o.startErr
	}
	if o.loadErr != nil {
		s.loadErr = o.loadErr
	}
	if o.validateErr != nil {
		s.validateErr = o.validateErr
	}
	if o.configureErr != nil {
		s.configureErr = o.configureErr
	}
	if o.loadGate != nil {
		s.loadGate = o.loadGate
	}
	if o.validateGate != nil {
		s.validateGate = o.validateGate
	}
	if o.inferGate != nil {
		s.inferGate = o.inferGate
	}
	if o.refuse != nil {
		s.refuse = o.refuse
	}
	s.crashLoad = s.crashLoad || o.crashLoad
	return s
}

// harness runs a Manager over a plugin dir of dummy binaries, with fake
// plugin processes, and records what it publishes and does.
type harness struct {
	t       *testing.T
	plugins string
	cache   string
	mgr     *Manager
	stamp   atomic.Int64  // makes each written binary's mtime differ
	done    chan struct{} // closed when the test ends

	mu       sync.Mutex
	states   []payload.ModelState
	events   []payload.Event
	procs    []*proc
	log      []string // "start N", "kill N", "event TYPE VERSION", in order
	versions map[string]script
	binaries map[string]script
}

// newHarness starts a manager (and its Run) whose plugin dir holds
// edgeinfer-classify with the content "bin-1"; tune may change the config.
func newHarness(t *testing.T, tune ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, plugins: t.TempDir(), cache: t.TempDir(), done: make(chan struct{}), versions: map[string]script{}, binaries: map[string]script{}}
	h.writePlugin("bin-1")
	cfg := Config{PluginDir: h.plugins, CacheDir: h.cache, Settle: 20 * time.Millisecond, Start: h.start,
		Publish: h.publish, Event: h.event, MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Poll: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range tune {
		f(&cfg)
	}
	h.mgr = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		h.mgr.Close()
		close(h.done)
	})
	return h
}

func (h *harness) publish(st payload.ModelState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states = append(h.states, st)
}

func (h *harness) event(e payload.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
	h.log = append(h.log, "event "+e.Type+" "+e.Version)
}

func (h *harness) note(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.log = append(h.log, s)
}

// writePlugin writes the classify plugin binary with content, with an
// mtime of its own.
func (h *harness) writePlugin(content string) {
	h.t.Helper()
	path := filepath.Join(h.plugins, "edgeinfer-classify")
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		h.t.Fatal(err)
	}
	mtime := time.Now().Add(time.Duration(h.stamp.Add(1)) * time.Second)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		h.t.Fatal(err)
	}
}

// cachePath is where the binary with content is run from.
func (h *harness) cachePath(content string) string {
	sum := sha256.Sum256([]byte(content))
	return filepath.Join(h.cache, "edgeinfer-classify-"+hex.EncodeToString(sum[:])[:16])
}

// label is how the model state names the binary with content.
func (h *harness) label(content string) string {
	sum := sha256.Sum256([]byte(content))
	return filepath.Join(h.plugins, "edgeinfer-classify") + "@" + hex.EncodeToString(sum[:])[:12]
}

func (h *harness) setVersion(version string, s script) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.versions[version] = s
}

func (h *harness) setBinary(content string, s script) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.binaries[content] = s
}

func (h *harness) script(version, content string) script {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.versions[version].merge(h.binaries[content])
}

// start is Config.Start: a Fake around a scriptable task; it keeps the
// access the process was given.
func (h *harness) start(binary string, access sdk.Access) (sdk.Process, error) {
	b, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	if s := h.script("", string(b)); s.startErr != nil {
		return nil, s.startErr
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p := &proc{h: h, n: len(h.procs), access: access, task: &task{h: h, binary: binary, content: string(b)}}
	p.task.p = p
	p.Fake = sdk.NewFake(p.task)
	h.procs = append(h.procs, p)
	h.log = append(h.log, "start "+strconv.Itoa(p.n))
	return p, nil
}

// proc is a started fake plugin process; it records its Kill or Stop.
type proc struct {
	*sdk.Fake
	h      *harness
	n      int // index in harness.procs
	access sdk.Access
	task   *task
	killed atomic.Bool
}

func (p *proc) Kill() {
	p.noteEnd()
	p.Fake.Kill()
}

// Stop is a graceful Kill: the process ends as well ("kill" in the log).
func (p *proc) Stop() {
	p.noteEnd()
	p.Fake.Stop()
}

// noteEnd logs the first end of the process, by Kill or Stop.
func (p *proc) noteEnd() {
	if !p.killed.Swap(true) {
		p.h.note("kill " + strconv.Itoa(p.n))
	}
}

// task is the fake plugin: it records what it loaded and from which binary,
// and its Infer answers with the version and the binary.
type task struct {
	h       *harness
	p       *proc
	binary  string // the path it was started from
	content string // that binary's bytes

	mu        sync.Mutex
	version   string
	dir       string
	pipelines map[string]json.RawMessage
}

func (k *task) loaded() (version, dir string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.version, k.dir
}

// options are the options Configure last gave pipeline.
func (k *task) options(pipeline string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return string(k.pipelines[pipeline])
}

func (k *task) script() script {
	v, _ := k.loaded()
	return k.h.script(v, k.content)
}

func gate(ctx context.Context, g chan struct{}) error {
	if g == nil {
		return nil
	}
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (k *task) Load(ctx context.Context, req sdk.LoadRequest) (sdk.ModelInfo, error) {
	k.mu.Lock()
	k.version, k.dir = req.Version, req.ModelDir
	k.mu.Unlock()
	s := k.script()
	if s.crashLoad {
		k.p.Crash()
		<-k.h.done // a dead process does not answer
		return sdk.ModelInfo{}, errors.New("died")
	}
	if err := gate(ctx, s.loadGate); err != nil {
		return sdk.ModelInfo{}, err
	}
	if s.loadErr != nil {
		return sdk.ModelInfo{}, s.loadErr
	}
	return sdk.ModelInfo{Task: "classify", Labels: 10, Description: "fake " + req.Version, InputShape: []int64{1, 28, 28, 1}}, nil
}

func (k *task) Configure(ctx context.Context, pipelines map[string]json.RawMessage) error {
	s := k.script()
	if s.configureErr != nil {
		return s.configureErr
	}
	for _, name := range slices.Sorted(maps.Keys(pipelines)) {
		if why, bad := s.refuse[name]; bad {
			return fmt.Errorf("pipeline %s: %s", name, why)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pipelines = pipelines
	return nil
}

func (k *task) Validate(ctx context.Context) (sdk.Validation, error) {
	s := k.script()
	if err := gate(ctx, s.validateGate); err != nil {
		return sdk.Validation{}, err
	}
	if s.validateErr != nil {
		return sdk.Validation{}, s.validateErr
	}
	return sdk.Validation{Samples: 2, MaxAbsDiff: 1e-6, Tolerance: 1e-4}, nil
}

// answer is what the fake Infer returns.
type answer struct {
	Version string `json:"version"`
	Binary  string `json:"binary"`
	Pid     int    `json:"pid"`
}

func (k *task) Infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	k.mu.Lock()
	_, ok := k.pipelines[f.Pipeline]
	version := k.version
	k.mu.Unlock()
	if !ok {
		return sdk.Result{}, fmt.Errorf("pipeline %s is not configured", f.Pipeline)
	}
	if err := gate(ctx, k.script().inferGate); err != nil {
		return sdk.Result{}, err
	}
	out, err := json.Marshal(answer{Version: version, Binary: k.content, Pid: k.p.Pid()})
	return sdk.Result{Output: out}, err
}

// ver is version n of model "m", with fingerprint fp.
func ver(n int, fp string) repo.Version {
	v := strconv.Itoa(n)
	return repo.Version{Model: "m", Version: v, Num: n, Dir: "/models/m/" + v, Manifest: manifest.Manifest{Task: "classify"}, Fingerprint: fp}
}

// vers lists versions n (fingerprint "a") highest first.
func vers(ns ...int) []repo.Version {
	var out []repo.Version
	for _, n := range slices.Backward(slices.Sorted(slices.Values(ns))) {
		out = append(out, ver(n, "a"))
	}
	return out
}

// model returns model "m" used by pipelines (options {}).
func (h *harness) model(pipelines ...string) *Model {
	md := h.mgr.Model("m")
	set := map[string]json.RawMessage{}
	for _, p := range pipelines {
		set[p] = json.RawMessage(`{}`)
	}
	md.SetPipelines(set)
	return md
}

// serveFirst has md serve version 1 and returns its process.
func (h *harness) serveFirst(md *Model) *proc {
	h.t.Helper()
	md.SetVersions(vers(1))
	h.serving(md, "1")
	return h.servingProc(md)
}

// restarted waits until a process other than old serves version 1 and
// returns it.
func (h *harness) restarted(md *Model, old *proc) *proc {
	h.t.Helper()
	h.until(md, "a restarted process serving", func() bool {
		vs := md.State().Versions["1"]
		return vs.State == payload.StateServing && vs.PID != old.Pid()
	})
	return h.servingProc(md)
}

// until waits for cond, failing the test with what and the model state
// when it does not come true.
func (h *harness) until(md *Model, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			st, _ := json.MarshalIndent(md.State(), "", "  ")
			h.t.Fatalf("timed out waiting for %s; state:\n%s\nlog: %v", what, st, h.logged())
		}
		time.Sleep(time.Millisecond)
	}
}

// serving waits until version serves and returns the state.
func (h *harness) serving(md *Model, version string) payload.ModelState {
	h.t.Helper()
	var st payload.ModelState
	h.until(md, "version "+version+" serving", func() bool {
		st = md.State()
		return st.Serving == version && st.Versions[version].State == payload.StateServing
	})
	return st
}

// versionState waits until version is in state and returns the state.
func (h *harness) versionState(md *Model, version, state string) payload.VersionState {
	h.t.Helper()
	var vs payload.VersionState
	h.until(md, "version "+version+" "+state, func() bool {
		vs = md.State().Versions[version]
		return vs.State == state
	})
	return vs
}

// eventsOf returns the events of type typ (for version, unless "").
func (h *harness) eventsOf(typ, version string) []payload.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []payload.Event
	for _, e := range h.events {
		if e.Type == typ && (version == "" || e.Version == version) {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits for the n-th (from 1) event of type typ for version.
func (h *harness) waitEvent(md *Model, typ, version string, n int) payload.Event {
	h.t.Helper()
	h.until(md, fmt.Sprintf("%d %s events for version %s", n, typ, version), func() bool {
		return len(h.eventsOf(typ, version)) >= n
	})
	return h.eventsOf(typ, version)[n-1]
}

func (h *harness) logged() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.log)
}

// at is the index of entry in the log; -1 when it is not there.
func (h *harness) at(entry string) int { return slices.Index(h.logged(), entry) }

func (h *harness) allProcs() []*proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.procs)
}

// procsOf lists the processes that loaded version, in start order.
func (h *harness) procsOf(version string) []*proc {
	var out []*proc
	for _, p := range h.allProcs() {
		if v, _ := p.task.loaded(); v == version {
			out = append(out, p)
		}
	}
	return out
}

// waitProc waits for the n-th (from 1) process to load version.
func (h *harness) waitProc(md *Model, version string, n int) *proc {
	h.t.Helper()
	h.until(md, fmt.Sprintf("process %d of version %s", n, version), func() bool { return len(h.procsOf(version)) >= n })
	return h.procsOf(version)[n-1]
}

// servingProc is the process of the version that serves.
func (h *harness) servingProc(md *Model) *proc {
	h.t.Helper()
	st := md.State()
	pid := st.Versions[st.Serving].PID
	for _, p := range h.allProcs() {
		if p.Pid() == pid {
			return p
		}
	}
	h.t.Fatalf("no process has the serving pid %d (version %q)", pid, st.Serving)
	return nil
}

// onlyAlive checks that every process started is exited but alive.
func (h *harness) onlyAlive(md *Model, alive ...*proc) {
	h.t.Helper()
	h.until(md, "every other process exited", func() bool {
		for _, p := range h.allProcs() {
			if p.Exited() == slices.Contains(alive, p) {
				return false
			}
		}
		return true
	})
	var pids []int
	for _, p := range alive {
		pids = append(pids, p.Pid())
	}
	slices.Sort(pids)
	if got := md.Pids(); !slices.Equal(got, pids) {
		h.t.Errorf("Pids() = %v, want %v", got, pids)
	}
}

// frame is what the tests send.
func frame(pipeline string) sdk.Frame {
	return sdk.Frame{Pipeline: pipeline, Width: 1, Height: 1, RGB: []byte{1, 2, 3}}
}

// infer runs one frame of pipeline through the model, as the pipeline
// worker does, and says which version and binary answered. ctx bounds the
// wait for a lease only.
func infer(ctx context.Context, md *Model, pipeline string) (answer, error) {
	lease, err := md.Acquire(ctx, pipeline)
	if err != nil {
		return answer{}, err
	}
	ictx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := lease.Process().Infer(ictx, frame(pipeline))
	lease.Release(err)
	if err != nil {
		return answer{}, err
	}
	var a answer
	if err := json.Unmarshal(res.Output, &a); err != nil {
		return answer{}, err
	}
	if a.Version != lease.Version().Version {
		return a, fmt.Errorf("the lease names version %s, the process answered for %s", lease.Version().Version, a.Version)
	}
	return a, nil
}

// mustInfer runs a frame and checks it was answered by version.
func mustInfer(t *testing.T, md *Model, pipeline, version string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	a, err := infer(ctx, md, pipeline)
	if err != nil {
		t.Fatalf("frame of %s: %v", pipeline, err)
	}
	if a.Version != version {
		t.Fatalf("frame of %s answered by version %s, want %s", pipeline, a.Version, version)
	}
	return a
}

// waiting checks that Acquire for pipeline does not get a lease now.
func waiting(t *testing.T, md *Model, pipeline string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if lease, err := md.Acquire(ctx, pipeline); err == nil {
		lease.Release(nil)
		t.Fatalf("Acquire(%s) got a lease on version %s, want it to wait", pipeline, lease.Version().Version)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire(%s): %v, want it to wait", pipeline, err)
	}
}

// closed checks that Acquire says the model is closed.
func closed(t *testing.T, md *Model) {
	t.Helper()
	if _, err := md.Acquire(context.Background(), "p"); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire on a closed model: %v", err)
	}
}

// noneBlocked waits until no goroutine is left in the model or in a fake
// task.
func noneBlocked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var stuck []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "serving.(*Model)") || strings.Contains(g, "serving.(*task)") {
				stuck = append(stuck, g)
			}
		}
		if len(stuck) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left:\n%s", strings.Join(stuck, "\n\n"))
		}
		time.Sleep(time.Millisecond)
	}
}
