package e2e

// Operations under load: plugin binaries swapped, the config reloaded
// (SIGHUP and a changed file), a broken model next to a healthy one on one
// sensor, a stopped plugin, pipelines sharing a process, and many reload
// cycles checked for leaks. Real Mosquitto, real plugin processes, real
// TensorFlow. Durations are never asserted: the machine is shared.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// opsModels are the [models] keys of every test here: versions and plugin
// binaries are taken 300 ms after their files stop changing.
const opsModels = "settle = \"300ms\"\nrescan = \"2s\"\n"

// opsLog reads what a watcher recorded, incrementally: results by pipeline
// and events, each parsed once however often a test polls.
type opsLog struct {
	t       *testing.T
	w       *watcher
	next    int
	results map[string][]payload.Result
	events  []payload.Event
}

func opsRecord(t *testing.T, w *watcher) *opsLog {
	return &opsLog{t: t, w: w, results: map[string][]payload.Result{}}
}

func (l *opsLog) sync() {
	l.w.mu.Lock()
	msgs := l.w.msgs[l.next:]
	l.next = len(l.w.msgs)
	l.w.mu.Unlock()
	for _, m := range msgs {
		switch {
		case m.topic == "events":
			var e payload.Event
			if err := json.Unmarshal(m.payload, &e); err != nil {
				l.t.Fatalf("event is not JSON: %v: %s", err, m.payload)
			}
			l.events = append(l.events, e)
		case strings.HasSuffix(m.topic, "/result"):
			var r payload.Result
			if err := json.Unmarshal(m.payload, &r); err != nil {
				l.t.Fatalf("result is not JSON: %v: %s", err, m.payload)
			}
			l.results[r.Pipeline] = append(l.results[r.Pipeline], r)
		}
	}
}

// of returns the results of pipeline so far.
func (l *opsLog) of(pipeline string) []payload.Result {
	l.sync()
	return l.results[pipeline]
}

// eventsOf returns the events of type typ from index from of all events.
func (l *opsLog) eventsOf(typ string, from int) []payload.Event {
	l.sync()
	var es []payload.Event
	for _, e := range l.events[min(from, len(l.events)):] {
		if e.Type == typ {
			es = append(es, e)
		}
	}
	return es
}

// mark is the index of the next event: what a later wait starts from.
func (l *opsLog) mark() int {
	l.sync()
	return len(l.events)
}

// waitEvent waits for an event at index from or later that match accepts;
// it returns the event and the index after it.
func (l *opsLog) waitEvent(p *proc, from int, timeout time.Duration, what string, match func(payload.Event) bool) (payload.Event, int) {
	l.t.Helper()
	var found payload.Event
	next := from
	waitFor(l.t, p, timeout, what, func() bool {
		l.sync()
		for ; next < len(l.events); next++ {
			if match(l.events[next]) {
				found = l.events[next]
				next++
				return true
			}
		}
		return false
	})
	return found, next
}

// waitResults waits until pipeline has at least n results that keep accepts
// (nil: all).
func (l *opsLog) waitResults(p *proc, pipeline string, n int, timeout time.Duration, what string, keep func(payload.Result) bool) {
	l.t.Helper()
	waitFor(l.t, p, timeout, what, func() bool {
		c := 0
		for _, r := range l.of(pipeline) {
			if keep == nil || keep(r) {
				c++
			}
		}
		return c >= n
	})
}

// opsTop is a classify result's labels, best first.
func opsTop(t *testing.T, r payload.Result) []string {
	t.Helper()
	var out struct {
		Top []struct {
			Label string  `json:"label"`
			Score float64 `json:"score"`
		} `json:"top"`
	}
	if err := json.Unmarshal(r.Output, &out); err != nil {
		t.Fatalf("result output %s: %v", r.Output, err)
	}
	labels := make([]string, len(out.Top))
	for i, x := range out.Top {
		labels[i] = x.Label
	}
	return labels
}

// opsDigitOf maps a dropped file ("<tag>-digit-017.png", in any folder) to
// the digit's index.
func opsDigitOf(source string) int {
	base := filepath.Base(source)
	i := strings.LastIndex(base, "digit-")
	if i < 0 {
		return -1
	}
	return indexOfName(base[i:])
}

// opsExactlyOnce waits until every file in names has a result on pipeline,
// then checks that none has two, that no result is for a file not dropped,
// that each result names a model and a pid, and that top-1 is right for at
// least 90% of them. It returns the results by file name.
func opsExactlyOnce(t *testing.T, p *proc, l *opsLog, pipeline string, names []string, ds []digit) map[string]payload.Result {
	t.Helper()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		got := map[string]bool{}
		for _, r := range l.of(pipeline) {
			got[filepath.Base(r.Source)] = true
		}
		missing := 0
		for n := range want {
			if !got[n] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) || !p.running() {
			t.Fatalf("pipeline %s: %d of %d inputs have no result (daemon running: %v)", pipeline, missing, len(want), p.running())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // a duplicate would arrive now
	by := map[string]payload.Result{}
	correct := 0
	for _, r := range l.of(pipeline) {
		name := filepath.Base(r.Source)
		if !want[name] {
			t.Fatalf("pipeline %s: a result for %s, which was not dropped", pipeline, r.Source)
		}
		if _, dup := by[name]; dup {
			t.Fatalf("pipeline %s: %s has two results (versions %s and %s)", pipeline, name, by[name].Model.Version, r.Model.Version)
		}
		if r.Model.Name == "" || r.Model.Version == "" || r.Model.PID <= 0 {
			t.Fatalf("pipeline %s: result without its model: %+v", pipeline, r.Model)
		}
		by[name] = r
		if top := opsTop(t, r); len(top) > 0 && strings.HasSuffix(top[0], ds[opsDigitOf(name)].label) {
			correct++
		}
	}
	if acc := float64(correct) / float64(len(by)); acc < 0.9 {
		t.Fatalf("pipeline %s: top-1 right for %.3f of %d inputs", pipeline, acc, len(by))
	}
	return by
}

// opsFeeder drops digits into a dir sensor's folder at a steady pace (the
// way a camera saving stills would), each under a new name.
type opsFeeder struct {
	stop, done chan struct{}
	once       sync.Once
	mu         sync.Mutex
	names      []string
	err        error
}

func opsFeed(t *testing.T, dir string, ds []digit, every time.Duration, tag string) *opsFeeder {
	f := &opsFeeder{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			d := ds[i%len(ds)]
			name := fmt.Sprintf("%s-%05d-%s", tag, i, d.name)
			tmp := filepath.Join(dir, "."+name+".part")
			err := os.WriteFile(tmp, d.png, 0o644)
			if err == nil {
				err = os.Rename(tmp, filepath.Join(dir, name))
			}
			f.mu.Lock()
			if err != nil {
				f.err = err
				f.mu.Unlock()
				return
			}
			f.names = append(f.names, name)
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() { f.halt(t) })
	return f
}

// halt stops the feeder and returns the names of the files it dropped.
func (f *opsFeeder) halt(t *testing.T) []string {
	f.once.Do(func() { close(f.stop) })
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Fatalf("feeder: %v", f.err)
	}
	return slices.Clone(f.names)
}

