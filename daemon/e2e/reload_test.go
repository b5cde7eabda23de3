package e2e

// Hot reload end to end: version swaps under load, broken versions, a slow
// non-atomic copy, rollback by removal, pinning by config and by command.
// Every test builds its own repository in t.TempDir() from
// $EDGEINFER_MODELS/lenet5/1; version 2 is the same model relabelled "v2-",
// so each answer says which version made it.

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// reloadModels keeps version pick-up fast in these tests.
const reloadModels = "settle = \"300ms\"\nrescan = \"2s\""

// reloadRepo makes a repository in a temporary folder holding a copy of
// lenet5 version 1 under each of names (a model folder each).
func reloadRepo(t *testing.T, names ...string) string {
	t.Helper()
	repo := t.TempDir()
	for _, name := range names {
		if err := os.MkdirAll(filepath.Join(repo, name), 0o755); err != nil {
			t.Fatal(err)
		}
		copyVersion(t, filepath.Join(models(t), "lenet5", "1"), filepath.Join(repo, name, "1"), nil)
	}
	return repo
}

// reloadMqttSensor is an mqtt sensor taking every image published under
// <prefix>/in/<name>/<input>.
func reloadMqttSensor(t *testing.T, name string) string {
	return fmt.Sprintf("[sensors.%s]\nkind = \"mqtt\"\ntopic = %q\n", name, prefixOf(t)+"/in/"+name+"/+")
}

// ---------------------------------------------------------------------------
// Feeding numbered inputs.

// reloadFeedInput is one image published by a reloadFeeder.
type reloadFeedInput struct {
	digit int   // index in digits()
	tag   int32 // the feeder's tag when it was published (0: none)
}

// reloadFeeder publishes the digits cyclically, each as a new input with a topic
// of its own (<topic>/<n>-digit-NNN.png), on a fixed schedule: input n
// goes out at start + n*every, so the rate holds on average even when a
// publish is late. Each publish waits for the broker's acknowledgement.
type reloadFeeder struct {
	w     *watcher
	topic string
	every time.Duration
	ds    []digit
	// gate, when set, is read-locked around reading tag and publishing: a
	// test that write-locks it knows every input published under the old
	// tag is at the broker.
	gate *sync.RWMutex
	tag  *atomic.Int32

	mu     sync.Mutex
	inputs []reloadFeedInput
	err    error
	start  time.Time
	end    time.Time

	stop chan struct{}
	done chan struct{}
}

func reloadStartFeeder(t *testing.T, w *watcher, topic string, every time.Duration, ds []digit, gate *sync.RWMutex, tag *atomic.Int32) *reloadFeeder {
	f := &reloadFeeder{w: w, topic: topic, every: every, ds: ds, gate: gate, tag: tag, stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	t.Cleanup(func() { f.halt() })
	return f
}

func (f *reloadFeeder) run() {
	defer close(f.done)
	start := time.Now()
	f.mu.Lock()
	f.start = start
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.end = time.Now()
		f.mu.Unlock()
	}()
	for n := 0; ; n++ {
		if wait := time.Until(start.Add(time.Duration(n) * f.every)); wait > 0 {
			select {
			case <-f.stop:
				return
			case <-time.After(wait):
			}
		}
		select {
		case <-f.stop:
			return
		default:
		}
		d := n % len(f.ds)
		if f.gate != nil {
			f.gate.RLock()
		}
		var tag int32
		if f.tag != nil {
			tag = f.tag.Load()
		}
		tok := f.w.client.Publish(fmt.Sprintf("%s/%06d-%s", f.topic, n, f.ds[d].name), 1, false, f.ds[d].png)
		ok := tok.WaitTimeout(30 * time.Second)
		if f.gate != nil {
			f.gate.RUnlock()
		}
		f.mu.Lock()
		if !ok || tok.Error() != nil {
			f.err = fmt.Errorf("publish input %d: acknowledged %v, %v", n, ok, tok.Error())
			f.mu.Unlock()
			return
		}
		f.inputs = append(f.inputs, reloadFeedInput{digit: d, tag: tag})
		f.mu.Unlock()
	}
}

// halt stops the feeder and returns what it published.
func (f *reloadFeeder) halt() ([]reloadFeedInput, error) {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.inputs), f.err
}

func (f *reloadFeeder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.inputs)
}

// rate is the feeder's achieved rate in inputs per second.
func (f *reloadFeeder) rate() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return float64(len(f.inputs)) / f.end.Sub(f.start).Seconds()
}

// reloadStopFeeding stops f and fails the test if a publish failed.
func reloadStopFeeding(t *testing.T, f *reloadFeeder) []reloadFeedInput {
	t.Helper()
	inputs, err := f.halt()
	if err != nil {
		t.Fatal(err)
	}
	return inputs
}

// reloadInputOf is the feeder's input number of a result (-1: not a
// feeder's).
func reloadInputOf(r payload.Result) int {
	topic, _, _ := strings.Cut(r.Source, "#")
	num, _, ok := strings.Cut(path.Base(topic), "-")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return -1
	}
	return n
}

// reloadClassTop is a classify result's output.
type reloadClassTop struct {
	Top []struct {
		Label string  `json:"label"`
		Index int     `json:"index"`
		Score float64 `json:"score"`
	} `json:"top"`
}

