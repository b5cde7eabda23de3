package serving

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// ErrClosed is returned by Acquire once the model is closed (the daemon
// stops, or no pipeline uses the model any more).
var ErrClosed = errors.New("model closed")

// Settings are a model's [serving.<model>] settings.
type Settings struct {
	Version     string        // Latest or a version number
	Policy      string        // Availability or Resource
	LoadTimeout time.Duration // load + warm-up + validation
	Tolerance   float64       // golden validation tolerance (0: the plugin's default)
}

// Model is the lifecycle of one model: which version serves, the processes
// of its versions, and the pipelines that use it. Its state changes under
// one mutex; loads, validations, restarts and reconfigurations run in
// goroutines of their own and report back under it, so frames never wait
// for a load of another version.
type Model struct {
	m    *Manager
	name string

	mu        sync.Mutex
	settings  Settings
	pin       string // pinned by command; "" when none
	pipelines map[string]json.RawMessage
	gen       int // bumped whenever pipelines change
	versions  []repo.Version
	known     bool              // versions arrived at least once
	rejected  map[string]string // versionKey -> why
	// unservable holds the versionKeys of versions the repository check
	// found broken, already reported.
	unservable map[string]bool
	failures   map[string]int // versionKey -> transient load failures in a row
	serving    *instance
	loading    *instance
	// last is the instance that went serving last (it may have stopped
	// since): a load of its version with another binary is a plugin swap.
	last *instance
	live map[*instance]bool // every instance with a process (or starting one)
	// stopping counts this model's processes still closing after stop
	// (Manager.stopProcess); the resource policy loads no version until
	// they are gone.
	stopping int
	past     map[string]payload.VersionState
	target   string
	why      string // why the policy has nothing (new) to serve
	changed  chan struct{}
	closed   bool
	retryAt  time.Time   // a transient load failure: no new load before
	retry    *time.Timer // reconciles at retryAt
	ctx      context.Context
	cancel   context.CancelFunc
}

// instance is one version of the model run by one plugin binary, in one
// process at a time (a restarted process replaces proc).
type instance struct {
	v          repo.Version
	bin        binary
	proc       sdk.Process
	state      string
	reason     string
	since      time.Time
	loadedAt   time.Time
	loadTook   time.Duration // process start to the model loaded and warmed up
	info       sdk.ModelInfo
	val        *payload.Validation
	configured map[string]json.RawMessage // the pipelines the process serves
	bad        map[string]string          // pipelines whose options it refused, and why
	gen        int                        // the pipelines generation configured
	busy       bool                       // a reconfiguration or restart is running
	inflight   int
	restarts   int
	cancel     context.CancelFunc // stops a restart loop
}

func newModel(m *Manager, name string) *Model {
	ctx, cancel := context.WithCancel(context.Background())
	return &Model{m: m, name: name, settings: Settings{Version: Latest, Policy: Availability, LoadTimeout: 2 * time.Minute},
		pipelines: map[string]json.RawMessage{}, rejected: map[string]string{}, unservable: map[string]bool{}, failures: map[string]int{},
		live: map[*instance]bool{}, past: map[string]payload.VersionState{}, changed: make(chan struct{}),
		ctx: ctx, cancel: cancel}
}

// Name is the model's name.
func (md *Model) Name() string { return md.name }

// SetSettings applies [serving.<model>] (config load and reload).
func (md *Model) SetSettings(s Settings) {
	md.mu.Lock()
	defer md.mu.Unlock()
	if s.Version == "" {
		s.Version = Latest
	}
	if s.Policy == "" {
		s.Policy = Availability
	}
	if s.LoadTimeout <= 0 {
		s.LoadTimeout = 2 * time.Minute
	}
	md.settings = s
	md.reconcile()
}

// SetPipelines sets the pipelines that use the model and their options.
// Processes that serve are reconfigured in place (same process).
func (md *Model) SetPipelines(p map[string]json.RawMessage) {
	md.mu.Lock()
	defer md.mu.Unlock()
	md.pipelines = maps.Clone(p)
	md.gen++
	for inst := range md.live {
		md.reconfigure(inst)
	}
	md.reconcile()
}

