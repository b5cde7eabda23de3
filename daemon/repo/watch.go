package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/edgeinfer/edgeinfer/internal/fsqueue"
)

// Defaults of WatchOptions.
const (
	DefaultSettle = 2 * time.Second
	DefaultRescan = 10 * time.Second
)

// WatchOptions configures a Watcher.
type WatchOptions struct {
	Repository string
	// Settle: a version is a candidate once its fingerprint has not changed
	// for Settle (default 2s).
	Settle time.Duration
	// Rescan: period of a full rescan, a safety net for missed events
	// (default 10s).
	Rescan time.Duration
	Logger *slog.Logger
	// Vet, when set, vets each version that passes the deep check (its
	// ops, its signature), once per fingerprint, before the version is
	// reported: its error becomes the version's Err. SetVet replaces it.
	Vet func(v *Version) error

	noEvents bool // tests: no fsnotify, only the periodic rescan
}

// Update is the state of one model's versions.
type Update struct {
	Model string
	// Versions lists every settled version, highest first, servable
	// (Err == nil) or not.
	Versions []Version
	// Settling names the versions whose files were seen but have not
	// settled yet, highest first: they will be in Versions once they have.
	// It is as of the Update: a version that starts settling does not by
	// itself make an Update, the one it gets in Versions does.
	Settling []string
	// Err is set when the model folder itself cannot be listed (it is
	// missing, say); Versions is then empty.
	Err error
}

// Watcher watches a set of models in the repository and reports their
// settled versions on Updates.
type Watcher struct {
	opts     WatchOptions
	log      *slog.Logger
	debounce time.Duration
	updates  chan Update
	running  atomic.Bool

	mu            sync.Mutex
	models        []string
	added         map[string]bool // by SetModels since Run last looked
	vet           func(v *Version) error
	revet         bool          // SetVet since Run last looked
	modelsChanged chan struct{} // SetModels or SetVet
}

