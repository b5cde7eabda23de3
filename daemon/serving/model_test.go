package serving

import (
	"context"
	"encoding/json"
	"errors"
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
)

// published lists the states version went through in the published model
// states, each once in a row.
func (h *harness) published(version string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, st := range h.states {
		vs, ok := st.Versions[version]
		if ok && (len(out) == 0 || out[len(out)-1] != vs.State) {
			out = append(out, vs.State)
		}
	}
	return out
}

func TestVersionGoesLoadingThenValidatingThenServing(t *testing.T) {
	h := newHarness(t)
	load, validate := make(chan struct{}), make(chan struct{})
	h.setVersion("1", script{loadGate: load, validateGate: validate})
	md := h.model("p")
	md.SetVersions(vers(1))

	p := h.waitProc(md, "1", 1)
	h.until(md, "loading with a pid", func() bool {
		vs := md.State().Versions["1"]
		return vs.State == payload.StateLoading && vs.PID == p.Pid()
	})
	if p.Nice() != 10 {
		t.Errorf("a loading process has nice %d, want 10", p.Nice())
	}
	if st := md.State(); st.Serving != "" || st.Target != "1" {
		t.Errorf("while loading: serving %q, target %q; want none and 1", st.Serving, st.Target)
	}
	waiting(t, md, "p")
	close(load)
	h.versionState(md, "1", payload.StateValidating)
	waiting(t, md, "p")
	close(validate)

	st := h.serving(md, "1")
	if p.Nice() != 0 {
		t.Errorf("a serving process has nice %d, want 0", p.Nice())
	}
	vs := st.Versions["1"]
	if vs.PID != p.Pid() || vs.Task != "classify" || vs.Labels != 10 || vs.LoadedAt == nil || vs.Validation == nil ||
		vs.Validation.Samples != 2 || !slices.Equal(vs.Pipelines, []string{"p"}) || !strings.Contains(vs.Plugin, "edgeinfer-classify@") {
		t.Errorf("serving version state: %+v", vs)
	}
	if st.Target != "1" || !slices.Equal(st.Pipelines, []string{"p"}) || st.Reason != "" {
		t.Errorf("model state: target %q, pipelines %v, reason %q", st.Target, st.Pipelines, st.Reason)
	}
	if v, dir := p.task.loaded(); v != "1" || dir != "/models/m/1" || p.task.binary != h.cachePath("bin-1") {
		t.Errorf("the process loaded version %s from %s, started from %s", v, dir, p.task.binary)
	}
	if got := h.published("1"); !slices.Equal(got, []string{payload.StateLoading, payload.StateValidating, payload.StateServing}) {
		t.Errorf("published states %v", got)
	}
	if h.at("event version_loading 1") > h.at("event version_serving 1") || h.at("event version_serving 1") < 0 {
		t.Errorf("events: %v", h.logged())
	}
	mustInfer(t, md, "p", "1")
	h.onlyAlive(md, p)
}

func TestReplacedVersionDrainsAndStopsAfterItsLastLease(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	old := h.serveFirst(md)
	lease, err := md.Acquire(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}

	md.SetVersions(vers(1, 2))
	st := h.serving(md, "2")
	nw := h.servingProc(md)
	if vs := st.Versions["1"]; vs.State != payload.StateDraining || !strings.Contains(vs.Reason, "replaced by version 2") || vs.PID != old.Pid() {
		t.Errorf("the replaced version: %+v", vs)
	}
	if old.Exited() {
		t.Fatal("the replaced process was stopped under a lease")
	}
	mustInfer(t, md, "p", "2")
	res, err := lease.Process().Infer(context.Background(), frame("p"))
	if err != nil || !strings.Contains(string(res.Output), `"version":"1"`) {
		t.Fatalf("the frame in flight on the old version: %s, %v", res.Output, err)
	}
	if !slices.Equal(md.Pids(), sortedPids(old, nw)) {
		t.Errorf("Pids() = %v while draining, want both", md.Pids())
	}
	lease.Release(nil)

	vs := h.versionState(md, "1", payload.StateRetired)
	if vs.PID != 0 {
		t.Errorf("a retired version shows pid %d", vs.PID)
	}
	h.waitEvent(md, payload.EventVersionRetired, "1", 1)
	h.onlyAlive(md, nw)
	want := []string{payload.StateLoading, payload.StateValidating, payload.StateServing, payload.StateDraining, payload.StateRetired}
	if got := h.published("1"); !slices.Equal(got, want) {
		t.Errorf("published states of the replaced version %v, want %v", got, want)
	}
}