// SetVersions gives the model the versions in the repository (from the
// repository watch: settled versions, highest first).
func (md *Model) SetVersions(vs []repo.Version) {
	md.mu.Lock()
	defer md.mu.Unlock()
	md.versions, md.known = vs, true
	for _, v := range vs {
		// A version the repository check finds broken (corrupt or cut-short
		// files, a bad manifest) is rejected before any process loads it;
		// it is said once per state of its files.
		if key := versionKey(v); v.Err != nil && !md.unservable[key] {
			md.unservable[key] = true
			md.m.log.Error("version not servable", "model", md.name, "version", v.Version, "err", v.Err)
			md.m.event(payload.Event{Type: payload.EventVersionRejected, Model: md.name, Version: v.Version,
				Message: fmt.Sprintf("model %s version %s rejected: %v", md.name, v.Version, v.Err)})
		}
	}
	md.reconcile()
}

// Pin holds the model at version (a command); "" unpins.
func (md *Model) Pin(version string) error {
	md.mu.Lock()
	defer md.mu.Unlock()
	if version != "" && !slices.ContainsFunc(md.versions, func(v repo.Version) bool { return v.Version == version }) {
		return fmt.Errorf("model %s has no version %s", md.name, version)
	}
	md.pin = version
	md.reconcile()
	return nil
}

// Rollback pins the model to the highest servable version below the one
// serving now.
func (md *Model) Rollback() (string, error) {
	md.mu.Lock()
	defer md.mu.Unlock()
	if md.serving == nil {
		return "", fmt.Errorf("model %s serves no version to roll back from", md.name)
	}
	v, ok := below(md.versions, md.serving.v.Version, md.rejected)
	if !ok {
		return "", fmt.Errorf("model %s has no servable version below %s", md.name, md.serving.v.Version)
	}
	md.pin = v.Version
	md.reconcile()
	return v.Version, nil
}

// want is the version the model should serve: a command's pin, else the
// config's version.
func (md *Model) want() string {
	if md.pin != "" {
		return md.pin
	}
	return md.settings.Version
}

// signal wakes everyone waiting in Acquire and publishes the state.
func (md *Model) signal() {
	close(md.changed)
	md.changed = make(chan struct{})
	md.m.cfg.Publish(md.stateLocked())
}

// reconcile moves the model towards the version its policy wants. It runs
// with mu held after every change and never blocks.
func (md *Model) reconcile() {
	defer md.signal()
	if md.closed || !md.known || len(md.pipelines) == 0 {
		return
	}
	v, ok, why := choose(md.versions, md.want(), md.rejected)
	md.target, md.why = "", why
	if s := md.serving; s != nil && (!ok || v.Num < s.v.Num) && (md.want() == Latest || md.want() == s.v.Version) &&
		slices.ContainsFunc(md.versions, func(r repo.Version) bool {
			_, bad := md.rejected[versionKey(r)]
			return r.Version == s.v.Version && (r.Err != nil || bad)
		}) {
		// The serving version's files changed in place and cannot be served
		// as they are now: its loaded copy is still good and keeps serving
		// (removing its folder is what rolls back).
		md.target = s.v.Version
		if ok {
			md.why = fmt.Sprintf("version %s's files changed and cannot be served as they are; its loaded copy keeps serving", s.v.Version)
		}
		return
	}
	if !ok {
		return
	}
	md.target = v.Version
	bin, err := md.m.bins.forTask(manifest.Plugin(v.Manifest.Task))
	if err != nil {
		md.why = err.Error()
		return
	}
	if s := md.serving; s != nil && s.v.Version == v.Version && s.v.Fingerprint == v.Fingerprint && s.bin.fp == bin.fp {
		return // serving what it should
	}
	if md.loading != nil {
		return // reconciled again when it ends
	}
	if wait := time.Until(md.retryAt); wait > 0 {
		if md.retry == nil {
			md.retry = time.AfterFunc(wait, func() {
				md.mu.Lock()
				defer md.mu.Unlock()
				md.retry = nil
				md.reconcile()
			})
		}
		return
	}
	if md.settings.Policy == Resource && (len(md.live) > 0 || md.stopping > 0) {
		// Stop the old first; the load starts once its process is gone
		// (stop's callback reconciles again).
		if s := md.serving; s != nil {
			md.retire(s, fmt.Sprintf("making room for version %s (policy resource)", v.Version))
		}
		return
	}
	md.startLoad(v, bin)
}