// reloadCheckEachOnce waits until pipeline has as many results as inputs, then
// checks each input has exactly one, made by model, whose labels agree with
// the version that says it made it ("v2-" labels <=> version 2), and that
// the answers are right (top-1 accuracy >= 0.95 over all). It returns the
// result of each input.
func reloadCheckEachOnce(t *testing.T, p *proc, w *watcher, pipeline, model string, inputs []reloadFeedInput, ds []digit) []payload.Result {
	t.Helper()
	waitFor(t, p, 120*time.Second, fmt.Sprintf("%d results of pipeline %s", len(inputs), pipeline), func() bool {
		return len(w.all(pipeline+"/result")) >= len(inputs)
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	byInput := make([]payload.Result, len(inputs))
	seen := make([]int, len(inputs))
	correct := 0
	for _, r := range w.results(t, pipeline) {
		n := reloadInputOf(r)
		if n < 0 || n >= len(inputs) {
			t.Fatalf("pipeline %s: a result for no input published: %s", pipeline, r.Source)
		}
		seen[n]++
		if seen[n] > 1 {
			t.Fatalf("pipeline %s: input %d (%s) has a second result", pipeline, n, r.Source)
		}
		byInput[n] = r
		if r.Model.Name != model || r.Model.PID == 0 || r.Pipeline != pipeline {
			t.Fatalf("pipeline %s: result %s names model %+v, pipeline %s", pipeline, r.Source, r.Model, r.Pipeline)
		}
		var out reloadClassTop
		if err := json.Unmarshal(r.Output, &out); err != nil || len(out.Top) == 0 {
			t.Fatalf("result output %s: %v", r.Output, err)
		}
		for _, e := range out.Top {
			if strings.HasPrefix(e.Label, "v2-") != (r.Model.Version == "2") {
				t.Fatalf("pipeline %s: input %d says version %s but answers with label %q: %s", pipeline, n, r.Model.Version, e.Label, r.Output)
			}
		}
		if strings.TrimPrefix(out.Top[0].Label, "v2-") == ds[inputs[n].digit].label {
			correct++
		}
	}
	for n, k := range seen {
		if k != 1 {
			t.Fatalf("pipeline %s: input %d has %d results, want exactly 1", pipeline, n, k)
		}
	}
	if acc := float64(correct) / float64(len(inputs)); acc < 0.95 {
		t.Fatalf("pipeline %s: top-1 accuracy %.3f < 0.95: results are not for their inputs", pipeline, acc)
	}
	return byInput
}

// ---------------------------------------------------------------------------
// Reading the message stream in the order it arrived.

func reloadSnapshot(w *watcher) []message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

func reloadEventAt(t *testing.T, m message) (payload.Event, bool) {
	if m.topic != "events" {
		return payload.Event{}, false
	}
	var e payload.Event
	if err := json.Unmarshal(m.payload, &e); err != nil {
		t.Fatalf("event is not JSON: %v: %s", err, m.payload)
	}
	return e, true
}

func reloadResultAt(t *testing.T, m message, pipeline string) (payload.Result, bool) {
	if m.topic != pipeline+"/result" {
		return payload.Result{}, false
	}
	var r payload.Result
	if err := json.Unmarshal(m.payload, &r); err != nil {
		t.Fatalf("result is not JSON: %v: %s", err, m.payload)
	}
	return r, true
}

func reloadEventPID(e payload.Event) int {
	if f, ok := e.Attrs["pid"].(float64); ok {
		return int(f)
	}
	return 0
}

// reloadWaitEvent waits for an event of type typ about model and version (any
// version when "") among the messages from index from on, and returns it
// and its index.
func reloadWaitEvent(t *testing.T, p *proc, w *watcher, from int, typ, model, version string, timeout time.Duration) (payload.Event, int) {
	t.Helper()
	var got payload.Event
	at := -1
	waitFor(t, p, timeout, fmt.Sprintf("event %s of %s version %q", typ, model, version), func() bool {
		msgs := reloadSnapshot(w)
		for i := from; i < len(msgs); i++ {
			if e, ok := reloadEventAt(t, msgs[i]); ok && e.Type == typ && e.Model == model && (version == "" || e.Version == version) {
				got, at = e, i
				return true
			}
		}
		return false
	})
	return got, at
}

// reloadCountEvents counts the events of type typ about model and version (any
// when "") in msgs.
func reloadCountEvents(t *testing.T, msgs []message, typ, model, version string) int {
	n := 0
	for _, m := range msgs {
		if e, ok := reloadEventAt(t, m); ok && e.Type == typ && e.Model == model && (version == "" || e.Version == version) {
			n++
		}
	}
	return n
}

// reloadServed is a version in one process.
type reloadServed struct {
	version string
	pid     int
}

// reloadCheckSwapOrder walks the messages in the order the watcher received them
// (one MQTT connection) and checks pipeline's results against model's
// version_serving events: after the event for X (which replaced Y), at most
// one result made by Y may still come (the frame that was in flight on Y),
// and only before the first result made by X; every other result is made by
// X, by the very process the event announced. Before the first event seen,
// results come from initial. It returns the version_serving events of model
// (in order) and fails if one of them reuses a process.
func reloadCheckSwapOrder(t *testing.T, msgs []message, model, pipeline string, initial reloadServed) []payload.Event {
	t.Helper()
	cur, prev := initial, reloadServed{}
	sawCur, late := false, 0
	var evs []payload.Event
	pids := map[int]bool{initial.pid: true}
	for i, m := range msgs {
		if e, ok := reloadEventAt(t, m); ok && e.Model == model && (e.Type == payload.EventVersionServing || e.Type == payload.EventPluginSwapped) {
			next := reloadServed{e.Version, reloadEventPID(e)}
			evs = append(evs, e)
			if next == cur && len(evs) == 1 {
				continue // the initial version's own event
			}
			if pids[next.pid] {
				t.Fatalf("message %d: %s announces pid %d, a process that served before: %s", i, e.Type, next.pid, e.Message)
			}
			pids[next.pid] = true
			cur, prev, sawCur, late = next, cur, false, 0
			continue
		}
		r, ok := reloadResultAt(t, m, pipeline)
		if !ok {
			continue
		}
		got := reloadServed{r.Model.Version, r.Model.PID}
		switch {
		case got == cur:
			sawCur = true
		case got == prev && !sawCur && late < 1:
			late++
		default:
			t.Fatalf("message %d: result %s made by version %s (pid %d) after version_serving %s (pid %d) replaced %s (pid %d); late results of the old so far %d, of the new %v",
				i, r.Source, got.version, got.pid, cur.version, cur.pid, prev.version, prev.pid, late, sawCur)
		}
	}
	return evs
}

// ---------------------------------------------------------------------------
// Processes.

// reloadChildrenOf lists the live (non-zombie) child processes of pid.
func reloadChildrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces.
		_, rest, ok := strings.Cut(string(b), ") ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			kids = append(kids, n)
		}
	}
	slices.Sort(kids)
	return kids
}

