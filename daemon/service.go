package daemon

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/health"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
)

// Notifier is the service manager's end (systemd's notification socket,
// internal/sdnotify): it gets READY=1, WATCHDOG=1, STATUS= and STOPPING=1.
type Notifier interface {
	Notify(states ...string) error
}

// service is what the daemon tells its service manager; only the main
// loop (Run) uses it, but for modelChanged.
type service struct {
	notify Notifier
	// watchdog is the service manager's watchdog timeout (0: none); the
	// main loop sends WATCHDOG=1 every half of it while no pipeline is
	// stuck.
	watchdog time.Duration
	// modelChanged is signalled whenever a model's state changes, so that
	// the main loop looks whether start-up is over.
	modelChanged chan struct{}
	ready        bool
	stuck        map[string]bool // the pipelines last found stuck
	rate         health.Rate
	fps          float64
	failing      bool // the last notification failed (logged once)

	// settling holds, by model, the versions whose files the repository
	// watch saw but that have not settled yet. updateMu is held while an
	// update of the watch is applied (applyUpdate) and while readiness is
	// worked out (pipelineHealth), so that readiness sees a model's state
	// and its settling versions as of the same update.
	updateMu sync.Mutex
	settling map[string][]string
}

// ReportTo makes the daemon report to a service manager: READY=1 once
// every pipeline's model serves it (or has failed for good), STATUS= on
// every change of that and with every stats publish, STOPPING=1 at
// shutdown, and, when watchdog > 0, WATCHDOG=1 every watchdog/2 from the
// main loop as long as no pipeline is stuck (config.StuckAfter). Call it
// before Run.
func (d *Daemon) ReportTo(n Notifier, watchdog time.Duration) {
	d.svc.notify, d.svc.watchdog = n, watchdog
}

// reporting says whether there is a service manager to tell anything.
func (d *Daemon) reporting() bool { return d.svc.notify != nil }

// modelChanged is called whenever a model's state may have changed, from
// the model's lifecycle (its lock held) or the repository watch; it never
// blocks.
func (d *Daemon) modelChanged() {
	select {
	case d.svc.modelChanged <- struct{}{}:
	default:
	}
}

func (d *Daemon) notify(states ...string) {
	if err := d.svc.notify.Notify(states...); err != nil {
		if !d.svc.failing {
			d.log.Warn("cannot notify the service manager", "err", err)
		}
		d.svc.failing = true
		return
	}
	d.svc.failing = false
}

// applyUpdate hands a model the versions the repository watch reports
// settled, and records those still settling.
func (d *Daemon) applyUpdate(u repo.Update) {
	d.svc.updateMu.Lock()
	defer d.svc.updateMu.Unlock()
	if md, ok := d.mgr.Lookup(u.Model); ok {
		md.SetVersions(u.Versions)
	}
	if d.svc.settling == nil {
		d.svc.settling = map[string][]string{}
	}
	d.svc.settling[u.Model] = u.Settling
	d.modelChanged()
}

// pipelineHealth is how each pipeline's model serves it now.
func (d *Daemon) pipelineHealth() []health.Pipeline {
	d.svc.updateMu.Lock()
	defer d.svc.updateMu.Unlock()
	settling := d.svc.settling
	d.mu.Lock()
	defer d.mu.Unlock()
	models := map[string]string{}
	states := map[string]payload.ModelState{}
	for name, p := range d.cfg.Pipelines {
		models[name] = p.Model
		if _, ok := states[p.Model]; ok {
			continue
		}
		if md, ok := d.mgr.Lookup(p.Model); ok {
			states[p.Model] = md.State()
		}
	}
	return health.PipelinesSettling(models, states, settling)
}