// startLoad brings up a new instance of v with bin in the background; the
// pipelines switch to it once it has loaded, warmed up and validated.
func (md *Model) startLoad(v repo.Version, bin binary) {
	inst := &instance{v: v, bin: bin, state: payload.StateLoading, since: time.Now()}
	md.loading = inst
	md.live[inst] = true
	// Under the resource policy the old instance has stopped by now: what
	// makes a swap is what served last.
	swap := md.last != nil && versionKey(md.last.v) == versionKey(v) && md.last.bin.fp != bin.fp
	md.m.event(payload.Event{Type: payload.EventVersionLoading, Model: md.name, Version: v.Version,
		Message: fmt.Sprintf("model %s version %s: loading with %s", md.name, v.Version, bin.label())})
	timeout := md.settings.LoadTimeout
	go func() {
		ctx, cancel := context.WithTimeout(md.ctx, timeout)
		defer cancel()
		err := md.bringUp(ctx, inst, true)
		md.mu.Lock()
		defer md.mu.Unlock()
		md.loading = nil
		if md.closed {
			md.stop(inst, "edgeinferd is stopping")
			return
		}
		if err != nil {
			md.loadFailed(inst, swap, err, ctx.Err() != nil)
			return
		}
		delete(md.failures, versionKey(v))
		if !md.wanted(inst) {
			// The versions, the pin or the binary changed while it
			// loaded: switching to it would only mean switching again.
			md.retire(inst, "no longer wanted once loaded")
			return
		}
		md.goServing(inst, swap)
	}()
}

// wanted reports whether inst runs the version and binary the policy wants
// served now.
func (md *Model) wanted(inst *instance) bool {
	v, ok, _ := choose(md.versions, md.want(), md.rejected)
	if !ok || versionKey(v) != versionKey(inst.v) {
		return false
	}
	bin, err := md.m.bins.forTask(manifest.Plugin(v.Manifest.Task))
	return err == nil && bin.fp == inst.bin.fp
}

// loadFailed rejects what failed: the binary when it would not start or
// when only the binary changed, else the version. A process that died or
// hung while loading may be transient: it is tried again with a backoff,
// three times, before the version is rejected.
func (md *Model) loadFailed(inst *instance, swap bool, err error, timedOut bool) {
	var se *startError
	why := err.Error()
	if timedOut {
		why = fmt.Sprintf("load, warm-up and validation took over %s (serving.%s.load_timeout): %v", md.settings.LoadTimeout, md.name, err)
	}
	key := versionKey(inst.v)
	transient := errors.Is(err, sdk.ErrPluginExited) && !timedOut
	if errors.As(err, &se) || swap {
		// The binary's fault: the version itself stays as it was.
		md.m.bins.reject(inst.bin, why)
		md.stop(inst, why)
		md.m.log.Error("plugin binary rejected", "model", md.name, "version", inst.v.Version, "plugin", inst.bin.label(), "err", why)
		md.m.event(payload.Event{Type: payload.EventPluginRejected, Model: md.name, Version: inst.v.Version,
			Message: fmt.Sprintf("plugin %s rejected (model %s version %s): %s", inst.bin.label(), md.name, inst.v.Version, why),
			Attrs:   map[string]any{"plugin": inst.bin.label()}})
		md.reconcile()
		return
	}
	if transient && md.failures[key] < 2 {
		md.failures[key]++
		md.retryAt = time.Now().Add(time.Duration(md.failures[key]) * md.m.cfg.MinBackoff)
		why = fmt.Sprintf("%s (transient; trying again, attempt %d of 3)", why, md.failures[key]+1)
	} else {
		delete(md.failures, key)
		md.rejected[key] = why
	}
	md.stop(inst, why)
	inst.state, inst.reason = payload.StateFailed, why
	md.remember(inst)
	md.m.log.Error("version rejected", "model", md.name, "version", inst.v.Version, "err", why)
	md.m.event(payload.Event{Type: payload.EventVersionRejected, Model: md.name, Version: inst.v.Version,
		Message: fmt.Sprintf("model %s version %s rejected: %s", md.name, inst.v.Version, why)})
	md.reconcile()
}