func (f *opsFeeder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.names)
}

// opsInstall puts data at path the atomic way: written under another name
// in the same folder, then renamed over.
func opsInstall(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func opsSHA(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// opsExeSHA is the SHA-256 of the executable process pid runs.
func opsExeSHA(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatalf("executable of %d: %v", pid, err)
	}
	return opsSHA(b)
}

// opsStat is a process's state letter and parent pid ("" if it is gone).
func opsStat(pid int) (state string, ppid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return "", 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 2 {
		return "", 0
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid
}

// opsGone reports whether process pid has ended and been reaped.
func opsGone(pid int) bool {
	state, _ := opsStat(pid)
	return state == ""
}

// opsChildren lists the children of ppid: those alive and the zombies
// (ended, not reaped).
func opsChildren(t *testing.T, ppid int) (alive, zombies []int) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, pp := opsStat(pid)
		switch {
		case pp != ppid || state == "":
		case state == "Z":
			zombies = append(zombies, pid)
		default:
			alive = append(alive, pid)
		}
	}
	slices.Sort(alive)
	return alive, zombies
}

// opsFDs counts the open file descriptors of pid.
func opsFDs(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("fds of %d: %v", pid, err)
	}
	return len(fds)
}

// opsShm lists the shared frame buffers the daemon pid has mapped: the
// frame files in its plugins' private folders in /dev/shm (plugins/sdk).
func opsShm(pid int) []string {
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	var files []string
	for line := range strings.Lines(string(maps)) {
		if i := strings.Index(line, "/dev/shm/edgeinfer-plugin-"); i >= 0 && strings.Contains(line, "/frames/") {
			if f := strings.TrimSpace(line[i:]); !slices.Contains(files, f) {
				files = append(files, f)
			}
		}
	}
	return files
}

// opsStats returns the newest stats published.
func opsStats(t *testing.T, w *watcher) (payload.Stats, bool) {
	var st payload.Stats
	b := w.last("stats")
	if b == "" {
		return st, false
	}
	if err := json.Unmarshal([]byte(b), &st); err != nil {
		t.Fatalf("stats: %v: %s", err, b)
	}
	return st, true
}

// opsRepo makes a model repository with lenet5 (the exported one) and,
// for each name in copies, a model of that name whose version 1 is a copy
// of lenet5/1.
func opsRepo(t *testing.T, copies ...string) string {
	t.Helper()
	repo := t.TempDir()
	if err := os.Symlink(filepath.Join(models(t), "lenet5"), filepath.Join(repo, "lenet5")); err != nil {
		t.Fatal(err)
	}
	for _, name := range copies {
		if err := os.MkdirAll(filepath.Join(repo, name), 0o755); err != nil {
			t.Fatal(err)
		}
		copyVersion(t, filepath.Join(models(t), "lenet5", "1"), filepath.Join(repo, name, "1"), nil)
	}
	return repo
}

// opsServingPID is the pid of the version of model that serves now (0:
// none).
func opsServingPID(t *testing.T, w *watcher, model string) int {
	st, ok := w.model(t, model)
	if !ok || st.Serving == "" {
		return 0
	}
	if vs := st.Versions[st.Serving]; vs.State == payload.StateServing {
		return vs.PID
	}
	return 0
}

func opsPIDs(rs []payload.Result) []int {
	var pids []int
	for _, r := range rs {
		if !slices.Contains(pids, r.Model.PID) {
			pids = append(pids, r.Model.PID)
		}
	}
	slices.Sort(pids)
	return pids
}