func sortedPids(ps ...*proc) []int {
	var pids []int
	for _, p := range ps {
		pids = append(pids, p.Pid())
	}
	slices.Sort(pids)
	return pids
}

func TestVersionThatFailsBeforeServingIsRejectedUntilItsFilesChange(t *testing.T) {
	tests := []struct {
		name     string
		script   script
		timeout  time.Duration
		reason   string
		attempts int
	}{
		{"load fails", script{loadErr: errors.New("no signature serving_default")}, 0, "load: no signature serving_default", 1},
		{"validation fails", script{validateErr: errors.New("output probs: max abs diff 0.3 > 0.0001")}, 0, "validation: output probs: max abs diff 0.3", 1},
		{"load times out", script{loadGate: make(chan struct{})}, 50 * time.Millisecond, "took over 50ms (serving.m.load_timeout)", 1},
		{"validation times out", script{validateGate: make(chan struct{})}, 50 * time.Millisecond, "took over 50ms (serving.m.load_timeout)", 1},
		{"the plugin refuses every pipeline set", script{configureErr: errors.New("options are not JSON")}, 0, "configure pipelines: options are not JSON", 1},
		{"the process dies while loading, three times", script{crashLoad: true}, 0, "plugin process exited", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			md := h.model("p")
			md.SetSettings(Settings{LoadTimeout: tt.timeout})
			old := h.serveFirst(md)

			h.setVersion("2", tt.script)
			md.SetVersions(vers(1, 2))
			var vs payload.VersionState
			h.until(md, "version 2 rejected", func() bool {
				vs = md.State().Versions["2"]
				return vs.State == payload.StateFailed && !strings.Contains(vs.Reason, "transient")
			})
			if !strings.Contains(vs.Reason, tt.reason) {
				t.Errorf("reason %q, want %q", vs.Reason, tt.reason)
			}
			if e := h.waitEvent(md, payload.EventVersionRejected, "2", tt.attempts); !strings.Contains(e.Message, tt.reason) {
				t.Errorf("event %q, want %q", e.Message, tt.reason)
			}
			if n := len(h.procsOf("2")); n != tt.attempts {
				t.Errorf("version 2 was tried %d times, want %d", n, tt.attempts)
			}
			if st := md.State(); st.Serving != "1" || st.Target != "1" {
				t.Errorf("serving %q, target %q after the rejection; want 1", st.Serving, st.Target)
			}
			mustInfer(t, md, "p", "1")
			h.onlyAlive(md, old)

			md.SetVersions(vers(1, 2)) // the same files again
			if vs := md.State().Versions["2"]; vs.State != payload.StateFailed {
				t.Fatalf("a rejected version was tried again with the same files: %+v", vs)
			}
			h.setVersion("2", script{})
			md.SetVersions([]repo.Version{ver(2, "b"), ver(1, "a")})
			h.serving(md, "2")
			mustInfer(t, md, "p", "2")
		})
	}
}

func TestCrashedProcessIsRestartedWithTheSameVersionAndBinary(t *testing.T) {
	tests := []struct {
		name  string
		crash func(t *testing.T, h *harness, md *Model, p *proc)
	}{
		{"dies during a frame", func(t *testing.T, h *harness, md *Model, p *proc) {
			lease, err := md.Acquire(context.Background(), "p")
			if err != nil {
				t.Fatal(err)
			}
			p.Crash()
			_, err = lease.Process().Infer(context.Background(), frame("p"))
			if !errors.Is(err, sdk.ErrPluginExited) {
				t.Fatalf("Infer on a dead process: %v", err)
			}
			lease.Release(err)
		}},
		{"hangs during a frame", func(t *testing.T, h *harness, md *Model, p *proc) {
			h.setVersion("1", script{inferGate: make(chan struct{})})
			lease, err := md.Acquire(context.Background(), "p")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err = lease.Process().Infer(ctx, frame("p"))
			if !errors.Is(err, sdk.ErrHung) {
				t.Fatalf("Infer on a hung process: %v", err)
			}
			h.setVersion("1", script{})
			lease.Release(err)
		}},
		{"dies while idle (noticed by Run)", func(t *testing.T, h *harness, md *Model, p *proc) { p.Crash() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			md := h.model("p")
			old := h.serveFirst(md)

			tt.crash(t, h, md, old)
			e := h.waitEvent(md, payload.EventPluginRestarted, "1", 1)
			if e.Attrs["pid"] != old.Pid() || e.Attrs["restarts"] != 1 {
				t.Errorf("event attrs %v", e.Attrs)
			}
			nw := h.restarted(md, old)
			if vs := md.State().Versions["1"]; vs.Restarts != 1 {
				t.Errorf("restarts %d, want 1", vs.Restarts)
			}
			if v, dir := nw.task.loaded(); v != "1" || dir != "/models/m/1" || nw.task.binary != old.task.binary {
				t.Errorf("restarted with version %s from %s, binary %s; want 1, %s", v, dir, nw.task.binary, old.task.binary)
			}
			if nw.Nice() != 0 {
				t.Errorf("the restarted process has nice %d", nw.Nice())
			}
			if got := h.published("1"); !slices.Contains(got, payload.StateRestarting) {
				t.Errorf("published states %v, want restarting among them", got)
			}
			mustInfer(t, md, "p", "1")
			h.onlyAlive(md, nw)
		})
	}
}