// goServing switches the pipelines to inst at their next frame; the old
// version drains and stops.
func (md *Model) goServing(inst *instance, swap bool) {
	old := md.serving
	inst.state, inst.reason, inst.since = payload.StateServing, "", time.Now()
	md.serving = inst
	md.m.bins.served(inst.bin)
	if err := inst.proc.SetNice(0); err != nil {
		md.m.log.Warn("cannot raise the priority of a serving plugin process", "model", md.name, "pid", inst.proc.Pid(), "err", err)
	}
	md.last = inst
	typ, msg := payload.EventVersionServing, fmt.Sprintf("model %s version %s serving (pid %d)", md.name, inst.v.Version, inst.proc.Pid())
	if swap {
		typ, msg = payload.EventPluginSwapped, fmt.Sprintf("model %s version %s now served by %s (pid %d)", md.name, inst.v.Version, inst.bin.label(), inst.proc.Pid())
	}
	md.m.log.Info(msg, "model", md.name, "version", inst.v.Version, "pid", inst.proc.Pid())
	attrs := map[string]any{"pid": inst.proc.Pid(), "warmup_ms": sdk.Millis(inst.info.Warmup)}
	if old != nil {
		attrs["replaces"] = old.v.Version
	}
	// Announced before the old one retires, which it does only now that
	// the new one serves.
	md.m.event(payload.Event{Type: typ, Model: md.name, Version: inst.v.Version, Message: msg, Attrs: attrs})
	if old != nil {
		md.retire(old, fmt.Sprintf("replaced by version %s", inst.v.Version))
	}
	md.reconfigure(inst) // the pipelines may have changed while it loaded
	md.reconcile()
}

// retire takes inst out of service: frames in flight finish on it, then its
// process stops.
func (md *Model) retire(inst *instance, why string) {
	if md.serving == inst {
		md.serving = nil
	}
	if inst.cancel != nil {
		inst.cancel()
	}
	inst.state, inst.reason, inst.since = payload.StateDraining, why, time.Now()
	md.drained(inst)
}

// drained stops a draining instance once its last frame is done.
func (md *Model) drained(inst *instance) {
	if inst.state != payload.StateDraining || inst.inflight > 0 {
		return
	}
	md.stop(inst, inst.reason)
	inst.state, inst.since = payload.StateRetired, time.Now()
	md.remember(inst)
	md.m.event(payload.Event{Type: payload.EventVersionRetired, Model: md.name, Version: inst.v.Version,
		Message: fmt.Sprintf("model %s version %s retired: %s", md.name, inst.v.Version, inst.reason)})
	md.reconcile()
}

// stop ends inst's process and forgets it as live. The process is stopped
// gracefully, in the background (its task closes: a plugin that keeps
// state, such as embed's clusters, saves it), since nothing is in flight on
// it; Manager.Close waits for those stops.
func (md *Model) stop(inst *instance, why string) {
	if inst.proc != nil {
		md.stopping++
		md.m.stopProcess(inst.proc, func() {
			md.mu.Lock()
			defer md.mu.Unlock()
			md.stopping--
			if !md.closed {
				md.reconcile()
			}
		})
	}
	if inst.cancel != nil {
		inst.cancel()
	}
	inst.reason = why
	delete(md.live, inst)
	if md.serving == inst {
		md.serving = nil
	}
}

// remember keeps the final state of a stopped instance for the model state.
func (md *Model) remember(inst *instance) {
	md.past[inst.v.Version] = md.versionState(inst)
}