// TestOpsPluginBinarySwapUnderLoadLosesNothing: a new edgeinfer-classify
// dropped into plugin_dir takes over while images keep arriving; a bad one
// is rejected and the good one keeps serving; a crash after that restarts
// the last good binary. Every image has exactly one result throughout.
func TestOpsPluginBinarySwapUnderLoadLosesNothing(t *testing.T) {
	plugins := t.TempDir()
	bin := filepath.Join(plugins, "edgeinfer-classify")
	orig, err := os.ReadFile(filepath.Join(binDir, "edgeinfer-classify"))
	if err != nil {
		t.Fatal(err)
	}
	opsInstall(t, bin, orig, 0o755)
	inbox := t.TempDir()
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), plugins: plugins, models: opsModels})
	l := opsRecord(t, w)
	first := w.serving(t, p, "lenet5", "digits")
	if !strings.HasSuffix(first.Plugin, "@"+opsSHA(orig)[:12]) || opsExeSHA(t, first.PID) != opsSHA(orig) {
		t.Fatalf("the first process does not run the installed binary: %+v", first)
	}
	ds := digits(t)
	feed := opsFeed(t, inbox, ds, 50*time.Millisecond, "swap")
	l.waitResults(p, "digits", 20, time.Minute, "20 results from the first binary", nil)

	// A rebuilt binary: the same program with bytes appended (a different
	// file, which still runs), renamed over the old one.
	rebuilt := append(slices.Clone(orig), []byte("\nedgeinfer e2e: a rebuilt plugin binary\n")...)
	mark := l.mark()
	opsInstall(t, bin, rebuilt, 0o755)
	ev, _ := l.waitEvent(p, mark, 2*time.Minute, "plugin_swapped", func(e payload.Event) bool { return e.Type == payload.EventPluginSwapped })
	if ev.Model != "lenet5" || ev.Version != "1" || !strings.Contains(ev.Message, opsSHA(rebuilt)[:12]) {
		t.Fatalf("plugin_swapped event: %+v", ev)
	}
	var second payload.VersionState
	waitFor(t, p, time.Minute, "the rebuilt binary serving", func() bool {
		st, _ := w.model(t, "lenet5")
		second = st.Versions[st.Serving]
		return st.Serving == "1" && second.State == payload.StateServing && second.PID != first.PID && second.PID != 0
	})
	if pid, _ := ev.Attrs["pid"].(float64); int(pid) != second.PID {
		t.Fatalf("plugin_swapped names pid %v, the model state %d", ev.Attrs["pid"], second.PID)
	}
	if !strings.HasSuffix(second.Plugin, "@"+opsSHA(rebuilt)[:12]) || opsExeSHA(t, second.PID) != opsSHA(rebuilt) {
		t.Fatalf("the new process does not run the rebuilt binary: %+v", second)
	}
	// The old binary's process drains, retires and ends.
	retired, _ := l.waitEvent(p, mark, 30*time.Second, "version_retired", func(e payload.Event) bool { return e.Type == payload.EventVersionRetired })
	if retired.Version != "1" || !strings.Contains(retired.Message, "replaced by version 1") {
		t.Fatalf("version_retired: %+v", retired)
	}
	waitFor(t, p, 30*time.Second, "the old binary's process to end", func() bool { return opsGone(first.PID) })
	if ev := l.eventsOf(payload.EventVersionRetired, mark); len(ev) != 1 {
		t.Fatalf("version_retired events: %+v", ev)
	}
	l.waitResults(p, "digits", 20, time.Minute, "20 results from the rebuilt binary", func(r payload.Result) bool { return r.Model.PID == second.PID })

	// Bad binaries: one exits at once, before any handshake; one answers
	// the handshake with another protocol version (and would stay up). Each
	// is tried once and rejected; the rebuilt binary's process, which never
	// stopped, keeps serving, and nothing of the bad one is left running.
	for _, bad := range []struct {
		name   string
		script string
		says   string
	}{
		{"exiting at once", "#!/bin/sh\necho 'edgeinfer e2e: not a plugin' >&2\nexit 1\n", "plugin"},
		{"speaking protocol 99", "#!/bin/sh\necho '1|99|tcp|127.0.0.1:9|grpc'\nexec sleep 120\n", "version"},
	} {
		mark = l.mark()
		opsInstall(t, bin, []byte(bad.script), 0o755)
		rej, after := l.waitEvent(p, mark, time.Minute, bad.name+": the bad binary's rejection", func(e payload.Event) bool { return e.Type == payload.EventPluginRejected })
		if rej.Model != "lenet5" || rej.Version != "1" || !strings.Contains(rej.Message, opsSHA([]byte(bad.script))[:12]+" rejected") || !strings.Contains(rej.Message, bad.says) {
			t.Fatalf("%s: plugin_rejected for the bad binary: %+v", bad.name, rej)
		}
		t.Logf("bad binary %s: %.300s", bad.name, rej.Message)
		n := len(l.of("digits"))
		l.waitResults(p, "digits", n+20, time.Minute, bad.name+": 20 more results", nil)
		for _, r := range l.of("digits")[n:] {
			if r.Model.PID != second.PID {
				t.Fatalf("%s: a result after the bad binary came from pid %d, want %d (the one serving)", bad.name, r.Model.PID, second.PID)
			}
		}
		time.Sleep(3 * time.Second) // three binary polls
		if st, _ := w.model(t, "lenet5"); st.Serving != "1" || st.Versions["1"].PID != second.PID || st.Versions["1"].State != payload.StateServing ||
			st.Versions["1"].Plugin != second.Plugin {
			t.Fatalf("%s: after the bad binary: %+v", bad.name, st)
		}
		if ev := l.eventsOf(payload.EventVersionLoading, mark); len(ev) != 1 {
			t.Fatalf("%s: the bad binary was tried %d times, want once: %+v", bad.name, len(ev), ev)
		}
		if ev := append(l.eventsOf(payload.EventPluginRejected, after), l.eventsOf(payload.EventVersionRejected, mark)...); len(ev) != 0 {
			t.Fatalf("%s: rejected again, or the version blamed: %+v", bad.name, ev)
		}
		if alive, zombies := opsChildren(t, p.cmd.Process.Pid); !slices.Equal(alive, []int{second.PID}) || len(zombies) != 0 {
			t.Fatalf("%s: the daemon's children are %v (zombies %v), want only %d", bad.name, alive, zombies, second.PID)
		}
	}

	// A crash now restarts the last good binary (the rebuilt one), not the
	// bad one in plugin_dir.
	mark = l.mark()
	if err := syscall.Kill(second.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	restarted, _ := l.waitEvent(p, mark, time.Minute, "plugin_restarted", func(e payload.Event) bool { return e.Type == payload.EventPluginRestarted })
	if !strings.Contains(restarted.Message, strconv.Itoa(second.PID)) {
		t.Fatalf("plugin_restarted does not name pid %d: %+v", second.PID, restarted)
	}
	var third payload.VersionState
	waitFor(t, p, time.Minute, "a restarted process serving", func() bool {
		st, _ := w.model(t, "lenet5")
		third = st.Versions[st.Serving]
		return st.Serving == "1" && third.State == payload.StateServing && third.PID != second.PID && third.PID != 0
	})
	if third.Restarts != 1 || third.Plugin != second.Plugin || opsExeSHA(t, third.PID) != opsSHA(rebuilt) {
		t.Fatalf("the restarted process: %+v (want the rebuilt binary %s, one restart)", third, opsSHA(rebuilt)[:12])
	}
	l.waitResults(p, "digits", 20, time.Minute, "20 results from the restarted process", func(r payload.Result) bool { return r.Model.PID == third.PID })

	names := feed.halt(t)
	by := opsExactlyOnce(t, p, l, "digits", names, ds)
	perPID := map[int]int{}
	for _, r := range by {
		perPID[r.Model.PID]++
	}
	if len(perPID) != 3 || perPID[first.PID] == 0 || perPID[second.PID] == 0 || perPID[third.PID] == 0 {
		t.Fatalf("results by pid %v; want the three processes %d, %d, %d", perPID, first.PID, second.PID, third.PID)
	}
	if ev := l.eventsOf(payload.EventInferenceFailed, 0); len(ev) != 0 {
		t.Fatalf("inference_failed events: %+v", ev)
	}
	t.Logf("%d images, results by pid %v (original %d, rebuilt %d, restarted %d)", len(names), perPID, first.PID, second.PID, third.PID)
	waitFor(t, p, 30*time.Second, "every file in done/", func() bool {
		done, _ := filepath.Glob(filepath.Join(inbox, "done", "*.png"))
		return len(done) == len(names)
	})
}

// sighupConfig is TestOpsSIGHUP's pipelines: a on lenet5, b on a copy of
// it, each fed by its own folder. The edits keep the file's size, so that
// with its time kept too only a SIGHUP can tell the daemon.
const sighupConfig = `
[pipelines.a]
sensor = "a"
model = "lenet5"
queue = 8
[pipelines.a.options]
top_k = 3

[pipelines.b]
sensor = "b"
model = "other"
queue = 8
[pipelines.b.options]
top_k = 3
`