// reloadChildOf reports whether process pid exists (zombie or not) as a child of
// parent.
func reloadChildOf(pid, parent int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 2 {
		return false
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid == parent
}

// reloadLivePIDs lists the pids a model state reports (live processes).
func reloadLivePIDs(st payload.ModelState) map[string]int {
	out := map[string]int{}
	for v, vs := range st.Versions {
		if vs.PID != 0 {
			out[v] = vs.PID
		}
	}
	return out
}

// reloadCheckNoLeak waits until each model's state lists exactly one live pid,
// the serving one, the daemon's only plugin children are those, and none of
// retired (pids that served before) is still a process of the daemon.
func reloadCheckNoLeak(t *testing.T, p *proc, w *watcher, models []string, retired []int) {
	t.Helper()
	daemon := p.cmd.Process.Pid
	var want []int
	waitFor(t, p, 30*time.Second, "one plugin process per model and no other", func() bool {
		want = want[:0]
		for _, m := range models {
			st, ok := w.model(t, m)
			live := reloadLivePIDs(st)
			if !ok || len(live) != 1 || live[st.Serving] == 0 {
				return false
			}
			want = append(want, live[st.Serving])
		}
		slices.Sort(want)
		return slices.Equal(reloadChildrenOf(daemon), want)
	})
	for _, pid := range retired {
		if slices.Contains(want, pid) {
			continue
		}
		if reloadChildOf(pid, daemon) {
			t.Fatalf("plugin process %d of a retired version is still there", pid)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Logf("pid %d exists again, not as the daemon's child (reused)", pid)
		}
	}
}

// reloadPercentile of sorted-in-place values (nearest rank).
func reloadPercentile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[min(max(i, 0), len(v)-1)]
}

// reloadFinished is when the daemon finished a result (its clock, as events'
// times are).
func reloadFinished(r payload.Result) time.Time {
	return r.CapturedAt.Add(time.Duration(r.Timings.Total * float64(time.Millisecond)))
}

// ---------------------------------------------------------------------------
// Versions on disk.

// reloadStageVersion copies src into the model folder under a dot-name (ignored
// by the daemon), applies edit to its manifest and spoil to its files, and
// returns the staged folder.
func reloadStageVersion(t *testing.T, src, modelDir, name string, edit func(string) string, spoil func(t *testing.T, dir string)) string {
	t.Helper()
	staged := filepath.Join(modelDir, "."+name+".staged")
	os.RemoveAll(staged)
	tmp := filepath.Join(modelDir, "."+name+".tmp")
	copyVersion(t, src, tmp, edit) // writes .<name>.tmp.tmp, renames to .<name>.tmp
	if spoil != nil {
		spoil(t, tmp)
	}
	if err := os.Rename(tmp, staged); err != nil {
		t.Fatal(err)
	}
	return staged
}

// reloadExchange swaps two folders in one atomic step (renameat2 RENAME_EXCHANGE):
// the version folder is never missing nor partly replaced.
func reloadExchange(t *testing.T, a, b string) {
	t.Helper()
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("exchange %s and %s: %v", a, b, err)
	}
}

// ---------------------------------------------------------------------------
// 1. 100 swaps under load.