func TestRestartThatKeepsFailingBacksOffAndRecovers(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	old := h.serveFirst(md)

	h.setBinary("bin-1", script{startErr: errors.New("exec format error")})
	old.Crash()
	h.waitEvent(md, payload.EventPluginFailed, "1", 1)
	md.SetSettings(Settings{LoadTimeout: time.Minute}) // while it restarts
	h.waitEvent(md, payload.EventPluginFailed, "1", 3)
	vs := h.versionState(md, "1", payload.StateFailed)
	if !strings.Contains(vs.Reason, "exec format error") {
		t.Errorf("reason %q", vs.Reason)
	}
	var waits []string
	for _, e := range h.eventsOf(payload.EventPluginFailed, "1")[:3] {
		waits = append(waits, e.Message[strings.LastIndex(e.Message, " ")+1:])
	}
	if !slices.Equal(waits, []string{"10ms", "20ms", "40ms"}) {
		t.Errorf("backoffs %v, want doubling from MinBackoff", waits)
	}
	if md.State().Serving != "1" {
		t.Errorf("the model no longer names version 1 as serving")
	}
	waiting(t, md, "p")
	if pids := md.Pids(); len(pids) != 0 {
		t.Errorf("Pids() = %v while no process runs", pids)
	}

	h.setBinary("bin-1", script{})
	nw := h.restarted(md, old)
	mustInfer(t, md, "p", "1")
	h.onlyAlive(md, nw)
}

func TestLatestServesTheHighestServableVersion(t *testing.T) {
	h := newHarness(t)
	h.setVersion("3", script{loadErr: errors.New("corrupt variables")})
	broken := ver(4, "a")
	broken.Err = errors.New("variables still being copied")
	md := h.model("p")
	md.SetVersions(append([]repo.Version{broken}, vers(1, 2, 3)...))

	st := h.serving(md, "2")
	if st.Target != "2" || st.Versions["4"].State != payload.StateFailed || !strings.Contains(st.Versions["4"].Reason, "still being copied") ||
		st.Versions["3"].State != payload.StateFailed || !strings.Contains(st.Versions["3"].Reason, "corrupt variables") {
		t.Errorf("state %+v", st)
	}
	if len(h.procsOf("4")) != 0 || len(h.procsOf("1")) != 0 {
		t.Error("a version that cannot be served, or a lower one, was loaded")
	}
	mustInfer(t, md, "p", "2")
}

func TestPinnedVersionServesAndUnpinningGoesBackToLatest(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	md.SetSettings(Settings{Version: "1"})
	md.SetVersions(vers(1, 2, 3))
	st := h.serving(md, "1")
	if st.Policy.Version != "1" || st.Target != "1" {
		t.Errorf("policy %+v, target %s", st.Policy, st.Target)
	}
	if err := md.Pin("2"); err != nil {
		t.Fatal(err)
	}
	st = h.serving(md, "2")
	if st.Policy.Pinned != "2" {
		t.Errorf("pinned_by_command %q", st.Policy.Pinned)
	}
	if err := md.Pin("9"); err == nil || !strings.Contains(err.Error(), "no version 9") {
		t.Errorf("Pin(9) = %v", err)
	}
	if err := md.Pin(""); err != nil {
		t.Fatal(err)
	}
	h.serving(md, "1") // back to the config's version
	md.SetSettings(Settings{Version: Latest})
	h.serving(md, "3")
	mustInfer(t, md, "p", "3")
}