// opsRewrite replaces the config at path with edit's result, atomically.
// With sameStamp the new file keeps the old one's size and time, so the
// daemon's poll of the file cannot see the change.
func opsRewrite(t *testing.T, path string, edit func(string) string, sameStamp bool) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	next := edit(string(b))
	if next == string(b) {
		t.Fatal("the edit changes nothing")
	}
	if sameStamp && len(next) != len(b) {
		t.Fatalf("the edit changes the size (%d -> %d)", len(b), len(next))
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	if sameStamp {
		if err := os.Chtimes(tmp, st.ModTime(), st.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return next
}

// inPipelineB edits only [pipelines.b]'s lines.
func inPipelineB(old, new string) func(string) string {
	return func(s string) string {
		i := strings.Index(s, "[pipelines.b]")
		return s[:i] + strings.Replace(s[i:], old, new, 1)
	}
}

// TestOpsSIGHUP reloads the config four ways while both pipelines are fed:
// unchanged (nothing restarts), one pipeline's options changed (only it
// changes, in place), invalid (rejected, the old one keeps running), and a
// changed file without a signal (reloaded by the poll).
func TestOpsSIGHUP(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	sensors := fmt.Sprintf("[sensors.a]\nkind = \"dir\"\npath = %q\nsettle = \"50ms\"\n[sensors.b]\nkind = \"dir\"\npath = %q\nsettle = \"50ms\"\n", dirA, dirB)
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensors, extra: sighupConfig, repo: opsRepo(t, "other"), models: opsModels})
	config := p.cmd.Args[len(p.cmd.Args)-1]
	l := opsRecord(t, w)
	pidA := w.serving(t, p, "lenet5", "a").PID
	pidB := w.serving(t, p, "other", "b").PID
	if pidA == pidB {
		t.Fatalf("two models, one process %d", pidA)
	}
	ds := digits(t)
	feedA := opsFeed(t, dirA, ds, 50*time.Millisecond, "a")
	feedB := opsFeed(t, dirB, ds, 50*time.Millisecond, "b")
	l.waitResults(p, "a", 10, time.Minute, "10 results of a", nil)
	l.waitResults(p, "b", 10, time.Minute, "10 results of b", nil)
	loading := len(l.eventsOf(payload.EventVersionLoading, 0))
	if loading != 2 {
		t.Fatalf("%d version_loading events at start, want 2", loading)
	}
	hup := func() {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// samePIDs checks that the two plugin processes are the ones from the
	// start, and the only children of the daemon.
	samePIDs := func(when string) {
		t.Helper()
		if a, b := opsServingPID(t, w, "lenet5"), opsServingPID(t, w, "other"); a != pidA || b != pidB {
			t.Fatalf("%s: serving pids %d and %d, want %d and %d", when, a, b, pidA, pidB)
		}
		if alive, _ := opsChildren(t, p.cmd.Process.Pid); !slices.Equal(alive, slices.Sorted(slices.Values([]int{pidA, pidB}))) {
			t.Fatalf("%s: the daemon's children are %v, want %d and %d", when, alive, pidA, pidB)
		}
	}
	labelsOf := func(rs []payload.Result) (n []int) {
		for _, r := range rs {
			n = append(n, len(opsTop(t, r)))
		}
		return n
	}

	t.Run("unchanged", func(t *testing.T) {
		mark := l.mark()
		hup()
		ev, _ := l.waitEvent(p, mark, 30*time.Second, "config_reloaded", func(e payload.Event) bool {
			return e.Type == payload.EventConfigReloaded || e.Type == payload.EventConfigRejected
		})
		if ev.Type != payload.EventConfigReloaded || !strings.Contains(ev.Message, "(SIGHUP): nothing changed") || !strings.Contains(ev.Message, config) {
			t.Fatalf("want config_reloaded saying SIGHUP and nothing changed, got %+v", ev)
		}
		n := len(l.of("a"))
		l.waitResults(p, "a", n+20, time.Minute, "20 more results of a", nil)
		samePIDs("after an unchanged SIGHUP")
		if ev := l.eventsOf(payload.EventVersionLoading, mark); len(ev) != 0 {
			t.Fatalf("an unchanged config loaded a version: %+v", ev)
		}
	})

	t.Run("one pipeline changed", func(t *testing.T) {
		na, nb := len(l.of("a")), len(l.of("b"))
		mark := l.mark()
		opsRewrite(t, config, inPipelineB("top_k = 3", "top_k = 1"), true)
		hup()
		ev, _ := l.waitEvent(p, mark, 30*time.Second, "config_reloaded", func(e payload.Event) bool {
			return e.Type == payload.EventConfigReloaded || e.Type == payload.EventConfigRejected
		})
		if ev.Type != payload.EventConfigReloaded || !strings.HasSuffix(ev.Message, "(SIGHUP): pipelines changed: b") {
			t.Fatalf("want config_reloaded naming pipeline b only, got %+v", ev)
		}
		l.waitResults(p, "b", 20, time.Minute, "20 results of b with one label", func(r payload.Result) bool { return len(opsTop(t, r)) == 1 })
		// b switched once, between two frames: three labels, then one.
		n := labelsOf(l.of("b")[nb:])
		i := slices.Index(n, 1)
		if slices.ContainsFunc(n[:i], func(k int) bool { return k != 3 }) || slices.ContainsFunc(n[i:], func(k int) bool { return k != 1 }) {
			t.Fatalf("labels in b's results since the reload: %v", n)
		}
		if n := labelsOf(l.of("a")); slices.ContainsFunc(n, func(k int) bool { return k != 3 }) {
			t.Fatalf("a's results changed: labels %v", n)
		}
		samePIDs("after b's options changed")
		if ev := l.eventsOf(payload.EventVersionLoading, mark); len(ev) != 0 {
			t.Fatalf("changed options loaded a version: %+v", ev)
		}
		// a's worker was not replaced: the first stats after the reload
		// count every result a published before it (a new worker would
		// count from zero).
		var st payload.Stats
		waitFor(t, p, 30*time.Second, "stats after the reload", func() bool {
			st, _ = opsStats(t, w)
			return st.Time.After(ev.Time)
		})
		for name, n := range map[string]int{"a": na, "b": nb} {
			if ps := st.Pipelines[name]; ps.Results < uint64(n) || ps.Restarts != 0 || ps.Failed != 0 {
				t.Fatalf("pipeline %s: stats after the reload %+v, with %d results published before it", name, ps, n)
			}
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, tc := range []struct {
			name, old, new, want string
		}{
			{"unknown key", "queue = 8", "qeueu = 8", "pipelines.b.qeueu: unknown key"},
			{"undefined sensor", `sensor = "b"`, `sensor = "c"`, `pipelines.b.sensor: sensor "c" is not defined; defined: a, b`},
		} {
			good, err := os.ReadFile(config)
			if err != nil {
				t.Fatal(err)
			}
			mark := l.mark()
			text := opsRewrite(t, config, inPipelineB(tc.old, tc.new), true)
			line := 0
			for i, s := range strings.Split(text, "\n") {
				if s == tc.new {
					line = i + 1 // the last one: pipeline b's
				}
			}
			hup()
			ev, _ := l.waitEvent(p, mark, 30*time.Second, "config_rejected", func(e payload.Event) bool {
				return e.Type == payload.EventConfigReloaded || e.Type == payload.EventConfigRejected
			})
			if want := fmt.Sprintf("%s:%d: %s", config, line, tc.want); ev.Type != payload.EventConfigRejected || !strings.Contains(ev.Message, want) {
				t.Fatalf("%s: want config_rejected with %q, got %+v", tc.name, want, ev)
			}
			// The running config goes on: b answers with one label, a with
			// three, from the same processes.
			na, nb := len(l.of("a")), len(l.of("b"))
			l.waitResults(p, "b", nb+10, time.Minute, "10 more results of b", nil)
			l.waitResults(p, "a", na+10, time.Minute, "10 more results of a", nil)
			if n := labelsOf(l.of("b")[nb:]); slices.ContainsFunc(n, func(k int) bool { return k != 1 }) {
				t.Fatalf("%s: b's labels after the rejected config: %v", tc.name, n)
			}
			if n := labelsOf(l.of("a")[na:]); slices.ContainsFunc(n, func(k int) bool { return k != 3 }) {
				t.Fatalf("%s: a's labels after the rejected config: %v", tc.name, n)
			}
			samePIDs("after " + tc.name)
			if ev := l.eventsOf(payload.EventConfigReloaded, mark); len(ev) != 0 {
				t.Fatalf("%s: reloaded: %+v", tc.name, ev)
			}
			// Back to the running config, unseen by the daemon.
			opsRewrite(t, config, func(string) string { return string(good) }, true)
		}
	})

	t.Run("file changed without a signal", func(t *testing.T) {
		nb := len(l.of("b"))
		mark := l.mark()
		opsRewrite(t, config, inPipelineB("top_k = 1", "top_k = 2"), false)
		ev, _ := l.waitEvent(p, mark, 30*time.Second, "config_reloaded", func(e payload.Event) bool {
			return e.Type == payload.EventConfigReloaded || e.Type == payload.EventConfigRejected
		})
		if ev.Type != payload.EventConfigReloaded || !strings.HasSuffix(ev.Message, "(the config file changed): pipelines changed: b") {
			t.Fatalf("want config_reloaded for the changed file, got %+v", ev)
		}
		l.waitResults(p, "b", 20, time.Minute, "20 results of b with two labels", func(r payload.Result) bool { return len(opsTop(t, r)) == 2 })
		n := labelsOf(l.of("b")[nb:])
		i := slices.Index(n, 2)
		if slices.ContainsFunc(n[:i], func(k int) bool { return k != 1 }) || slices.ContainsFunc(n[i:], func(k int) bool { return k != 2 }) {
			t.Fatalf("labels in b's results since the file changed: %v", n)
		}
		time.Sleep(2 * time.Second) // two polls: the file is read once
		if ev := l.eventsOf(payload.EventConfigReloaded, mark); len(ev) != 1 {
			t.Fatalf("want one reload, got %+v", ev)
		}
		samePIDs("after the file changed")
	})

	namesA, namesB := feedA.halt(t), feedB.halt(t)
	byA := opsExactlyOnce(t, p, l, "a", namesA, ds)
	byB := opsExactlyOnce(t, p, l, "b", namesB, ds)
	if pids := opsPIDs(l.of("a")); !slices.Equal(pids, []int{pidA}) {
		t.Fatalf("a's results came from pids %v, want only %d", pids, pidA)
	}
	if pids := opsPIDs(l.of("b")); !slices.Equal(pids, []int{pidB}) {
		t.Fatalf("b's results came from pids %v, want only %d", pids, pidB)
	}
	for _, typ := range []string{payload.EventVersionLoading, payload.EventPluginRestarted, payload.EventInferenceFailed, payload.EventOptionsRejected} {
		if ev := l.eventsOf(typ, 0); typ == payload.EventVersionLoading && len(ev) != 2 || typ != payload.EventVersionLoading && len(ev) != 0 {
			t.Fatalf("%s events: %+v", typ, ev)
		}
	}
	t.Logf("a: %d images, b: %d images, each answered once across 3 reloads and 2 rejected configs; plugin pids %d and %d throughout", len(byA), len(byB), pidA, pidB)
}

// opsScaled is d's image enlarged k times (nearest neighbour), as a PNG.
func opsScaled(t *testing.T, d digit, k int) []byte {
	t.Helper()
	src, err := png.Decode(bytes.NewReader(d.png))
	if err != nil {
		t.Fatal(err)
	}
	b := src.Bounds()
	dst := image.NewGray(image.Rect(0, 0, b.Dx()*k, b.Dy()*k))
	for y := range dst.Rect.Dy() {
		for x := range dst.Rect.Dx() {
			dst.Set(x, y, src.At(b.Min.X+x/k, b.Min.Y+y/k))
		}
	}
	var out bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&out, dst); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestOpsBrokenModelDoesNotStallItsSiblings: two pipelines on one dir
// sensor, one model broken. The healthy pipeline answers all 1000 files;
// they wait in the inbox, without their pixels, until a fixed version is
// dropped in; then the other pipeline answers them all too and they reach
// done/.
func TestOpsBrokenModelDoesNotStallItsSiblings(t *testing.T) {
	repo := opsRepo(t, "broken")
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	if err := os.WriteFile(filepath.Join(repo, "broken", "1", "saved_model.pb"), junk, 0o644); err != nil {
		t.Fatal(err)
	}
	inbox := t.TempDir()
	pipelines := `
[pipelines.good]
sensor = "inbox"
model = "lenet5"
[pipelines.good.options]
top_k = 1

[pipelines.bad]
sensor = "inbox"
model = "broken"
[pipelines.bad.options]
top_k = 1
`
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), extra: pipelines, repo: repo, models: opsModels})
	l := opsRecord(t, w)
	w.serving(t, p, "lenet5", "good")
	waitFor(t, p, time.Minute, "broken version 1 failed", func() bool {
		st, _ := w.model(t, "broken")
		return st.Serving == "" && st.Versions["1"].State == payload.StateFailed && st.Versions["1"].Reason != ""
	})
	if ev := l.eventsOf(payload.EventVersionRejected, 0); len(ev) != 1 || ev[0].Model != "broken" || ev[0].Version != "1" {
		t.Fatalf("version_rejected events: %+v", ev)
	}
	daemon := p.cmd.Process.Pid
	idle := rssKB(t, daemon)

	// 1000 files: the 200 digits enlarged to 256x256 (192 KiB of pixels
	// each, 188 MiB for all), five times under new names.
	ds := digits(t)
	big := make([][]byte, len(ds))
	for i, d := range ds {
		big[i] = opsScaled(t, d, 8)
	}
	var names []string
	for round := range 5 {
		for i, d := range ds {
			name := fmt.Sprintf("r%d-%s", round, d.name)
			tmp := filepath.Join(inbox, "."+name+".part")
			if err := os.WriteFile(tmp, big[i], 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(inbox, name)); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
	}
	good := opsExactlyOnce(t, p, l, "good", names, ds)
	var st payload.Stats
	waitFor(t, p, time.Minute, "stats with the broken pipeline's 1000 frames waiting", func() bool {
		st, _ = opsStats(t, w)
		return st.Pipelines["bad"].Queued >= len(names)-1 && st.Pipelines["good"].Queued == 0
	})
	waiting := rssKB(t, daemon)
	t.Logf("daemon resident memory: %d KiB idle, %d KiB with %d files waiting for the broken pipeline (stats: bad %+v, good %+v)",
		idle, waiting, len(names), st.Pipelines["bad"], st.Pipelines["good"])
	if waiting-idle > 64<<10 {
		t.Fatalf("resident memory grew by %d KiB with the files waiting: their pixels are held", waiting-idle)
	}
	if n := len(l.of("bad")); n != 0 {
		t.Fatalf("%d results from the broken model", n)
	}
	done, _ := filepath.Glob(filepath.Join(inbox, "done", "*"))
	failed, _ := filepath.Glob(filepath.Join(inbox, "failed", "*"))
	left, _ := filepath.Glob(filepath.Join(inbox, "r*-digit-*.png"))
	if len(done) != 0 || len(failed) != 0 || len(left) != len(names) {
		t.Fatalf("while the broken pipeline waits: %d files in done/, %d in failed/, %d in the inbox (want 0, 0, %d)", len(done), len(failed), len(left), len(names))
	}
	for _, r := range good {
		if r.Model.Name != "lenet5" || len(opsTop(t, r)) != 1 {
			t.Fatalf("good result: %+v", r)
		}
	}

	// The fix: a good version 2 of "broken", dropped in atomically.
	mark := l.mark()
	copyVersion(t, filepath.Join(models(t), "lenet5", "1"), filepath.Join(repo, "broken", "2"), nil)
	ev, _ := l.waitEvent(p, mark, 2*time.Minute, "broken version 2 serving", func(e payload.Event) bool {
		return e.Type == payload.EventVersionServing && e.Model == "broken"
	})
	if ev.Version != "2" {
		t.Fatalf("version_serving: %+v", ev)
	}
	bad := opsExactlyOnce(t, p, l, "bad", names, ds)
	for _, r := range bad {
		if r.Model.Name != "broken" || r.Model.Version != "2" {
			t.Fatalf("bad pipeline's result from %+v", r.Model)
		}
	}
	waitFor(t, p, time.Minute, "every file in done/", func() bool {
		done, _ := filepath.Glob(filepath.Join(inbox, "done", "r*-digit-*.png"))
		return len(done) == len(names)
	})
	failed, _ = filepath.Glob(filepath.Join(inbox, "failed", "*"))
	left, _ = filepath.Glob(filepath.Join(inbox, "*.png"))
	if len(failed) != 0 || len(left) != 0 {
		t.Fatalf("after the fix: %d files in failed/, %d still in the inbox", len(failed), len(left))
	}
	if n := len(l.of("good")); n != len(names) {
		t.Fatalf("the healthy pipeline has %d results, want %d", n, len(names))
	}
	t.Logf("daemon resident memory after the catch-up: %d KiB", rssKB(t, daemon))
}