// NewWatcher returns a Watcher of no model; call SetModels, then Run.
func NewWatcher(opts WatchOptions) *Watcher {
	if opts.Settle <= 0 {
		opts.Settle = DefaultSettle
	}
	if opts.Rescan <= 0 {
		opts.Rescan = DefaultRescan
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// A burst of events (a copy writes many) is handled once per debounce.
	debounce := min(max(opts.Settle/4, 10*time.Millisecond), 250*time.Millisecond)
	return &Watcher{
		opts:          opts,
		log:           opts.Logger,
		debounce:      debounce,
		updates:       make(chan Update),
		added:         map[string]bool{},
		vet:           opts.Vet,
		modelsChanged: make(chan struct{}, 1),
	}
}

// SetVet replaces WatchOptions.Vet (on a config reload that changes what
// is vetted) and has every settled version checked and vetted again, so
// that a version the new vetting refuses, or no longer refuses, is
// reported so. It is safe from any goroutine, before or while Run runs.
func (w *Watcher) SetVet(vet func(v *Version) error) {
	w.mu.Lock()
	w.vet, w.revet = vet, true
	w.mu.Unlock()
	select {
	case w.modelsChanged <- struct{}{}:
	default:
	}
}

// SetModels replaces the set of watched models (on a config reload). It is
// safe from any goroutine, before or while Run runs. Each model newly added
// is scanned at once and reported in an Update; a model removed is no longer
// reported.
func (w *Watcher) SetModels(models []string) {
	m := slices.Clone(models)
	slices.Sort(m)
	m = slices.Compact(m)
	m = slices.DeleteFunc(m, func(s string) bool { return s == "" })
	w.mu.Lock()
	for _, name := range m {
		if !slices.Contains(w.models, name) {
			w.added[name] = true // reported again even if dropped and added back before Run sees it
		}
	}
	w.models = m
	w.mu.Unlock()
	select {
	case w.modelsChanged <- struct{}{}:
	default:
	}
}

// Updates delivers, for a model, the complete list of its settled versions
// (fingerprint unchanged for Settle), servable (Err == nil) or not, highest
// first, whenever that list changes (a version's presence, Fingerprint or
// Err), and once for each model when it is first watched. A version whose
// files are still changing is left out until it has settled; a settled
// version whose files change again leaves the list until it settles anew.
//
// Updates of one model are coalesced when the receiver is slow: each is
// complete, so only the latest matters. The channel is closed when Run
// returns.
func (w *Watcher) Updates() <-chan Update { return w.updates }

// Run watches until ctx ends, then returns nil. It uses fsnotify on the
// repository root, each watched model's folder and every folder of each of
// its version folders (re-adding watches as folders appear), and rescans
// every model each Rescan in case events were missed. Without fsnotify (no
// inotify instances left, say) it logs a warning and relies on the rescan.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("repo: Watcher.Run called twice")
	}
	defer close(w.updates)
	root, err := filepath.Abs(w.opts.Repository)
	if err != nil {
		return fmt.Errorf("model repository %s: %w", w.opts.Repository, err)
	}
	r := &run{w: w, root: root, models: map[string]*modelState{}}
	var fsWake <-chan struct{}
	var q *fsqueue.Queue
	if !w.opts.noEvents {
		fsw, err := fsnotify.NewWatcher()
		if err != nil {
			w.log.Warn("model repository: no file events, relying on the periodic rescan", "repository", root, "rescan", w.opts.Rescan, "err", err)
		} else {
			q = fsqueue.Drain(fsw, maxQueued)
			defer func() {
				fsw.Close()
				<-q.Done()
			}()
			r.fsw, fsWake = fsw, q.Wake()
		}
	}
	r.watchRoot()
	r.syncModels()
	rescan := time.NewTicker(w.opts.Rescan)
	defer rescan.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		r.arm(wake)
		var out chan Update
		var head Update
		if len(r.pending) > 0 {
			out, head = w.updates, r.pending[0]
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.modelsChanged:
			r.syncModels()
		case <-fsWake:
			events, errs, lost := q.Take()
			for _, err := range errs {
				w.log.Warn("model repository: file event error, rescanning", "repository", root, "err", err)
			}
			if len(errs) > 0 || lost {
				if lost {
					w.log.Warn("model repository: file events lost, rescanning", "repository", root)
				}
				for _, ms := range r.models {
					r.syncWatches(ms.name)
				}
				r.dueAll(time.Now())
			}
			for _, ev := range events {
				r.event(ev)
			}
		case <-wake.C:
			r.scanDue(time.Now())
		case <-rescan.C:
			r.watchRoot()
			for _, ms := range r.models {
				r.syncWatches(ms.name)
				r.scan(ms)
			}
		case out <- head:
			r.pending = r.pending[1:]
		}
	}
}

// maxQueued bounds the events waiting for Run; beyond it they are dropped
// and Run rescans everything instead.
const maxQueued = 4096

// run is the state of one Run; only its goroutine touches it.
type run struct {
	w       *Watcher
	root    string
	fsw     *fsnotify.Watcher // nil: no events
	models  map[string]*modelState
	pending []Update // at most one per model

	rootWarned bool
}

type modelState struct {
	name     string
	first    bool // not scanned yet: files older than Settle count as settled
	sent     bool
	lastKey  string // what the last Update said
	versions map[string]*versionState
	due      time.Time // next scan (zero: none)
}

type versionState struct {
	fp      string
	since   time.Time // fp unchanged since
	settled bool
	v       Version // deep-checked, when settled
}