func TestRollbackServesTheNextLowerServableVersion(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	if _, err := md.Rollback(); err == nil {
		t.Error("Rollback with nothing serving succeeded")
	}
	broken := ver(2, "a")
	broken.Err = errors.New("no saved_model.pb")
	md.SetVersions([]repo.Version{ver(3, "a"), broken, ver(1, "a")})
	h.serving(md, "3")
	v, err := md.Rollback()
	if err != nil || v != "1" {
		t.Fatalf("Rollback = %s, %v; want 1", v, err)
	}
	st := h.serving(md, "1")
	if st.Policy.Pinned != "1" {
		t.Errorf("pinned_by_command %q after a rollback", st.Policy.Pinned)
	}
	if _, err := md.Rollback(); err == nil || !strings.Contains(err.Error(), "no servable version below 1") {
		t.Errorf("Rollback from the lowest = %v", err)
	}
	mustInfer(t, md, "p", "1")
}

func TestRemovingTheServingVersionFallsBackToTheHighestRemaining(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	md.SetVersions(vers(1, 2, 3))
	h.serving(md, "3")
	md.SetVersions(vers(1, 2))
	h.serving(md, "2")
	h.versionState(md, "3", payload.StateRetired)
	mustInfer(t, md, "p", "2")
	h.onlyAlive(md, h.servingProc(md))

	back := ver(3, "b")
	back.Err = errors.New("saved_model.pb: 0 bytes (still being copied?)")
	md.SetVersions(append([]repo.Version{back}, vers(1, 2)...))
	if vs := md.State().Versions["3"]; vs.State != payload.StateFailed || vs.Reason != back.Err.Error() {
		t.Errorf("a retired version whose files are incomplete again: %+v", vs)
	}
}

func TestModelThatCannotServeSaysWhy(t *testing.T) {
	tests := []struct {
		name     string
		versions []repo.Version
		why      string
	}{
		{"no plugin for its task", func() []repo.Version {
			v := ver(1, "a")
			v.Manifest.Task = "detect"
			return []repo.Version{v}
		}(), `no plugin for task "detect"`},
		{"no version", nil, "no version in the repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			md := h.model("p")
			md.SetVersions(tt.versions)
			if st := md.State(); !strings.Contains(st.Reason, tt.why) || st.Serving != "" {
				t.Errorf("reason %q, serving %q; want %q", st.Reason, st.Serving, tt.why)
			}
			waiting(t, md, "p")
		})
	}
}

func TestAvailabilityPolicyServesThroughASwapWithoutWaiting(t *testing.T) {
	h := newHarness(t)
	load := make(chan struct{})
	h.setVersion("2", script{loadGate: load})
	md := h.model("p")
	old := h.serveFirst(md)

	// A frame loop whose Acquire may not wait: its ctx is already done.
	done, stop := context.WithCancel(context.Background())
	stop()
	var frames atomic.Int64
	quit := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-quit:
				close(failed)
				return
			default:
			}
			if _, err := infer(done, md, "p"); err != nil {
				failed <- err
				return
			}
			frames.Add(1)
		}
	}()

	md.SetVersions(vers(1, 2))
	h.waitProc(md, "2", 1)
	n := frames.Load()
	h.until(md, "frames while version 2 loads", func() bool { return frames.Load() > n+10 })
	close(load)
	h.serving(md, "2")
	nw := h.servingProc(md)
	n = frames.Load()
	h.until(md, "frames after the swap", func() bool { return frames.Load() > n+10 })
	close(quit)
	if err := <-failed; err != nil {
		t.Fatalf("a frame had to wait during the swap: %v", err)
	}
	served, killed := h.at("event "+payload.EventVersionServing+" 2"), h.at("kill "+strconv.Itoa(old.n))
	if served < 0 || killed < 0 || served > killed {
		t.Errorf("version 2 must serve before version 1's process is killed: %v", h.logged())
	}
	h.onlyAlive(md, nw)
}