// TestOpsAStoppedPluginIsKilledAfterTheTimeoutAndNothingIsLost: a plugin
// frozen with SIGSTOP answers nothing; after the pipeline's timeout it is
// killed and restarted, and the frame it held is tried again.
func TestOpsAStoppedPluginIsKilledAfterTheTimeoutAndNothingIsLost(t *testing.T) {
	inbox := t.TempDir()
	pipelines := `
[pipelines.digits]
sensor = "inbox"
model = "lenet5"
timeout = "2s"
[pipelines.digits.options]
top_k = 3
`
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), extra: pipelines, models: opsModels})
	l := opsRecord(t, w)
	first := w.serving(t, p, "lenet5", "digits").PID
	ds := digits(t)
	feed := opsFeed(t, inbox, ds, 50*time.Millisecond, "stop")
	l.waitResults(p, "digits", 20, time.Minute, "20 results", nil)
	if err := syscall.Kill(first, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ev, _ := l.waitEvent(p, 0, time.Minute, "plugin_restarted", func(e payload.Event) bool { return e.Type == payload.EventPluginRestarted })
	if ev.Model != "lenet5" || !strings.Contains(ev.Message, strconv.Itoa(first)) || !strings.Contains(ev.Message, "killed") {
		t.Fatalf("plugin_restarted: %+v", ev)
	}
	t.Logf("%s", ev.Message)
	var second payload.VersionState
	waitFor(t, p, time.Minute, "a new process serving", func() bool {
		st, _ := w.model(t, "lenet5")
		second = st.Versions[st.Serving]
		return second.State == payload.StateServing && second.PID != first && second.PID != 0
	})
	waitFor(t, p, 30*time.Second, "the stopped process to be gone", func() bool { return opsGone(first) })
	l.waitResults(p, "digits", 20, time.Minute, "20 results from the new process", func(r payload.Result) bool { return r.Model.PID == second.PID })
	names := feed.halt(t)
	by := opsExactlyOnce(t, p, l, "digits", names, ds)
	perPID := map[int]int{}
	for _, r := range by {
		perPID[r.Model.PID]++
	}
	if len(perPID) != 2 || perPID[first] == 0 || perPID[second.PID] == 0 {
		t.Fatalf("results by pid %v, want from %d then %d", perPID, first, second.PID)
	}
	if ev := l.eventsOf(payload.EventInferenceFailed, 0); len(ev) != 0 {
		t.Fatalf("a frame failed instead of being tried again: %+v", ev)
	}
	if ev := l.eventsOf(payload.EventPluginRestarted, 0); len(ev) != 1 {
		t.Fatalf("plugin_restarted events: %+v", ev)
	}
	var st payload.Stats
	waitFor(t, p, 30*time.Second, "stats counting the restart", func() bool {
		st, _ = opsStats(t, w)
		return st.Pipelines["digits"].Results >= uint64(len(names))
	})
	if ps := st.Pipelines["digits"]; ps.Restarts != 1 || ps.Failed != 0 {
		t.Fatalf("stats: %+v", ps)
	}
	if alive, _ := opsChildren(t, p.cmd.Process.Pid); !slices.Equal(alive, []int{second.PID}) {
		t.Fatalf("the daemon's children: %v, want only %d", alive, second.PID)
	}
	t.Logf("%d images, results by pid %v", len(names), perPID)
}