// checkReady sends READY=1 once start-up is over, and the status line
// while it is not.
func (d *Daemon) checkReady() {
	if d.svc.ready {
		return
	}
	ps := d.pipelineHealth()
	if !health.Ready(ps) {
		d.notify("STATUS=" + health.Status(ps, 0, nil, false))
		return
	}
	d.svc.ready = true
	var failed []string
	for _, p := range ps {
		if p.State == health.Failed {
			failed = append(failed, p.Name+": "+p.Why)
		}
	}
	if len(failed) > 0 {
		d.log.Warn("ready, but some pipelines cannot serve; they start once their model can", "pipelines", strings.Join(failed, "; "))
	} else {
		d.log.Info("ready: every pipeline's model serves it", "pipelines", len(ps))
	}
	d.notify("READY=1", "STATUS="+health.Status(ps, 0, nil, true))
}

// dispatches are the pipelines' frames in their plugins, each with its
// bound.
func (d *Daemon) dispatches() []health.Dispatch {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ds []health.Dispatch
	for _, name := range slices.Sorted(maps.Keys(d.pipelines)) {
		since, _ := d.pipelines[name].p.Dispatched()
		ds = append(ds, health.Dispatch{Pipeline: name, Since: since, Bound: d.cfg.StuckAfter(name)})
	}
	return ds
}

// watchdogTick runs in the main loop every half watchdog timeout: it
// sends WATCHDOG=1 unless a pipeline is stuck. When the main loop itself is
// held up (a reload waiting for a frame, a lock never released), the tick
// does not run and systemd hears nothing either.
func (d *Daemon) watchdogTick(now time.Time) {
	stuck := health.StuckPipelines(now, d.dispatches())
	changed := len(stuck) != len(d.svc.stuck)
	current := map[string]bool{}
	for _, s := range stuck {
		current[s.Pipeline] = true
		if !d.svc.stuck[s.Pipeline] {
			changed = true
			d.log.Error("pipeline stuck: a frame has been in its plugin too long; no longer answering systemd's watchdog, which will restart edgeinferd",
				"pipeline", s.Pipeline, "for", s.For.Round(time.Millisecond), "stuck_after", s.Bound)
		}
	}
	for name := range d.svc.stuck {
		if !current[name] {
			d.log.Info("pipeline no longer stuck: its frame left the plugin; answering systemd's watchdog again", "pipeline", name)
		}
	}
	d.svc.stuck = current
	if changed {
		d.notify("STATUS=" + health.Status(d.pipelineHealth(), d.svc.fps, stuck, d.svc.ready))
	}
	if len(stuck) == 0 {
		d.notify("WATCHDOG=1")
	}
}

// statusTick sends the status line, with the pipelines' frames per second
// since the last one; it runs as the stats are published.
func (d *Daemon) statusTick(now time.Time) {
	d.mu.Lock()
	counts := map[string]uint64{}
	for name, run := range d.pipelines {
		counts[name] = run.p.Stats().Frames
	}
	d.mu.Unlock()
	d.svc.fps = d.svc.rate.Update(now, counts)
	if !d.svc.ready {
		return // checkReady says what start-up waits for
	}
	var stuck []health.Stuck
	if d.svc.watchdog > 0 {
		stuck = health.StuckPipelines(now, d.dispatches())
	}
	d.notify("STATUS=" + health.Status(d.pipelineHealth(), d.svc.fps, stuck, true))
}

// warnWatchdog warns of pipeline timeouts the watchdog does not leave room
// for: a reload that stops a pipeline waits in the main loop for its frame
// in the plugin, up to the pipeline's timeout, and meanwhile no WATCHDOG=1
// goes out.
func (d *Daemon) warnWatchdog() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(d.cfg.Pipelines)) {
		if timeout := d.cfg.Pipelines[name].Timeout.Duration; timeout >= d.svc.watchdog/2 {
			d.log.Warn("pipeline timeout is not shorter than half of systemd's WatchdogSec: a reload that stops or removes the pipeline "+
				"may wait that long for its frame, and systemd may take edgeinferd for hung meanwhile",
				"pipeline", name, "timeout", timeout, "WatchdogSec", d.svc.watchdog)
		}
	}
}