func TestHotReload100SwapsUnderLoadLoseAndDoubleNothing(t *testing.T) {
	const swaps = 100
	repo := reloadRepo(t, "lenet5", "other")
	copyVersion(t, filepath.Join(repo, "lenet5", "1"), filepath.Join(repo, "lenet5", "2"), relabel("v2-"))
	pipelines := `
[commands]
enabled = true

[pipelines.main]
sensor = "main"
model = "lenet5"

[pipelines.side]
sensor = "side"
model = "other"
`
	prefix := prefixOf(t)
	p, w := run(t, setup{broker: mosquitto.Start(t), repo: repo, models: reloadModels,
		sensors: reloadMqttSensor(t, "main") + reloadMqttSensor(t, "side"), extra: pipelines})
	w.serving(t, p, "lenet5", "main")
	side := w.serving(t, p, "other", "side")
	initial := reloadServingNow(t, w, "lenet5")
	if initial.version != "2" {
		t.Fatalf("the newest version should serve first: %+v", initial)
	}
	ds := digits(t)

	var gate sync.RWMutex
	var stable atomic.Int32 // the version known to serve (no swap under way); 0 during a swap
	stable.Store(2)
	main := reloadStartFeeder(t, w, prefix+"/in/main", 40*time.Millisecond, ds, &gate, &stable) // 25/s
	other := reloadStartFeeder(t, w, prefix+"/in/side", 100*time.Millisecond, ds, nil, nil)     // 10/s

	waitFor(t, p, 60*time.Second, "steady state before the swaps", func() bool { return main.count() >= 150 })
	swapStart := len(reloadSnapshot(w))
	began := time.Now()
	for i := range swaps {
		want := strconv.Itoa(1 + i%2) // pin 1, pin 2, pin 1, ...
		gate.Lock()
		stable.Store(0) // inputs from now on may meet either version
		gate.Unlock()
		from := len(reloadSnapshot(w))
		reply := w.command(t, p, prefix, payload.Command{Command: payload.CommandPin, Model: "lenet5", Version: want})
		if !reply.OK || !strings.Contains(reply.Message, "pinned to version "+want) {
			t.Fatalf("swap %d: pin %s: %+v", i+1, want, reply)
		}
		reloadWaitEvent(t, p, w, from, payload.EventVersionServing, "lenet5", want, 60*time.Second)
		n, _ := strconv.Atoi(want)
		gate.Lock()
		stable.Store(int32(n)) // published from now on: answered by want
		gate.Unlock()
		time.Sleep(150 * time.Millisecond)
	}
	swapTime := time.Since(began)
	stopAt := main.count() + 150 // about 6 s of steady state after the swaps
	waitFor(t, p, 60*time.Second, "steady state after the swaps", func() bool { return main.count() >= stopAt })
	inputs := reloadStopFeeding(t, main)
	sideInputs := reloadStopFeeding(t, other)
	t.Logf("fed %d inputs at %.1f/s to main (lenet5) and %d at %.1f/s to side (other); %d swaps took %s",
		len(inputs), main.rate(), len(sideInputs), other.rate(), swaps, swapTime.Round(time.Millisecond))

	// Exactly one right result per input on both pipelines.
	mainRes := reloadCheckEachOnce(t, p, w, "main", "lenet5", inputs, ds)
	sideRes := reloadCheckEachOnce(t, p, w, "side", "other", sideInputs, ds)

	// An input published while version X was known to serve (its
	// version_serving had arrived, the next pin was not yet sent) is
	// answered by X.
	tagged := 0
	for n, in := range inputs {
		if in.tag == 0 {
			continue
		}
		tagged++
		if got := mainRes[n].Model.Version; got != strconv.Itoa(int(in.tag)) {
			t.Fatalf("input %d was published while version %d served, but version %s answered it", n, in.tag, got)
		}
	}

	// The versions of results follow the swaps in the order one MQTT
	// connection saw them: old then new, never new then old.
	msgs := reloadSnapshot(w)
	evs := reloadCheckSwapOrder(t, msgs, "lenet5", "main", initial)
	for typ, want := range map[string]int{payload.EventVersionLoading: swaps, payload.EventVersionServing: swaps,
		payload.EventVersionRetired: swaps, payload.EventVersionRejected: 0, payload.EventPluginSwapped: 0} {
		if got := reloadCountEvents(t, msgs[swapStart:], typ, "lenet5", ""); got != want {
			t.Fatalf("%d %s events of lenet5 since the swaps began, want %d", got, typ, want)
		}
	}
	if n := reloadCountEvents(t, msgs[swapStart:], payload.EventVersionLoading, "other", "") + reloadCountEvents(t, msgs[swapStart:], payload.EventVersionServing, "other", "") +
		reloadCountEvents(t, msgs, payload.EventPluginRestarted, "", ""); n != 0 {
		t.Fatalf("%d loads, swaps or restarts outside lenet5's swaps", n)
	}
	for n, r := range sideRes {
		if r.Model.Version != "1" || r.Model.PID != side.PID {
			t.Fatalf("side input %d answered by version %s pid %d; the other model's process %d should never change", n, r.Model.Version, r.Model.PID, side.PID)
		}
	}

	// Latency: during swaps (version_loading to version_serving + 1s) and
	// in steady state, on the daemon's clock.
	type window struct{ from, to time.Time }
	var windows []window
	var loading time.Time
	for _, m := range msgs {
		if e, ok := reloadEventAt(t, m); ok && e.Model == "lenet5" {
			switch e.Type {
			case payload.EventVersionLoading:
				loading = e.Time
			case payload.EventVersionServing:
				if !loading.IsZero() {
					windows = append(windows, window{loading, e.Time.Add(time.Second)})
					loading = time.Time{}
				}
			}
		}
	}
	inSwap := func(r payload.Result) bool {
		at := reloadFinished(r)
		for _, w := range windows {
			if !at.Before(w.from) && !at.After(w.to) {
				return true
			}
		}
		return false
	}
	split := func(rs []payload.Result) (swap, steady []float64) {
		for _, r := range rs {
			if inSwap(r) {
				swap = append(swap, r.Timings.Total)
			} else {
				steady = append(steady, r.Timings.Total)
			}
		}
		return
	}
	ms, mst := split(mainRes)
	ss, sst := split(sideRes)
	t.Logf("results: main %d (%d published while a version was known to serve), side %d; %d version_serving events of lenet5",
		len(mainRes), tagged, len(sideRes), len(evs))
	t.Logf("main (lenet5, swapping) timings_ms.total: during swaps n=%d p50 %.2f p99 %.2f; steady n=%d p50 %.2f p99 %.2f",
		len(ms), reloadPercentile(ms, .5), reloadPercentile(ms, .99), len(mst), reloadPercentile(mst, .5), reloadPercentile(mst, .99))
	t.Logf("side (other model) timings_ms.total: during swaps n=%d p50 %.2f p99 %.2f; steady n=%d p50 %.2f p99 %.2f",
		len(ss), reloadPercentile(ss, .5), reloadPercentile(ss, .99), len(sst), reloadPercentile(sst, .5), reloadPercentile(sst, .99))
	if len(ms) == 0 || len(mst) == 0 || len(ss) == 0 || len(sst) == 0 {
		t.Fatalf("no results in one of the windows: %d %d %d %d", len(ms), len(mst), len(ss), len(sst))
	}

	// No plugin process left behind: one per model, and every process that
	// served lenet5 before is gone.
	var pids []int
	for _, e := range evs {
		pids = append(pids, reloadEventPID(e))
	}
	pids = append(pids, initial.pid)
	reloadCheckNoLeak(t, p, w, []string{"lenet5", "other"}, pids)
	st, _ := w.model(t, "lenet5")
	for v, vs := range st.Versions {
		if v != st.Serving && (vs.State != payload.StateRetired || vs.PID != 0) {
			t.Fatalf("version %s after the swaps: %+v", v, vs)
		}
	}
}

// reloadServingNow is the version serving model and its process, from the
// retained state.
func reloadServingNow(t *testing.T, w *watcher, model string) reloadServed {
	t.Helper()
	st, ok := w.model(t, model)
	if !ok || st.Serving == "" {
		t.Fatalf("model %s serves nothing: %+v", model, st)
	}
	return reloadServed{st.Serving, st.Versions[st.Serving].PID}
}

// ---------------------------------------------------------------------------
// Shared by the single-model tests: one mqtt sensor "main", one pipeline
// "main" on lenet5.

const reloadMainPipeline = `
[pipelines.main]
sensor = "main"
model = "lenet5"
`