// TestOpsTwoPipelinesOnOneModelShareOneProcess: three pipelines, two on
// lenet5 with different options and one on another model: two plugin
// processes, and each pipeline's results follow its own options.
func TestOpsTwoPipelinesOnOneModelShareOneProcess(t *testing.T) {
	inbox := t.TempDir()
	pipelines := `
[pipelines.one]
sensor = "inbox"
model = "lenet5"
[pipelines.one.options]
top_k = 1

[pipelines.three]
sensor = "inbox"
model = "lenet5"
[pipelines.three.options]
top_k = 3

[pipelines.other]
sensor = "inbox"
model = "other"
[pipelines.other.options]
top_k = 2
`
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), extra: pipelines, repo: opsRepo(t, "other"), models: opsModels})
	l := opsRecord(t, w)
	lenet := w.serving(t, p, "lenet5", "one")
	w.serving(t, p, "lenet5", "three")
	other := w.serving(t, p, "other", "other")
	ds := digits(t)
	dropDigits(t, inbox, ds)
	var names []string
	for _, d := range ds {
		names = append(names, d.name)
	}
	want := map[string]struct {
		labels int
		model  string
	}{"one": {1, "lenet5"}, "three": {3, "lenet5"}, "other": {2, "other"}}
	pidOf := map[string]int{}
	for pipeline, wt := range want {
		for _, r := range opsExactlyOnce(t, p, l, pipeline, names, ds) {
			top := opsTop(t, r)
			if len(top) != wt.labels || r.Model.Name != wt.model {
				t.Fatalf("pipeline %s: %d labels from model %s, want %d from %s", pipeline, len(top), r.Model.Name, wt.labels, wt.model)
			}
		}
		pids := opsPIDs(l.of(pipeline))
		if len(pids) != 1 {
			t.Fatalf("pipeline %s: results from pids %v", pipeline, pids)
		}
		pidOf[pipeline] = pids[0]
	}
	// The same frame gets the same answer from both lenet5 pipelines.
	byOne, byThree := map[string]payload.Result{}, map[string]payload.Result{}
	for _, r := range l.of("one") {
		byOne[r.Source] = r
	}
	for _, r := range l.of("three") {
		byThree[r.Source] = r
	}
	for src, r := range byOne {
		if opsTop(t, r)[0] != opsTop(t, byThree[src])[0] {
			t.Fatalf("%s: top-1 %s in one, %s in three", src, opsTop(t, r)[0], opsTop(t, byThree[src])[0])
		}
	}
	if pidOf["one"] != pidOf["three"] || pidOf["one"] == pidOf["other"] || pidOf["one"] != lenet.PID || pidOf["other"] != other.PID {
		t.Fatalf("pids by pipeline %v; lenet5 state pid %d, other %d", pidOf, lenet.PID, other.PID)
	}
	st, _ := w.model(t, "lenet5")
	if vs := st.Versions[st.Serving]; vs.PID != lenet.PID || !slices.Equal(vs.Pipelines, []string{"one", "three"}) || !slices.Equal(st.Pipelines, []string{"one", "three"}) {
		t.Fatalf("lenet5 state: %+v", st)
	}
	so, _ := w.model(t, "other")
	if vs := so.Versions[so.Serving]; vs.PID != other.PID || !slices.Equal(vs.Pipelines, []string{"other"}) {
		t.Fatalf("other state: %+v", so)
	}
	daemon := p.cmd.Process.Pid
	alive, zombies := opsChildren(t, daemon)
	if !slices.Equal(alive, slices.Sorted(slices.Values([]int{lenet.PID, other.PID}))) || len(zombies) != 0 {
		t.Fatalf("the daemon's children: %v (zombies %v), want %d and %d", alive, zombies, lenet.PID, other.PID)
	}
	if ev := l.eventsOf(payload.EventVersionLoading, 0); len(ev) != 2 {
		t.Fatalf("version_loading events: %+v", ev)
	}
	t.Logf("resident memory: daemon %d KiB; plugin lenet5 (pipelines one, three; pid %d) %d KiB; plugin other (pid %d) %d KiB",
		rssKB(t, daemon), lenet.PID, rssKB(t, lenet.PID), other.PID, rssKB(t, other.PID))
}