// startError is a plugin binary that would not start or speaks another
// protocol version: the binary's fault, not the model's.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// bringUp starts a process for inst, loads the version, configures the
// pipelines and (validate) reproduces the golden samples. The process runs
// at a lower priority meanwhile, so a load does not starve the versions
// that serve.
func (md *Model) bringUp(ctx context.Context, inst *instance, validate bool) error {
	began := time.Now()
	md.mu.Lock()
	access := sdk.AccessFor(inst.v.Dir, md.pipelines)
	md.mu.Unlock()
	proc, err := md.m.cfg.Start(inst.bin.path, access)
	if errors.Is(err, sdk.ErrCannotConfine) {
		return err // no binary would do better: the version is rejected
	} else if err != nil {
		return &startError{err}
	}
	if err := proc.SetNice(md.m.cfg.LoadNice); err != nil {
		md.m.log.Warn("cannot lower the priority of a loading plugin process", "model", md.name, "pid", proc.Pid(), "err", err)
	}
	md.mu.Lock()
	inst.proc = proc
	settings, pipelines, gen := md.settings, maps.Clone(md.pipelines), md.gen
	closed := md.closed
	md.signal()
	md.mu.Unlock()
	if closed {
		return ErrClosed
	}
	info, err := proc.Load(ctx, sdk.LoadRequest{Model: md.name, Version: inst.v.Version, ModelDir: inst.v.Dir,
		Threads: md.m.cfg.Threads, Tolerance: settings.Tolerance})
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	took := time.Since(began)
	configured, bad, err := configure(ctx, proc, pipelines)
	if err != nil {
		return fmt.Errorf("configure pipelines: %w", err)
	}
	md.mu.Lock()
	before := inst.bad // a restarted process refuses what the one before did
	inst.info, inst.loadedAt, inst.loadTook = info, time.Now(), took
	inst.configured, inst.bad, inst.gen = configured, bad, gen
	if validate {
		inst.state, inst.since = payload.StateValidating, time.Now()
	}
	md.reportBad(inst, before)
	md.signal()
	md.mu.Unlock()
	if !validate {
		return nil
	}
	val, err := proc.Validate(ctx)
	if err != nil {
		return fmt.Errorf("validation: %w", err)
	}
	md.mu.Lock()
	inst.val = &payload.Validation{Samples: val.Samples, MaxAbsDiff: val.MaxAbsDiff, Tolerance: val.Tolerance}
	md.mu.Unlock()
	return nil
}

// configure gives proc the pipelines' options. The plugin refuses a set
// with one bad pipeline ("pipeline <name>: ..."): that pipeline is left out
// and the rest configured, so one pipeline's bad options do not stop the
// others.
func configure(ctx context.Context, proc sdk.Process, pipelines map[string]json.RawMessage) (ok map[string]json.RawMessage, bad map[string]string, err error) {
	set, bad := maps.Clone(pipelines), map[string]string{}
	for {
		err := proc.Configure(ctx, set)
		if err == nil {
			return set, bad, nil
		}
		if errors.Is(err, sdk.ErrPluginExited) || ctx.Err() != nil || len(set) == 0 {
			return nil, nil, err // gone, out of time, or refusing even no pipeline
		}
		named := false
		for name := range set {
			if strings.Contains(err.Error(), "pipeline "+name+":") {
				bad[name], named = err.Error(), true
				delete(set, name)
			}
		}
		if !named {
			for name := range set {
				bad[name] = err.Error()
			}
			set = map[string]json.RawMessage{}
		}
	}
}

// reconfigure brings a live process up to the current pipelines, in the
// background, unless it is already at them or busy (it is looked at again
// when the busy work ends).
func (md *Model) reconfigure(inst *instance) {
	if inst.busy || inst.proc == nil || inst.gen == md.gen || inst.state != payload.StateServing {
		return
	}
	inst.busy = true
	proc, set, gen := inst.proc, maps.Clone(md.pipelines), md.gen
	go func() {
		ctx, cancel := context.WithTimeout(md.ctx, time.Minute)
		defer cancel()
		configured, bad, err := configure(ctx, proc, set)
		md.mu.Lock()
		defer md.mu.Unlock()
		inst.busy = false
		if err != nil {
			md.m.log.Warn("reconfiguring a plugin failed", "model", md.name, "err", err)
			if inst.proc != proc {
				md.reconfigure(inst) // restarted meanwhile, maybe with the pipelines before
			}
			return // a dead process is noticed by the crash check
		}
		if inst.proc == proc {
			old := inst.bad
			inst.configured, inst.bad, inst.gen = configured, bad, gen
			md.reportBad(inst, old)
		}
		md.reconfigure(inst)
		md.signal()
	}()
}