// syncModels applies the latest SetModels and SetVet.
func (r *run) syncModels() {
	r.w.mu.Lock()
	want, added, revet := r.w.models, r.w.added, r.w.revet
	r.w.added, r.w.revet = map[string]bool{}, false
	r.w.mu.Unlock()
	if revet {
		for _, ms := range r.models {
			for _, st := range ms.versions {
				st.settled = false // checked and vetted again by the scans below
			}
		}
		defer func() {
			for _, ms := range r.models {
				r.scan(ms)
			}
		}()
	}
	for name := range r.models {
		switch {
		case !slices.Contains(want, name):
			delete(r.models, name)
			r.pending = slices.DeleteFunc(r.pending, func(u Update) bool { return u.Model == name })
			r.syncWatches(name) // removes them
			r.w.log.Debug("model repository: model no longer watched", "model", name)
		case added[name]:
			// Dropped and added back: watched anew, so reported anew.
			delete(r.models, name)
			r.pending = slices.DeleteFunc(r.pending, func(u Update) bool { return u.Model == name })
		}
	}
	for _, name := range want {
		if r.models[name] != nil {
			continue
		}
		ms := &modelState{name: name, first: true, versions: map[string]*versionState{}}
		r.models[name] = ms
		r.syncWatches(name)
		r.scan(ms)
	}
}

func (r *run) watchRoot() {
	if r.fsw == nil || slices.Contains(r.fsw.WatchList(), r.root) {
		return
	}
	if err := r.fsw.Add(r.root); err != nil {
		level := slog.LevelWarn
		if r.rootWarned {
			level = slog.LevelDebug // tried again at every rescan
		}
		r.rootWarned = true
		r.w.log.Log(context.Background(), level, "model repository: cannot watch", "path", r.root, "err", err)
	}
}

// syncWatches makes the fsnotify watches under the model's folder those it
// should have: the model folder and every folder of its numbered version
// folders, or none when the model is not watched.
func (r *run) syncWatches(model string) {
	if r.fsw == nil {
		return
	}
	dir := filepath.Join(r.root, model)
	// A folder created inside a new one before its watch was added sends no
	// event: walk again after adding watches until nothing new turns up.
	for range maxDepth + 2 {
		want := map[string]bool{}
		if r.models[model] != nil {
			want = watchDirs(dir)
		}
		for _, p := range r.fsw.WatchList() {
			if p != dir && !strings.HasPrefix(p, dir+string(filepath.Separator)) {
				continue
			}
			if want[p] {
				delete(want, p)
			} else {
				_ = r.fsw.Remove(p) // the folder may be gone already
			}
		}
		added := false
		for p := range want {
			err := r.fsw.Add(p)
			if err == nil {
				added = true
			} else if !errors.Is(err, os.ErrNotExist) {
				r.w.log.Warn("model repository: cannot watch", "path", p, "err", err)
			}
		}
		if !added {
			return
		}
	}
}

// watchDirs returns the model folder and every folder inside its numbered
// version folders; none when the model folder is missing.
func watchDirs(dir string) map[string]bool {
	want := map[string]bool{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return want
	}
	want[dir] = true
	var walk func(d string, depth int)
	walk = func(d string, depth int) {
		want[d] = true
		if depth >= maxDepth {
			return
		}
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			p := filepath.Join(d, e.Name())
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				walk(p, depth+1)
			}
		}
	}
	for _, e := range entries {
		if _, ok := versionNum(e.Name()); !ok {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			walk(p, 0)
		}
	}
	return want
}

// event marks the model an event is about for a scan shortly (a burst of
// events makes one scan) and watches folders as they appear.
func (r *run) event(ev fsnotify.Event) {
	rel, err := filepath.Rel(r.root, ev.Name)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return
	}
	now := time.Now()
	if rel == "." {
		r.dueAll(now)
		return
	}
	model, _, _ := strings.Cut(rel, string(filepath.Separator))
	ms := r.models[model]
	if ms == nil {
		return
	}
	if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if st, err := os.Stat(ev.Name); err != nil || st.IsDir() {
			r.syncWatches(model)
		}
	}
	r.due(ms, now.Add(r.w.debounce))
}

func (r *run) due(ms *modelState, t time.Time) {
	if ms.due.IsZero() || t.Before(ms.due) {
		ms.due = t
	}
}