// reloadStartMain runs a daemon on repo with the main pipeline (and extra config)
// and waits until version serves it.
func reloadStartMain(t *testing.T, repo, extra, version string) (*proc, *watcher) {
	t.Helper()
	p, w := run(t, setup{broker: mosquitto.Start(t), repo: repo, models: reloadModels,
		sensors: reloadMqttSensor(t, "main"), extra: reloadMainPipeline + extra})
	w.serving(t, p, "lenet5", "main")
	if now := reloadServingNow(t, w, "lenet5"); now.version != version {
		t.Fatalf("version %s serves, want %s", now.version, version)
	}
	return p, w
}

// reloadFeedMain feeds the main sensor at 20 images/s.
func reloadFeedMain(t *testing.T, w *watcher, ds []digit) *reloadFeeder {
	return reloadStartFeeder(t, w, prefixOf(t)+"/in/main", 50*time.Millisecond, ds, nil, nil)
}

// reloadResultsSince counts pipeline's results among msgs[from:] made by version.
func reloadResultsSince(t *testing.T, w *watcher, from int, pipeline, version string) int {
	n := 0
	msgs := reloadSnapshot(w)
	for _, m := range msgs[min(from, len(msgs)):] {
		if r, ok := reloadResultAt(t, m, pipeline); ok && r.Model.Version == version {
			n++
		}
	}
	return n
}