// reportBad publishes an event for each pipeline whose options inst newly
// refused.
func (md *Model) reportBad(inst *instance, before map[string]string) {
	for name, why := range inst.bad {
		if before[name] == why {
			continue
		}
		md.m.log.Error("pipeline options refused", "pipeline", name, "model", md.name, "err", why)
		md.m.event(payload.Event{Type: payload.EventOptionsRejected, Pipeline: name, Model: md.name, Version: inst.v.Version,
			Message: fmt.Sprintf("pipeline %s: options refused by model %s version %s: %s; its frames wait until the config is fixed", name, md.name, inst.v.Version, why)})
	}
}

// Lease is one frame's hold on a serving process: the version cannot stop
// under it. Release it when the frame is done.
type Lease struct {
	md   *Model
	inst *instance
	proc sdk.Process
}

// Acquire waits until a version serves pipeline and returns a lease on it.
func (md *Model) Acquire(ctx context.Context, pipeline string) (*Lease, error) {
	for {
		md.mu.Lock()
		if md.closed {
			md.mu.Unlock()
			return nil, ErrClosed
		}
		if s := md.serving; s != nil && s.state == payload.StateServing && s.proc != nil {
			if _, ok := s.configured[pipeline]; ok {
				s.inflight++
				md.mu.Unlock()
				return &Lease{md: md, inst: s, proc: s.proc}, nil
			}
		}
		ch := md.changed
		md.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Process is the plugin process to send the frame to.
func (l *Lease) Process() sdk.Process { return l.proc }

// Version is the version that serves the frame.
func (l *Lease) Version() repo.Version { return l.inst.v }

// Release ends the lease. err is what the frame's Infer returned: a process
// that died or hung is restarted (same version, same binary).
func (l *Lease) Release(err error) {
	md := l.md
	md.mu.Lock()
	defer md.mu.Unlock()
	l.inst.inflight--
	if errors.Is(err, sdk.ErrPluginExited) {
		md.crashed(l.inst, l.proc, err)
	}
	md.drained(l.inst)
}

// checkExited restarts a serving process that died while idle.
func (md *Model) checkExited() {
	md.mu.Lock()
	defer md.mu.Unlock()
	if s := md.serving; s != nil && s.state == payload.StateServing && s.proc != nil && s.proc.Exited() {
		md.crashed(s, s.proc, errors.New("the process exited while idle"))
	}
}

// crashed handles the death of proc, which ran inst: a serving instance is
// restarted in the background, with the same version and binary; a
// draining one is simply stopped.
func (md *Model) crashed(inst *instance, proc sdk.Process, err error) {
	if inst.proc != proc || md.closed {
		return // already handled
	}
	proc.Kill()
	inst.proc = nil // no pid to show, no lease to give until another runs
	if inst.state != payload.StateServing {
		return
	}
	inst.restarts++
	inst.state, inst.reason, inst.since = payload.StateRestarting, err.Error(), time.Now()
	pid := proc.Pid()
	md.m.log.Error("plugin process died; restarting it", "model", md.name, "version", inst.v.Version, "pid", pid, "err", err)
	md.m.event(payload.Event{Type: payload.EventPluginRestarted, Model: md.name, Version: inst.v.Version,
		Message: fmt.Sprintf("model %s version %s: plugin process %d died (%v); restarting it", md.name, inst.v.Version, pid, err),
		Attrs:   map[string]any{"pid": pid, "restarts": inst.restarts}})
	ctx, cancel := context.WithCancel(md.ctx)
	inst.cancel = cancel
	go md.restart(ctx, inst, md.settings.LoadTimeout)
	md.signal()
}

// restart starts inst's process again until it serves, backing off while it
// keeps failing (state failed meanwhile, with the reason).
func (md *Model) restart(ctx context.Context, inst *instance, timeout time.Duration) {
	backoff := md.m.cfg.MinBackoff
	for {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		err := md.bringUp(lctx, inst, false)
		cancel()
		md.mu.Lock()
		if ctx.Err() != nil || md.closed || inst.state == payload.StateDraining || !md.live[inst] {
			if inst.proc != nil && md.serving != inst {
				inst.proc.Kill()
			}
			md.mu.Unlock()
			return
		}
		if err == nil {
			inst.state, inst.reason, inst.since = payload.StateServing, "", time.Now()
			if err := inst.proc.SetNice(0); err != nil {
				md.m.log.Warn("cannot raise the priority of a serving plugin process", "model", md.name, "err", err)
			}
			md.reconfigure(inst)
			md.signal()
			md.mu.Unlock()
			return
		}
		if inst.proc != nil {
			inst.proc.Kill()
			inst.proc = nil
		}
		inst.state, inst.reason = payload.StateFailed, fmt.Sprintf("restart failed: %v; next try in %s", err, backoff)
		md.m.event(payload.Event{Type: payload.EventPluginFailed, Model: md.name, Version: inst.v.Version, Message: fmt.Sprintf("model %s version %s: %s", md.name, inst.v.Version, inst.reason)})
		md.signal()
		md.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, md.m.cfg.MaxBackoff)
		md.mu.Lock()
		inst.state = payload.StateRestarting
		md.mu.Unlock()
	}
}

// close stops every process of the model; Acquire returns ErrClosed.
func (md *Model) close() {
	md.mu.Lock()
	defer md.mu.Unlock()
	if md.closed {
		return
	}
	md.closed = true
	md.cancel()
	if md.retry != nil {
		md.retry.Stop()
	}
	for inst := range md.live {
		md.stop(inst, "edgeinferd is stopping")
		inst.state, inst.since = payload.StateRetired, time.Now()
		md.remember(inst)
	}
	md.signal()
}

// Pids returns the process ids of the model's live processes.
func (md *Model) Pids() []int {
	md.mu.Lock()
	defer md.mu.Unlock()
	var pids []int
	for inst := range md.live {
		if inst.proc != nil && inst.proc.Pid() > 0 {
			pids = append(pids, inst.proc.Pid())
		}
	}
	slices.Sort(pids)
	return pids
}

// State is the model's state as published.
func (md *Model) State() payload.ModelState {
	md.mu.Lock()
	defer md.mu.Unlock()
	return md.stateLocked()
}

func (md *Model) stateLocked() payload.ModelState {
	st := payload.ModelState{Schema: payload.Schema, Model: md.name, Target: md.target, Time: time.Now().UTC(),
		Policy:    payload.Policy{Version: md.settings.Version, Memory: md.settings.Policy, Pinned: md.pin},
		Versions:  map[string]payload.VersionState{},
		Pipelines: slices.Sorted(maps.Keys(md.pipelines))}
	maps.Copy(st.Versions, md.past)
	for _, v := range md.versions {
		if v.Err != nil { // what its files are now, over what it once did
			st.Versions[v.Version] = payload.VersionState{State: payload.StateFailed, Reason: v.Err.Error()}
		}
	}
	for inst := range md.live {
		if inst != md.serving {
			st.Versions[inst.v.Version] = md.versionState(inst)
		}
	}
	if md.serving != nil {
		st.Serving = md.serving.v.Version
		st.Versions[st.Serving] = md.versionState(md.serving)
	}
	st.Reason = md.why
	return st
}

func (md *Model) versionState(inst *instance) payload.VersionState {
	vs := payload.VersionState{State: inst.state, Reason: inst.reason, Plugin: inst.bin.label(), Task: inst.v.Manifest.Task,
		Description: inst.info.Description, Signature: inst.info.Signature, InputShape: inst.info.InputShape,
		Labels: inst.info.Labels, WarmupMS: sdk.Millis(inst.info.Warmup), LoadMS: sdk.Millis(inst.loadTook), Validation: inst.val, Restarts: inst.restarts,
		Since: inst.since.UTC(), Pipelines: slices.Sorted(maps.Keys(inst.configured))}
	if inst.proc != nil && md.live[inst] {
		vs.PID = inst.proc.Pid()
	}
	if !inst.loadedAt.IsZero() {
		t := inst.loadedAt.UTC()
		vs.LoadedAt = &t
	}
	if len(inst.bad) > 0 {
		vs.Refused = maps.Clone(inst.bad)
	}
	return vs
}