func (r *run) dueAll(t time.Time) {
	for _, ms := range r.models {
		r.due(ms, t)
	}
}

// arm sets the timer to the earliest scan due.
func (r *run) arm(t *time.Timer) {
	var next time.Time
	for _, ms := range r.models {
		if !ms.due.IsZero() && (next.IsZero() || ms.due.Before(next)) {
			next = ms.due
		}
	}
	if next.IsZero() {
		t.Stop()
		return
	}
	t.Reset(max(time.Until(next), 0))
}

func (r *run) scanDue(now time.Time) {
	for _, ms := range r.models {
		if !ms.due.IsZero() && !ms.due.After(now) {
			r.scan(ms)
		}
	}
}

// scan lists the model's versions, settles those whose fingerprint has not
// changed for Settle (running the deep check once per fingerprint), and
// reports the settled ones if they changed.
func (r *run) scan(ms *modelState) {
	settle := r.w.opts.Settle
	now := time.Now()
	ms.due = time.Time{}
	first := ms.first
	ms.first = false
	list, err := listVersions(r.root, ms.name)
	if err != nil {
		clear(ms.versions)
		r.report(ms, nil, nil, err)
		return
	}
	seen := make(map[string]bool, len(list))
	var out []Version
	var settling []string
	for _, f := range list {
		name := f.v.Version
		seen[name] = true
		st := ms.versions[name]
		if st == nil || st.fp != f.v.Fingerprint {
			since := now
			if first && f.newest.Before(now) {
				// Start-up: the files' times say how long they have been
				// as they are.
				since = f.newest
			}
			st = &versionState{fp: f.v.Fingerprint, since: since}
			ms.versions[name] = st
		}
		if !st.settled && now.Sub(st.since) >= settle {
			v := f.v
			note := check(&v)
			r.w.mu.Lock()
			vet := r.w.vet
			r.w.mu.Unlock()
			if v.Err == nil && vet != nil {
				if err := vet(&v); err != nil {
					v.Err = err
				}
			}
			// The check read the files: they must still be those the
			// fingerprint describes.
			if fp, _, _ := fingerprint(v.Dir); fp != st.fp {
				st.fp, st.since = fp, now
			} else {
				st.settled, st.v = true, v
				if note != "" {
					r.w.log.Warn("model version only partly checked", "model", ms.name, "version", name, "note", note)
				}
			}
		}
		if st.settled {
			out = append(out, st.v)
		} else {
			settling = append(settling, name)
			r.due(ms, st.since.Add(settle))
		}
	}
	for name := range ms.versions {
		if !seen[name] {
			delete(ms.versions, name)
		}
	}
	r.report(ms, out, settling, nil)
}

// report queues an Update when it says something new (or is the model's
// first), replacing an Update of the same model not yet delivered.
func (r *run) report(ms *modelState, versions []Version, settling []string, err error) {
	var key strings.Builder
	for _, v := range versions {
		fmt.Fprintf(&key, "%s %s %v\n", v.Version, v.Fingerprint, v.Err)
	}
	if err != nil {
		fmt.Fprintf(&key, "model: %v\n", err)
	}
	if ms.sent && key.String() == ms.lastKey {
		return
	}
	ms.sent, ms.lastKey = true, key.String()
	u := Update{Model: ms.name, Versions: versions, Settling: settling, Err: err}
	if err != nil {
		r.w.log.Warn("model repository: cannot list model", "model", ms.name, "err", err)
	}
	for _, v := range versions {
		if v.Err != nil {
			r.w.log.Debug("model version not servable", "model", ms.name, "version", v.Version, "err", v.Err)
		}
	}
	if i := slices.IndexFunc(r.pending, func(p Update) bool { return p.Model == ms.name }); i >= 0 {
		r.pending[i] = u
		return
	}
	r.pending = append(r.pending, u)
}