// TestOps200ReloadCyclesLeakNothing swaps lenet5 between two versions 200
// times (pin commands) while images arrive, and compares the daemon's
// memory, file descriptors, shared frame buffers and children before and
// after.
func TestOps200ReloadCyclesLeakNothing(t *testing.T) {
	const warmup, cycles = 10, 200
	repo := t.TempDir()
	if err := os.Mkdir(filepath.Join(repo, "lenet5"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyVersion(t, filepath.Join(models(t), "lenet5", "1"), filepath.Join(repo, "lenet5", "1"), nil)
	copyVersion(t, filepath.Join(models(t), "lenet5", "1"), filepath.Join(repo, "lenet5", "2"), relabel("b"))
	inbox := t.TempDir()
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: repo, models: opsModels,
		extra: digitsPipeline + "\n[commands]\nenabled = true\n"})
	l := opsRecord(t, w)
	prefix := prefixOf(t)
	daemon := p.cmd.Process.Pid
	if vs := w.serving(t, p, "lenet5", "digits"); vs.PID == 0 {
		t.Fatal("no pid")
	}
	ds := digits(t)
	feed := opsFeed(t, inbox, ds, 50*time.Millisecond, "cycle")
	l.waitResults(p, "digits", 10, time.Minute, "10 results", nil)

	type figures struct {
		rss, fds       int
		shm            []string
		alive, zombies []int
	}
	// quiet waits until only the serving process is left, then measures.
	quiet := func(when string) figures {
		t.Helper()
		var f figures
		waitFor(t, p, time.Minute, when+": one plugin process", func() bool {
			f.alive, f.zombies = opsChildren(t, daemon)
			return len(f.alive) == 1 && f.alive[0] == opsServingPID(t, w, "lenet5")
		})
		n := len(l.of("digits"))
		l.waitResults(p, "digits", n+5, time.Minute, when+": 5 more results", nil)
		f.rss, f.fds, f.shm = rssKB(t, daemon), opsFDs(t, daemon), opsShm(daemon)
		f.alive, f.zombies = opsChildren(t, daemon)
		t.Logf("%s: daemon RSS %d KiB, %d fds, shm %v, children %v, zombies %v", when, f.rss, f.fds, f.shm, f.alive, f.zombies)
		return f
	}
	start := time.Now()
	mark := l.mark()
	first := mark
	swap := func(i int) {
		t.Helper()
		v := []string{"1", "2"}[i%2]
		if r := w.command(t, p, prefix, payload.Command{Command: payload.CommandPin, Model: "lenet5", Version: v}); !r.OK {
			t.Fatalf("cycle %d: pin %s: %+v", i, v, r)
		}
		var ev payload.Event
		ev, mark = l.waitEvent(p, mark, 2*time.Minute, fmt.Sprintf("cycle %d: version %s serving", i, v), func(e payload.Event) bool {
			return e.Type == payload.EventVersionServing || e.Type == payload.EventVersionRejected
		})
		if ev.Type != payload.EventVersionServing || ev.Version != v {
			t.Fatalf("cycle %d: want version %s serving, got %+v", i, v, ev)
		}
	}
	for i := range warmup {
		swap(i)
	}
	before := quiet(fmt.Sprintf("after %d warm-up swaps", warmup))
	t0 := time.Now()
	for i := warmup; i < warmup+cycles; i++ {
		swap(i)
	}
	took := time.Since(t0)
	after := quiet(fmt.Sprintf("after %d more swaps", cycles))
	names := feed.halt(t)
	by := opsExactlyOnce(t, p, l, "digits", names, ds)
	t.Logf("%d swaps in %s (%.2f s each); %d images answered once each; whole test so far %s",
		cycles, took.Round(time.Second), took.Seconds()/cycles, len(by), time.Since(start).Round(time.Second))

	// Each result's labels come from the version it names.
	versions := map[string]int{}
	for _, r := range by {
		versions[r.Model.Version]++
		if b := strings.HasPrefix(opsTop(t, r)[0], "b"); b != (r.Model.Version == "2") {
			t.Fatalf("version %s answered %v", r.Model.Version, opsTop(t, r))
		}
	}
	if versions["1"] == 0 || versions["2"] == 0 {
		t.Fatalf("results by version: %v", versions)
	}
	// One load, one switch and one retirement per swap; nothing failed.
	for typ, want := range map[string]int{payload.EventVersionLoading: warmup + cycles, payload.EventVersionServing: warmup + cycles,
		payload.EventVersionRetired: warmup + cycles, payload.EventVersionRejected: 0, payload.EventPluginRestarted: 0, payload.EventInferenceFailed: 0} {
		if n := len(l.eventsOf(typ, first)); n != want {
			t.Errorf("%d %s events during the swaps, want %d", n, typ, want)
		}
	}
	growth := float64(after.rss-before.rss) / float64(before.rss)
	t.Logf("daemon RSS %d -> %d KiB (%+.1f%%), fds %d -> %d, shm %d -> %d, children %v -> %v; results by version %v",
		before.rss, after.rss, 100*growth, before.fds, after.fds, len(before.shm), len(after.shm), before.alive, after.alive, versions)
	if growth > 0.10 {
		t.Errorf("daemon resident memory grew %.1f%% over %d swaps", 100*growth, cycles)
	}
	if after.fds > before.fds+3 {
		t.Errorf("open fds %d -> %d over %d swaps", before.fds, after.fds, cycles)
	}
	if len(after.alive) != 1 || len(after.zombies) != 0 {
		t.Errorf("plugin processes after %d swaps: %v alive, %v zombies; want one alive", cycles, after.alive, after.zombies)
	}
	if len(after.shm) > len(after.alive) || len(after.shm) == 0 {
		t.Errorf("shared frame buffers after %d swaps: %v (want one per live plugin that got frames)", cycles, after.shm)
	}
}