func TestResourcePolicyStopsTheOldVersionBeforeStartingTheNew(t *testing.T) {
	h := newHarness(t)
	load := make(chan struct{})
	h.setVersion("2", script{loadGate: load})
	md := h.model("p")
	md.SetSettings(Settings{Policy: Resource})
	old := h.serveFirst(md)

	md.SetVersions(vers(1, 2))
	nw := h.waitProc(md, "2", 1)
	if killed, started := h.at("kill "+strconv.Itoa(old.n)), h.at("start "+strconv.Itoa(nw.n)); killed < 0 || killed > started {
		t.Fatalf("version 1 must stop before version 2 starts: %v", h.logged())
	}
	if vs := md.State().Versions["1"]; vs.State != payload.StateRetired || !strings.Contains(vs.Reason, "policy resource") {
		t.Errorf("the old version: %+v", vs)
	}
	waiting(t, md, "p")
	close(load)
	h.serving(md, "2")
	mustInfer(t, md, "p", "2")
	h.onlyAlive(md, nw)
}

func TestResourcePolicyLoadsTheOldVersionAgainWhenTheNewFails(t *testing.T) {
	h := newHarness(t)
	h.setVersion("2", script{validateErr: errors.New("max abs diff 0.5")})
	md := h.model("p")
	md.SetSettings(Settings{Policy: Resource})
	md.SetVersions(vers(1))
	h.serving(md, "1")

	md.SetVersions(vers(1, 2))
	h.waitEvent(md, payload.EventVersionRejected, "2", 1)
	h.serving(md, "1")
	again := h.waitProc(md, "1", 2)
	if h.servingProc(md) != again {
		t.Error("version 1 serves from another process than its second")
	}
	mustInfer(t, md, "p", "1")
	h.onlyAlive(md, again)
}

func TestLoadThatIsNoLongerWantedWhenItEndsIsNotSwitchedTo(t *testing.T) {
	h := newHarness(t)
	load := make(chan struct{})
	h.setVersion("2", script{loadGate: load})
	md := h.model("p")
	old := h.serveFirst(md)

	md.SetVersions(vers(1, 2))
	p2 := h.waitProc(md, "2", 1)
	if err := md.Pin("1"); err != nil {
		t.Fatal(err)
	}
	close(load)
	h.until(md, "version 2's process stopped", p2.Exited)
	if vs := h.versionState(md, "2", payload.StateRetired); vs.Reason != "no longer wanted once loaded" {
		t.Errorf("reason %q", vs.Reason)
	}
	h.waitEvent(md, payload.EventVersionRetired, "2", 1)
	if len(h.eventsOf(payload.EventVersionServing, "2")) != 0 {
		t.Error("version 2 served though version 1 was pinned while it loaded")
	}
	mustInfer(t, md, "p", "1")
	h.onlyAlive(md, old)
}

func TestOneProcessServesEveryPipelineOfAVersion(t *testing.T) {
	h := newHarness(t)
	md := h.model("a", "b", "c")
	md.SetVersions(vers(1))
	st := h.serving(md, "1")
	if !slices.Equal(st.Versions["1"].Pipelines, []string{"a", "b", "c"}) {
		t.Errorf("pipelines served %v", st.Versions["1"].Pipelines)
	}
	pids := map[int]bool{}
	for _, p := range []string{"a", "b", "c"} {
		pids[mustInfer(t, md, p, "1").Pid] = true
	}
	if len(pids) != 1 || len(h.allProcs()) != 1 {
		t.Errorf("%d processes answered, %d started; want one", len(pids), len(h.allProcs()))
	}
}

func TestNewPipelineIsConfiguredOnTheServingProcess(t *testing.T) {
	h := newHarness(t)
	md := h.model("a")
	p := h.serveFirst(md)

	md.SetPipelines(map[string]json.RawMessage{"a": json.RawMessage(`{}`), "b": json.RawMessage(`{"top_k":3}`)})
	if a := mustInfer(t, md, "b", "1"); a.Pid != p.Pid() {
		t.Errorf("pipeline b runs on pid %d, want the serving %d", a.Pid, p.Pid())
	}
	mustInfer(t, md, "a", "1")
	st := md.State()
	if !slices.Equal(st.Pipelines, []string{"a", "b"}) || !slices.Equal(st.Versions["1"].Pipelines, []string{"a", "b"}) {
		t.Errorf("pipelines %v, served %v", st.Pipelines, st.Versions["1"].Pipelines)
	}
	if got := p.task.options("b"); got != `{"top_k":3}` {
		t.Errorf("options of b: %s", got)
	}
	h.onlyAlive(md, p)
}