// reloadVersionsOf lists the versions that made pipeline's results among msgs,
// with counts.
func reloadVersionsOf(t *testing.T, msgs []message, pipeline string) map[string]int {
	out := map[string]int{}
	for _, m := range msgs {
		if r, ok := reloadResultAt(t, m, pipeline); ok {
			out[r.Model.Version]++
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// 2. Broken versions.

func TestHotReloadBrokenVersionsKeepTheOldServing(t *testing.T) {
	for _, tc := range []struct {
		name string
		// spoil breaks a copy of version 1 (relabelled v2-).
		spoil func(t *testing.T, dir string)
		// edit changes its manifest.
		edit func(string) string
		// reason holds words the rejection must say.
		reason []string
		// loads: whether a process is started for it (0: the repository
		// check rejects it before any process runs; 1: the load or the
		// validation does, once).
		loads int
	}{
		{
			name: "random bytes as saved_model.pb",
			spoil: func(t *testing.T, dir string) {
				rng := rand.New(rand.NewPCG(7, 7))
				b := make([]byte, 73582)
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				if err := os.WriteFile(filepath.Join(dir, "saved_model.pb"), b, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			reason: []string{"/lenet5/2/saved_model.pb"},
		},
		{
			name: "variables data cut to half",
			spoil: func(t *testing.T, dir string) {
				data := filepath.Join(dir, "variables", "variables.data-00000-of-00001")
				st, err := os.Stat(data)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(data, st.Size()/2); err != nil {
					t.Fatal(err)
				}
			},
			reason: []string{"/lenet5/2/variables/variables.data-00000-of-00001", "the index needs"},
		},
		{
			name: "a signature that does not fit the manifest",
			edit: func(m string) string {
				m = relabel("v2-")(m)
				if !strings.Contains(m, `key = "images"`) {
					panic("manifest without input.key")
				}
				return strings.Replace(m, `key = "images"`, `key = "pixels"`, 1)
			},
			reason: []string{`"pixels"`, "unknown tensor"},
			loads:  1,
		},
		{
			name: "golden outputs it does not reproduce",
			spoil: func(t *testing.T, dir string) {
				path := filepath.Join(dir, "golden", "output_logits.npy")
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				a, err := npy.Decode(b)
				if err != nil || a.Descr != "<f4" {
					t.Fatalf("%s: %v, descr %q", path, err, a.Descr)
				}
				data := b[len(b)-len(a.Data):] // the values after the header
				for i := 0; i+4 <= len(data); i += 4 {
					v := math.Float32frombits(binary.LittleEndian.Uint32(data[i:]))
					binary.LittleEndian.PutUint32(data[i:], math.Float32bits(v+1))
				}
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			reason: []string{"golden/output_logits.npy", "tolerance"},
			loads:  1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := reloadRepo(t, "lenet5")
			modelDir := filepath.Join(repo, "lenet5")
			v1 := filepath.Join(modelDir, "1")
			p, w := reloadStartMain(t, repo, "", "1")
			old := reloadServingNow(t, w, "lenet5")
			ds := digits(t)
			f := reloadFeedMain(t, w, ds)
			waitFor(t, p, 60*time.Second, "results from version 1", func() bool { return reloadResultsSince(t, w, 0, "main", "1") >= 10 })

			// Broken version 2, dropped in atomically.
			edit := tc.edit
			if edit == nil {
				edit = relabel("v2-")
			}
			broken := reloadStageVersion(t, v1, modelDir, "2", edit, tc.spoil)
			if err := os.Rename(broken, filepath.Join(modelDir, "2")); err != nil {
				t.Fatal(err)
			}
			rejected, at := reloadWaitEvent(t, p, w, 0, payload.EventVersionRejected, "lenet5", "2", 60*time.Second)
			for _, word := range tc.reason {
				if !strings.Contains(rejected.Message, word) {
					t.Fatalf("version_rejected does not say %q: %s", word, rejected.Message)
				}
			}
			var st payload.ModelState
			waitFor(t, p, 10*time.Second, "version 2 failed in the model state", func() bool {
				st, _ = w.model(t, "lenet5")
				return st.Versions["2"].State == payload.StateFailed
			})
			for _, word := range tc.reason {
				if !strings.Contains(st.Versions["2"].Reason, word) {
					t.Fatalf("the state of version 2 does not say %q: %+v", word, st.Versions["2"])
				}
			}
			if st.Serving != "1" || st.Versions["1"].PID != old.pid || st.Versions["1"].State != payload.StateServing {
				t.Fatalf("version 1 should still serve in pid %d: %+v", old.pid, st)
			}
			// The old version keeps answering, and version 2 is not tried
			// again while its files stay as they are (a rescan passes).
			more := reloadResultsSince(t, w, at, "main", "1") + 50
			waitFor(t, p, 60*time.Second, "50 more results from version 1", func() bool { return reloadResultsSince(t, w, at, "main", "1") >= more })
			time.Sleep(2500 * time.Millisecond) // longer than rescan
			msgs := reloadSnapshot(w)
			if got := reloadVersionsOf(t, msgs, "main"); len(got) != 1 || got["1"] == 0 {
				t.Fatalf("results by version while version 2 is broken: %v", got)
			}
			if n := reloadCountEvents(t, msgs, payload.EventVersionLoading, "lenet5", "2"); n != tc.loads {
				t.Fatalf("%d version_loading events for the broken version 2, want %d", n, tc.loads)
			}
			if n := reloadCountEvents(t, msgs, payload.EventVersionRejected, "lenet5", "2"); n != 1 {
				t.Fatalf("%d version_rejected events for the broken version 2, want 1 (not retried)", n)
			}
			if pids := reloadChildrenOf(p.cmd.Process.Pid); !slices.Equal(pids, []int{old.pid}) {
				t.Fatalf("plugin processes %v, want only version 1's %d", pids, old.pid)
			}

			// Fixed: a good version 2 replaces the broken folder in one step.
			good := reloadStageVersion(t, v1, modelDir, "2", relabel("v2-"), nil)
			from := len(reloadSnapshot(w))
			reloadExchange(t, good, filepath.Join(modelDir, "2"))
			os.RemoveAll(good) // the broken one now
			servingEv, _ := reloadWaitEvent(t, p, w, from, payload.EventVersionServing, "lenet5", "2", 60*time.Second)
			waitFor(t, p, 60*time.Second, "results from version 2", func() bool { return reloadResultsSince(t, w, from, "main", "2") >= 20 })
			inputs := reloadStopFeeding(t, f)
			reloadCheckEachOnce(t, p, w, "main", "lenet5", inputs, ds)
			reloadCheckSwapOrder(t, reloadSnapshot(w), "lenet5", "main", old)
			if st, _ := w.model(t, "lenet5"); st.Versions["2"].PID != reloadEventPID(servingEv) || st.Versions["2"].Validation == nil ||
				st.Versions["2"].Validation.Samples == 0 || st.Versions["2"].Reason != "" {
				t.Fatalf("version 2 after the fix: %+v", st.Versions["2"])
			}
			reloadCheckNoLeak(t, p, w, []string{"lenet5"}, []int{old.pid})
		})
	}
}

// ---------------------------------------------------------------------------
// 3. A slow copy straight under the final name.

func TestHotReloadASlowNonAtomicCopyIsNotServedUntilComplete(t *testing.T) {
	repo := reloadRepo(t, "lenet5")
	modelDir := filepath.Join(repo, "lenet5")
	// The source: version 1 relabelled, staged out of the daemon's sight.
	src := reloadStageVersion(t, filepath.Join(modelDir, "1"), t.TempDir(), "src", relabel("v2-"), nil)
	p, w := reloadStartMain(t, repo, "", "1")
	old := reloadServingNow(t, w, "lenet5")
	ds := digits(t)
	f := reloadFeedMain(t, w, ds)
	waitFor(t, p, 60*time.Second, "results from version 1", func() bool { return reloadResultsSince(t, w, 0, "main", "1") >= 10 })

	// Every file but the two big ones, then the variables' data in five
	// chunks and saved_model.pb last in two, pausing longer than settle
	// (300ms) and the debounce after each, so that the daemon sees the
	// version settle half-written several times.
	dst := filepath.Join(modelDir, "2")
	data := filepath.Join("variables", "variables.data-00000-of-00001")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if rel == data || rel == "saved_model.pb" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	writeSlowly := func(rel string, chunks int) {
		b, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, rel))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		for i := range chunks {
			if i > 0 {
				time.Sleep(800 * time.Millisecond)
			}
			// Not complete yet (the last chunk is still to come).
			if msgs := reloadSnapshot(w); reloadCountEvents(t, msgs, payload.EventVersionLoading, "lenet5", "2") != 0 {
				t.Fatalf("version 2 is loading while %s has %d of %d chunks", rel, i, chunks)
			}
			if _, err := out.Write(b[i*len(b)/chunks : (i+1)*len(b)/chunks]); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeSlowly(data, 5)
	time.Sleep(800 * time.Millisecond)
	writeSlowly("saved_model.pb", 2)
	copied := len(reloadSnapshot(w))

	msgs := reloadSnapshot(w)
	if got := reloadVersionsOf(t, msgs, "main"); len(got) != 1 || got["1"] == 0 {
		t.Fatalf("results by version during the copy: %v", got)
	}
	// The daemon did look at the half-written version, and said why it
	// could not serve it yet.
	partial := 0
	for _, m := range msgs {
		if e, ok := reloadEventAt(t, m); ok && e.Type == payload.EventVersionRejected && e.Version == "2" {
			// Each file being written is either missing or cut short.
			if !strings.Contains(e.Message, "still being copied?") && !strings.Contains(e.Message, "saved_model.pb: missing") {
				t.Fatalf("a half-written version 2 rejected for another reason: %s", e.Message)
			}
			partial++
		}
	}
	t.Logf("the daemon saw version 2 half-written %d times", partial)
	if partial == 0 {
		t.Fatalf("no sign the daemon saw the half-written version 2: the pauses did not exercise the check")
	}

	ev, at := reloadWaitEvent(t, p, w, 0, payload.EventVersionServing, "lenet5", "2", 60*time.Second)
	if at < copied {
		t.Fatalf("version 2 served before its copy was complete: %s", ev.Message)
	}
	waitFor(t, p, 60*time.Second, "results from version 2", func() bool { return reloadResultsSince(t, w, at, "main", "2") >= 20 })
	inputs := reloadStopFeeding(t, f)
	reloadCheckEachOnce(t, p, w, "main", "lenet5", inputs, ds)
	reloadCheckSwapOrder(t, reloadSnapshot(w), "lenet5", "main", old)
	if n := reloadCountEvents(t, reloadSnapshot(w), payload.EventVersionLoading, "lenet5", "2"); n != 1 {
		t.Fatalf("%d loads of version 2, want 1 (once complete)", n)
	}
	reloadCheckNoLeak(t, p, w, []string{"lenet5"}, []int{old.pid})
}

// ---------------------------------------------------------------------------
// 4. Rollback by removing the newest version.

func TestHotReloadRollbackByRemovingTheNewestVersion(t *testing.T) {
	repo := reloadRepo(t, "lenet5")
	modelDir := filepath.Join(repo, "lenet5")
	copyVersion(t, filepath.Join(modelDir, "1"), filepath.Join(modelDir, "2"), relabel("v2-"))
	p, w := reloadStartMain(t, repo, "", "2")
	v2 := reloadServingNow(t, w, "lenet5")
	ds := digits(t)
	f := reloadFeedMain(t, w, ds)
	waitFor(t, p, 60*time.Second, "results from version 2", func() bool { return reloadResultsSince(t, w, 0, "main", "2") >= 20 })

	from := len(reloadSnapshot(w))
	if err := os.RemoveAll(filepath.Join(modelDir, "2")); err != nil {
		t.Fatal(err)
	}
	ev, at := reloadWaitEvent(t, p, w, from, payload.EventVersionServing, "lenet5", "1", 60*time.Second)
	if ev.Attrs["replaces"] != "2" {
		t.Fatalf("version_serving 1 does not say it replaces 2: %+v", ev)
	}
	reloadWaitEvent(t, p, w, from, payload.EventVersionRetired, "lenet5", "2", 30*time.Second)
	waitFor(t, p, 60*time.Second, "results from version 1", func() bool { return reloadResultsSince(t, w, at, "main", "1") >= 20 })
	inputs := reloadStopFeeding(t, f)
	reloadCheckEachOnce(t, p, w, "main", "lenet5", inputs, ds)
	reloadCheckSwapOrder(t, reloadSnapshot(w), "lenet5", "main", v2)
	st, _ := w.model(t, "lenet5")
	if st.Serving != "1" || st.Versions["2"].State != payload.StateRetired || st.Versions["2"].PID != 0 {
		t.Fatalf("model state after removing version 2: %+v", st)
	}
	reloadCheckNoLeak(t, p, w, []string{"lenet5"}, []int{v2.pid})
}

// ---------------------------------------------------------------------------
// 5. Pinning through the config and through commands.

func TestHotReloadPinningThroughConfigAndCommand(t *testing.T) {
	t.Run("enabled", func(t *testing.T) {
		repo := reloadRepo(t, "lenet5")
		modelDir := filepath.Join(repo, "lenet5")
		copyVersion(t, filepath.Join(modelDir, "1"), filepath.Join(modelDir, "2"), relabel("v2-"))
		prefix := prefixOf(t)
		p, w := reloadStartMain(t, repo, "\n[serving.lenet5]\nversion = \"1\"\n\n[commands]\nenabled = true\n", "1")
		v1 := reloadServingNow(t, w, "lenet5")
		if st, _ := w.model(t, "lenet5"); st.Target != "1" || st.Policy.Version != "1" || st.Policy.Pinned != "" {
			t.Fatalf("model state with version = \"1\" in the config: %+v", st)
		}
		ds := digits(t)
		f := reloadFeedMain(t, w, ds)
		waitFor(t, p, 60*time.Second, "results from version 1", func() bool { return reloadResultsSince(t, w, 0, "main", "1") >= 20 })
		if n := reloadCountEvents(t, reloadSnapshot(w), payload.EventVersionLoading, "lenet5", "2"); n != 0 {
			t.Fatalf("version 2 was loaded although the config pins version 1")
		}

		// swap sends a command and waits for the version it should bring.
		swap := func(c payload.Command, want, message string) payload.Event {
			t.Helper()
			from := len(reloadSnapshot(w))
			reply := w.command(t, p, prefix, c)
			if !reply.OK || reply.Error != "" || !strings.Contains(reply.Message, message) || reply.Command != c.Command {
				t.Fatalf("%s %s: reply %+v, want ok and %q", c.Command, c.Version, reply, message)
			}
			ev, at := reloadWaitEvent(t, p, w, from, payload.EventVersionServing, "lenet5", want, 60*time.Second)
			waitFor(t, p, 60*time.Second, "results from version "+want, func() bool { return reloadResultsSince(t, w, at, "main", want) >= 10 })
			return ev
		}
		swap(payload.Command{Command: payload.CommandPin, Model: "lenet5", Version: "2"}, "2", "model lenet5 pinned to version 2")
		if st, _ := w.model(t, "lenet5"); st.Policy.Pinned != "2" || st.Policy.Version != "1" || st.Serving != "2" {
			t.Fatalf("after pin 2: %+v", st)
		}
		swap(payload.Command{Command: payload.CommandRollback, Model: "lenet5"}, "1", "rolled back to version 1")
		if st, _ := w.model(t, "lenet5"); st.Policy.Pinned != "1" || st.Serving != "1" {
			t.Fatalf("after rollback: %+v", st)
		}
		// A rollback from the lowest version has nowhere to go.
		if r := w.command(t, p, prefix, payload.Command{Command: payload.CommandRollback, Model: "lenet5"}); r.OK || !strings.Contains(r.Error, "no servable version below 1") {
			t.Fatalf("rollback from version 1: %+v", r)
		}
		// Unpinned, the model follows its config: version 1, where it is,
		// so nothing loads...
		from := len(reloadSnapshot(w))
		if r := w.command(t, p, prefix, payload.Command{Command: payload.CommandUnpin, Model: "lenet5"}); !r.OK || !strings.Contains(r.Message, "follows its config") {
			t.Fatalf("unpin: %+v", r)
		}
		waitFor(t, p, 10*time.Second, "the pin gone from the state", func() bool {
			st, _ := w.model(t, "lenet5")
			return st.Policy.Pinned == "" && st.Serving == "1" && st.Target == "1"
		})
		// ...and from version 2, it goes back to version 1.
		swap(payload.Command{Command: payload.CommandPin, Model: "lenet5", Version: "2"}, "2", "pinned to version 2")
		swap(payload.Command{Command: payload.CommandUnpin, Model: "lenet5"}, "1", "model lenet5 follows its config again")
		if st, _ := w.model(t, "lenet5"); st.Policy.Pinned != "" || st.Serving != "1" {
			t.Fatalf("after unpin: %+v", st)
		}
		if n := reloadCountEvents(t, reloadSnapshot(w)[from:], payload.EventVersionLoading, "lenet5", ""); n != 2 {
			t.Fatalf("%d loads after the first unpin, want 2 (pin 2, unpin)", n)
		}

		// A version that does not exist is refused, and nothing changes.
		from = len(reloadSnapshot(w))
		r := w.command(t, p, prefix, payload.Command{Command: payload.CommandPin, Model: "lenet5", Version: "7"})
		if r.OK || !strings.Contains(r.Error, "no version 7") || r.Message != "" {
			t.Fatalf("pin 7: %+v", r)
		}
		if r := w.command(t, p, prefix, payload.Command{Command: payload.CommandPin, Model: "lenet6", Version: "1"}); r.OK || !strings.Contains(r.Error, `"lenet6"`) {
			t.Fatalf("pin of a model no pipeline uses: %+v", r)
		}
		if n := reloadCountEvents(t, reloadSnapshot(w)[from:], payload.EventVersionLoading, "lenet5", ""); n != 0 {
			t.Fatalf("a refused pin loaded a version")
		}
		if st, _ := w.model(t, "lenet5"); st.Policy.Pinned != "" || st.Serving != "1" {
			t.Fatalf("after a refused pin: %+v", st)
		}
		inputs := reloadStopFeeding(t, f)
		reloadCheckEachOnce(t, p, w, "main", "lenet5", inputs, ds)
		reloadCheckSwapOrder(t, reloadSnapshot(w), "lenet5", "main", v1)
		reloadCheckNoLeak(t, p, w, []string{"lenet5"}, nil)
	})

	t.Run("disabled", func(t *testing.T) {
		repo := reloadRepo(t, "lenet5")
		modelDir := filepath.Join(repo, "lenet5")
		copyVersion(t, filepath.Join(modelDir, "1"), filepath.Join(modelDir, "2"), relabel("v2-"))
		p, w := reloadStartMain(t, repo, "\n[serving.lenet5]\nversion = \"1\"\n\n[commands]\nenabled = false\n", "1")
		for _, c := range []payload.Command{
			{Command: payload.CommandPin, Model: "lenet5", Version: "2"},
			{Command: payload.CommandReload},
		} {
			r := w.command(t, p, prefixOf(t), c)
			if r.OK || !strings.Contains(r.Error, "commands are disabled") || r.ID != "" && r.Command != c.Command {
				t.Fatalf("%s with commands disabled: %+v", c.Command, r)
			}
		}
		msgs := reloadSnapshot(w)
		if n := reloadCountEvents(t, msgs, payload.EventVersionLoading, "lenet5", "2") + reloadCountEvents(t, msgs, payload.EventConfigReloaded, "", ""); n != 0 {
			t.Fatalf("a refused command was carried out")
		}
		if st, _ := w.model(t, "lenet5"); st.Serving != "1" || st.Policy.Pinned != "" {
			t.Fatalf("model state after refused commands: %+v", st)
		}
	})
}

// A reload that removes an mqtt sensor ends its subscription. Were it left,
// every image still published on the removed sensor's topic would reach a
// handler that no longer acknowledges anything, and once Mosquitto's window
// of messages in flight to the daemon (20) was full of them, nothing else
// would be delivered: not the other sensor's images, not commands.
func TestARemovedMQTTSensorsSubscriptionEndsAndItsTopicHoldsNothingElseBack(t *testing.T) {
	const sensorsTables = `
[sensors.front]
kind = "mqtt"
[sensors.back]
kind = "mqtt"
`
	const pipelines = `
[commands]
enabled = true
[pipelines.back]
sensor = "back"
model = "lenet5"
`
	const frontPipeline = `
[pipelines.front]
sensor = "front"
model = "lenet5"
`
	broker := mosquitto.Start(t)
	prefix := prefixOf(t)
	p, w := run(t, setup{broker: broker, sensors: sensorsTables, extra: pipelines + frontPipeline})
	ds := digits(t)
	w.serving(t, p, "lenet5", "front")
	w.publish(t, prefix+"/in/front", ds[0].png)
	waitFor(t, p, 30*time.Second, "front's result", func() bool { return len(w.results(t, "front")) == 1 })

	config := p.cmd.Args[len(p.cmd.Args)-1]
	opsRewrite(t, config, func(s string) string {
		s = strings.Replace(s, frontPipeline, "", 1)
		return strings.Replace(s, "[sensors.front]\nkind = \"mqtt\"\n", "", 1)
	}, false)
	if err := p.cmd.Process.Signal(unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, 30*time.Second, "the reload", func() bool { return len(w.eventsOf(t, payload.EventConfigReloaded)) == 1 })

	// More images on the removed topic than Mosquitto keeps in flight.
	for _, d := range ds[1:31] {
		w.publish(t, prefix+"/in/front", d.png)
	}
	for _, d := range ds[31:36] {
		w.publish(t, prefix+"/in/back", d.png)
	}
	waitFor(t, p, 30*time.Second, "back's 5 results", func() bool { return len(w.results(t, "back")) == 5 })
	if r := w.command(t, p, prefix, payload.Command{Command: "reload"}); !r.OK {
		t.Fatalf("a command after the removed topic's images: %+v", r)
	}
	if n := len(w.results(t, "front")); n != 1 {
		t.Errorf("results of the removed pipeline: %d, want the 1 from before the reload", n)
	}
}