// TestOpsAPipelineMovedOffABrokenModelByAReloadCatchesUp: a pipeline whose
// model is broken keeps its frames waiting; a reload that points it at a
// good model lets it answer every one of them, whether or not another
// pipeline still uses the broken model.
func TestOpsAPipelineMovedOffABrokenModelByAReloadCatchesUp(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra string // more pipelines
	}{
		{"the broken model no longer used", ""},
		{"the broken model still used by another pipeline", "\n[pipelines.stays]\nsensor = \"idle\"\nmodel = \"broken\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := opsRepo(t, "broken")
			junk := make([]byte, 64<<10)
			rand.Read(junk)
			if err := os.WriteFile(filepath.Join(repo, "broken", "1", "saved_model.pb"), junk, 0o644); err != nil {
				t.Fatal(err)
			}
			inbox := t.TempDir()
			sensors := dirSensor(inbox) + fmt.Sprintf("[sensors.idle]\nkind = \"dir\"\npath = %q\n", t.TempDir())
			pipelines := `
[pipelines.good]
sensor = "inbox"
model = "lenet5"

[pipelines.moved]
sensor = "inbox"
model = "broken"
` + tc.extra
			p, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensors, extra: pipelines, repo: repo, models: opsModels})
			config := p.cmd.Args[len(p.cmd.Args)-1]
			l := opsRecord(t, w)
			w.serving(t, p, "lenet5", "good")
			waitFor(t, p, time.Minute, "broken version 1 failed", func() bool {
				st, _ := w.model(t, "broken")
				return st.Versions["1"].State == payload.StateFailed
			})
			ds := digits(t)[:20]
			dropDigits(t, inbox, ds)
			var names []string
			for _, d := range ds {
				names = append(names, d.name)
			}
			opsExactlyOnce(t, p, l, "good", names, ds)
			waitFor(t, p, 30*time.Second, "the moved pipeline's frames waiting", func() bool {
				st, _ := opsStats(t, w)
				return st.Pipelines["moved"].Queued == len(names)-1 && st.Pipelines["moved"].Frames == 1
			})

			mark := l.mark()
			opsRewrite(t, config, func(s string) string {
				i := strings.Index(s, "[pipelines.moved]")
				return s[:i] + strings.Replace(s[i:], `model = "broken"`, `model = "lenet5"`, 1)
			}, false)
			ev, _ := l.waitEvent(p, mark, 30*time.Second, "config_reloaded", func(e payload.Event) bool {
				return e.Type == payload.EventConfigReloaded || e.Type == payload.EventConfigRejected
			})
			if ev.Type != payload.EventConfigReloaded || !strings.HasSuffix(ev.Message, "pipelines changed: moved") {
				t.Fatalf("reload: %+v", ev)
			}
			for _, r := range opsExactlyOnce(t, p, l, "moved", names, ds) {
				if r.Model.Name != "lenet5" {
					t.Fatalf("moved pipeline's result from %+v", r.Model)
				}
			}
			waitFor(t, p, 30*time.Second, "every file in done/", func() bool {
				done, _ := filepath.Glob(filepath.Join(inbox, "done", "digit-*.png"))
				return len(done) == len(names)
			})
			if ev := l.eventsOf(payload.EventInferenceFailed, 0); len(ev) != 0 {
				t.Fatalf("inference_failed events: %+v", ev)
			}
		})
	}
}