func TestPipelineAddedWhileAVersionLoadsIsServedByIt(t *testing.T) {
	h := newHarness(t)
	load := make(chan struct{})
	h.setVersion("1", script{loadGate: load})
	md := h.model("a")
	md.SetVersions(vers(1))
	p := h.waitProc(md, "1", 1)
	md.SetPipelines(map[string]json.RawMessage{"a": nil, "b": nil})
	close(load)
	mustInfer(t, md, "b", "1")
	mustInfer(t, md, "a", "1")
	h.onlyAlive(md, p)
}

func TestRefusedPipelineOptionsDoNotStopTheOtherPipelines(t *testing.T) {
	tests := []struct {
		name  string
		later bool // the bad pipeline is added to a serving process
	}{
		{"refused at load", false},
		{"refused when added", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.setVersion("1", script{refuse: map[string]string{"bad": "top_k is 0, must be 1..10"}})
			both := map[string]json.RawMessage{"good": json.RawMessage(`{}`), "bad": json.RawMessage(`{"top_k":0}`)}
			md := h.mgr.Model("m")
			if tt.later {
				md.SetPipelines(map[string]json.RawMessage{"good": json.RawMessage(`{}`)})
			} else {
				md.SetPipelines(both)
			}
			p := h.serveFirst(md)
			if tt.later {
				md.SetPipelines(both)
			}

			e := h.waitEvent(md, payload.EventOptionsRejected, "1", 1)
			if e.Pipeline != "bad" || !strings.Contains(e.Message, "top_k is 0") {
				t.Errorf("event %+v", e)
			}
			mustInfer(t, md, "good", "1")
			waiting(t, md, "bad")
			vs := md.State().Versions["1"]
			if !strings.Contains(vs.Refused["bad"], "top_k is 0") || !slices.Equal(vs.Pipelines, []string{"good"}) {
				t.Errorf("version state: refused %v, pipelines %v", vs.Refused, vs.Pipelines)
			}

			// A restarted process refuses the same options: no news.
			p.Crash()
			p = h.restarted(md, p)
			mustInfer(t, md, "good", "1")
			waiting(t, md, "bad")

			h.setVersion("1", script{})
			md.SetPipelines(map[string]json.RawMessage{"good": json.RawMessage(`{}`), "bad": json.RawMessage(`{"top_k":5}`)})
			mustInfer(t, md, "bad", "1")
			mustInfer(t, md, "good", "1")
			if vs := md.State().Versions["1"]; len(vs.Refused) != 0 {
				t.Errorf("refused %v after the options were fixed", vs.Refused)
			}
			if len(h.eventsOf(payload.EventOptionsRejected, "")) != 1 {
				t.Errorf("options_rejected events: %v", h.eventsOf(payload.EventOptionsRejected, ""))
			}
			h.onlyAlive(md, p)
		})
	}
}

func TestSwapRacingACrashEndsWithTheNewVersionServingAndNothingLeft(t *testing.T) {
	tests := []struct {
		name    string
		gate    func(g chan struct{}) script // holds version 2
		state   string                       // version 2's state when the old process dies
		restart bool                         // the old version's restart is held too
	}{
		{"crash while the new version loads", func(g chan struct{}) script { return script{loadGate: g} }, payload.StateLoading, false},
		{"crash while the new version validates", func(g chan struct{}) script { return script{validateGate: g} }, payload.StateValidating, false},
		{"the new version serves while the old restarts", func(g chan struct{}) script { return script{validateGate: g} }, payload.StateValidating, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			g := make(chan struct{})
			h.setVersion("2", tt.gate(g))
			md := h.model("p")
			old := h.serveFirst(md)
			if tt.restart {
				h.setVersion("1", script{loadGate: make(chan struct{})})
			}

			md.SetVersions(vers(1, 2))
			h.versionState(md, "2", tt.state)
			old.Crash()
			h.waitEvent(md, payload.EventPluginRestarted, "1", 1)
			if tt.restart {
				h.waitProc(md, "1", 2)
			}
			close(g)
			h.serving(md, "2")
			nw := h.servingProc(md)
			mustInfer(t, md, "p", "2")
			h.onlyAlive(md, nw)
			h.versionState(md, "1", payload.StateRetired)
		})
	}
}

func TestCloseStopsEveryProcessAndWakesAcquire(t *testing.T) {
	tests := []struct {
		name    string
		serving bool // version 1 serves while version 2's load is held
	}{
		{"while the first version loads", false},
		{"while a swap loads the next version", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			g := make(chan struct{})
			md := h.model("p")
			next := "1"
			if tt.serving {
				md.SetVersions(vers(1))
				h.serving(md, "1")
				next = "2"
			}
			h.setVersion(next, script{loadGate: g})
			n, _ := strconv.Atoi(next)
			md.SetVersions(vers(1, n))
			h.waitProc(md, next, 1)

			acquired := make(chan error)
			go func() {
				_, err := md.Acquire(context.Background(), "missing") // a pipeline no version serves: it waits
				acquired <- err
			}()
			h.mgr.Close()
			select {
			case err := <-acquired:
				if !errors.Is(err, ErrClosed) {
					t.Errorf("Acquire after Close: %v", err)
				}
			case <-time.After(wait):
				t.Fatal("Acquire still waits after Close")
			}
			closed(t, md)
			h.onlyAlive(md)
			noneBlocked(t)
		})
	}
}

func TestCloseWhileLeasesAreHeld(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	h.serveFirst(md)
	var leases []*Lease
	for range 2 {
		l, err := md.Acquire(context.Background(), "p")
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	h.mgr.Close()
	closed(t, md)
	for _, l := range leases {
		_, err := l.Process().Infer(context.Background(), frame("p"))
		if !errors.Is(err, sdk.ErrPluginExited) {
			t.Errorf("Infer on a closed model's process: %v", err)
		}
		l.Release(err)
	}
	if vs := md.State().Versions["1"]; vs.State != payload.StateRetired {
		t.Errorf("version 1 after Close: %+v", vs)
	}
	if len(h.allProcs()) != 1 || len(h.eventsOf(payload.EventPluginRestarted, "")) != 0 {
		t.Error("a process was restarted after Close")
	}
	h.onlyAlive(md)
	noneBlocked(t)
}

func TestRemovedModelStopsItsProcesses(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	h.serveFirst(md)
	h.mgr.Remove("m")
	closed(t, md)
	if _, ok := h.mgr.Lookup("m"); ok || len(h.mgr.Names()) != 0 {
		t.Errorf("the removed model is still listed: %v", h.mgr.Names())
	}
	h.onlyAlive(md)
}

func TestFramesKeepFlowingWhileVersionsSwap50Times(t *testing.T) {
	h := newHarness(t)
	md := h.model("a", "b")
	h.serveFirst(md)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var frames atomic.Int64
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			pipeline := []string{"a", "b"}[i%2]
			for {
				_, err := infer(ctx, md, pipeline)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				frames.Add(1)
			}
		})
	}
	last := 1
	for n := 2; n <= 51; n++ {
		md.SetVersions(vers(n-1, n))
		if n%10 == 0 {
			md.SetPipelines(map[string]json.RawMessage{"a": json.RawMessage(`{"top_k":` + strconv.Itoa(n) + `}`), "b": nil})
		}
		if n%2 == 0 { // every other swap races the next one
			h.serving(md, strconv.Itoa(n))
		}
		last = n
	}
	h.serving(md, strconv.Itoa(last))
	n := frames.Load()
	h.until(md, "frames on the last version", func() bool { return frames.Load() > n+10 })
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a frame failed: %v", err)
	}
	h.onlyAlive(md, h.servingProc(md))
}

func TestTheServingVersionKeepsServingWhenItsFilesBreakInPlace(t *testing.T) {
	h := newHarness(t)
	md := h.model("p")
	md.SetVersions(vers(1, 2))
	h.serving(md, "2")
	old := h.servingProc(md)

	broken := ver(2, "broken")
	broken.Err = errors.New("variables/variables.data-00000-of-00001: 1200 bytes, the index needs 4096 (still being copied?)")
	md.SetVersions(append([]repo.Version{broken}, vers(1)...))
	st := md.State()
	if st.Serving != "2" || h.servingProc(md) != old || !strings.Contains(st.Reason, "its loaded copy keeps serving") {
		t.Fatalf("after version 2's files broke: %+v", st)
	}
	if len(h.procsOf("1")) != 0 {
		t.Fatal("version 1 was loaded although version 2's loaded copy still serves")
	}
	mustInfer(t, md, "p", "2")

	// Fixed files are a new version 2: loaded and switched to.
	md.SetVersions(append([]repo.Version{ver(2, "fixed")}, vers(1)...))
	h.until(md, "the fixed version 2 serving", func() bool { return h.servingProc(md) != old && md.State().Serving == "2" })
	h.onlyAlive(md, h.servingProc(md))
}
