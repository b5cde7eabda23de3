package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/sensors"
)

// pipeline runs one model on one sensor's frames, in its own plugin process.
type pipeline struct {
	d    *Daemon
	name string
	cfg  config.Pipeline

	queue chan *job // lossless frames, waited for

	liveMu  sync.Mutex
	live    *job          // the newest live frame, if any
	liveSig chan struct{} // signalled when live is set
	drainCh chan struct{} // closed: finish what is queued, then stop

	plugin  *sdk.Plugin
	version repo.Version

	frames, results, failed, skipped, restartCount atomic.Uint64
	latMu                                          sync.Mutex
	lat                                            []float64 // recent totals (ms), a ring
	latNext                                        int
}

const latencyWindow = 1024

func newPipeline(d *Daemon, name string, cfg config.Pipeline) *pipeline {
	return &pipeline{d: d, name: name, cfg: cfg,
		queue: make(chan *job, cfg.Queue), liveSig: make(chan struct{}, 1), drainCh: make(chan struct{})}
}

// offer puts a live frame in the pipeline's slot and returns the frame it
// replaced, if any.
func (p *pipeline) offer(j *job) (old *job) {
	p.liveMu.Lock()
	old, p.live = p.live, j
	p.liveMu.Unlock()
	if old != nil {
		p.skipped.Add(1)
	}
	select {
	case p.liveSig <- struct{}{}:
	default:
	}
	return old
}

func (p *pipeline) takeLive() *job {
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	j := p.live
	p.live = nil
	return j
}

// drain asks the worker to finish the queued frames and stop.
func (p *pipeline) drain() { close(p.drainCh) }

// run is the pipeline's worker: it starts the plugin, then takes frames one
// at a time until drained.
func (p *pipeline) run(ctx context.Context) {
	defer p.stopPlugin()
	p.ensurePlugin(ctx)
	// An idle pipeline notices a dead plugin within a second and restarts
	// it, rather than at its next frame.
	check := time.NewTicker(time.Second)
	defer check.Stop()
	for {
		var j *job
		select {
		case j = <-p.queue:
		case <-p.liveSig:
			j = p.takeLive()
		case <-check.C:
			if p.plugin != nil && p.plugin.Exited() {
				p.pluginDied(errors.New("the process exited while idle"), "")
				p.ensurePlugin(ctx)
			}
		case <-p.drainCh:
			for {
				select {
				case j := <-p.queue:
					p.process(ctx, j)
				default:
					if j := p.takeLive(); j != nil {
						j.track.done(errStopping)
					}
					return
				}
			}
		}
		if j != nil {
			p.process(ctx, j)
		}
	}
}

// process runs one frame and publishes its result or the failure.
func (p *pipeline) process(ctx context.Context, j *job) {
	p.frames.Add(1)
	f := j.frame
	started := time.Now()
	res, err := p.infer(ctx, sdk.Frame{Seq: f.Seq, Width: f.Width, Height: f.Height, RGB: f.RGB})
	finished := time.Now()
	if errors.Is(err, sensors.ErrUnfinished) { // stopping: the sensor keeps the input
		j.track.done(err)
		return
	}
	if err != nil {
		p.failed.Add(1)
		ev := Event{Type: EventInferenceFailed, Pipeline: p.name, Sensor: f.Sensor, Model: p.cfg.Model, Source: f.Source,
			Message: fmt.Sprintf("%s: %v", f.Source, err), Attrs: map[string]any{"seq": f.Seq}}
		if errors.Is(err, sdk.ErrBadFrame) {
			ev.Type = EventBadInput
		}
		p.d.log.Warn("frame failed", "pipeline", p.name, "source", f.Source, "err", err)
		p.d.event(ev)
		j.track.done(err)
		return
	}
	t := res.Timings
	inside := t.Preprocess + t.Inference + t.Postprocess
	total := finished.Sub(j.enqueued)
	r := Result{
		Schema: Schema, Device: p.d.cfg.Device, Pipeline: p.name, Sensor: f.Sensor, Seq: f.Seq, Source: f.Source,
		CapturedAt: f.Time.UTC(), Model: ModelRef{Name: p.version.Model, Version: p.version.Version},
		Task: p.version.Manifest.Task, Width: f.Width, Height: f.Height, Output: res.Output,
		Timings: Timings{
			Queue: sdk.Millis(started.Sub(j.enqueued)), Transfer: sdk.Millis(finished.Sub(started) - inside),
			Preprocess: sdk.Millis(t.Preprocess), Inference: sdk.Millis(t.Inference),
			Postprocess: sdk.Millis(t.Postprocess), Total: sdk.Millis(total),
		},
	}
	b, err := json.Marshal(r)
	if err != nil {
		p.failed.Add(1)
		j.track.done(fmt.Errorf("encode result: %w", err))
		return
	}
	// The frame is finished (its file moved to done/, its MQTT message
	// acknowledged) only once the broker has the result, so a crash in
	// between loses nothing: the input is processed again.
	p.d.publishing.Add(1)
	p.d.bus.PublishThen(p.d.topic(p.name, "result"), p.d.cfg.MQTT.RetainResults, b, func(err error) {
		defer p.d.publishing.Done()
		if err != nil {
			j.track.done(fmt.Errorf("result not published: %v: %w", err, sensors.ErrUnfinished))
			return
		}
		j.track.done(nil)
	})
	p.results.Add(1)
	p.record(r.Timings.Total)
	if p.d.cfg.Log.Results {
		p.d.log.Info("result", "pipeline", p.name, "source", f.Source, "output", string(res.Output), "total_ms", r.Timings.Total)
	}
}

// infer runs a frame, restarting the plugin if its process died, up to
// cfg.Retries times for the same frame (a frame that kills the plugin every
// time is given up, not retried forever).
func (p *pipeline) infer(ctx context.Context, f sdk.Frame) (sdk.Result, error) {
	for attempt := 0; ; attempt++ {
		if !p.ensurePlugin(ctx) {
			return sdk.Result{}, errStopping
		}
		res, err := p.plugin.Infer(ctx, f)
		if !errors.Is(err, sdk.ErrPluginExited) {
			return res, err
		}
		p.pluginDied(err, fmt.Sprintf("retrying frame %d", f.Seq), "seq", f.Seq, "attempt", attempt+1)
		if attempt >= p.cfg.Retries {
			return sdk.Result{}, fmt.Errorf("the plugin died %d times on this frame; giving up on it: %w", attempt+1, err)
		}
	}
}

// pluginDied forgets a plugin whose process is gone and publishes a
// plugin_restarted event (ensurePlugin starts the new one). then says what
// happens next, attrs are added to the event.
func (p *pipeline) pluginDied(err error, then string, attrs ...any) {
	pid := p.plugin.Pid()
	p.plugin.Kill()
	p.plugin = nil
	p.restartCount.Add(1)
	p.d.log.Error("plugin process died; restarting it", "pipeline", p.name, "pid", pid, "err", err)
	msg := fmt.Sprintf("plugin process %d of pipeline %s died (%v); restarting it", pid, p.name, err)
	if then != "" {
		msg += " and " + then
	}
	e := Event{Type: EventPluginRestarted, Pipeline: p.name, Model: p.cfg.Model, Message: msg, Attrs: map[string]any{"pid": pid}}
	for i := 0; i+1 < len(attrs); i += 2 {
		e.Attrs[attrs[i].(string)] = attrs[i+1]
	}
	p.d.event(e)
}

// ensurePlugin starts the plugin and loads the newest model version,
// retrying with backoff until it works, ctx ends or the daemon stops
// (frames wait meanwhile).
func (p *pipeline) ensurePlugin(ctx context.Context) bool {
	backoff := time.Second
	for p.plugin == nil {
		if err := p.startPlugin(ctx); err != nil {
			p.d.log.Error("plugin failed", "pipeline", p.name, "model", p.cfg.Model, "err", err, "retry_in", backoff)
			p.d.event(Event{Type: EventPluginFailed, Pipeline: p.name, Model: p.cfg.Model,
				Message: fmt.Sprintf("pipeline %s: %v; retrying in %s", p.name, err, backoff)})
			p.d.setModel(p.cfg.Model, func(st *ModelState) {
				st.State, st.Error = "failed", err.Error()
				st.Pipelines[p.name] = PipelineState{State: "failed", Error: err.Error(), Restarts: int(p.restartCount.Load())}
			})
			select {
			case <-ctx.Done():
				return false
			case <-p.drainCh: // stopping: the frames stay with their sensors
				return false
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}
	return true
}

func (p *pipeline) startPlugin(ctx context.Context) error {
	v, err := repo.Newest(p.d.cfg.Models.Repository, p.cfg.Model)
	if err != nil {
		return err
	}
	p.d.setModel(p.cfg.Model, func(st *ModelState) {
		st.Version, st.State, st.Task = v.Version, "loading", v.Manifest.Task
		st.Pipelines[p.name] = PipelineState{State: "loading", Restarts: int(p.restartCount.Load())}
	})
	bin := filepath.Join(p.d.cfg.PluginDir, "edgeinfer-"+v.Manifest.Task)
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("no plugin for task %q: %w", v.Manifest.Task, err)
	}
	opts, err := json.Marshal(p.cfg.Options)
	if err != nil {
		return fmt.Errorf("options: %w", err)
	}
	pl, err := sdk.Start(sdk.Options{Path: bin, Stderr: os.Stderr})
	if err != nil {
		return err
	}
	info, err := pl.Load(ctx, sdk.LoadRequest{Model: v.Model, Version: v.Version, ModelDir: v.Dir, Options: opts, Threads: p.d.cfg.Models.Threads})
	if err != nil {
		pl.Kill()
		return fmt.Errorf("load %s version %s: %w", v.Model, v.Version, err)
	}
	p.plugin, p.version = pl, v
	now := time.Now().UTC()
	p.d.log.Info("model serving", "pipeline", p.name, "model", v.Model, "version", v.Version, "pid", pl.Pid(),
		"warmup_ms", sdk.Millis(info.Warmup))
	p.d.setModel(p.cfg.Model, func(st *ModelState) {
		st.Version, st.State, st.Error, st.Task = v.Version, "serving", "", info.Task
		st.Description, st.Signature, st.InputShape, st.Labels, st.LoadedAt = info.Description, info.Signature, info.InputShape, info.Labels, &now
		st.Pipelines[p.name] = PipelineState{State: "serving", PID: pl.Pid(), Restarts: int(p.restartCount.Load()),
			WarmupMS: sdk.Millis(info.Warmup)}
	})
	return nil
}

func (p *pipeline) stopPlugin() {
	if p.plugin != nil {
		p.plugin.Kill()
		p.plugin = nil
	}
}

func (p *pipeline) record(ms float64) {
	p.latMu.Lock()
	defer p.latMu.Unlock()
	if len(p.lat) < latencyWindow {
		p.lat = append(p.lat, ms)
	} else {
		p.lat[p.latNext] = ms
		p.latNext = (p.latNext + 1) % latencyWindow
	}
}

func (p *pipeline) stats() PipelineStats {
	st := PipelineStats{Frames: p.frames.Load(), Results: p.results.Load(), Failed: p.failed.Load(),
		Skipped: p.skipped.Load(), Restarts: p.restartCount.Load(), Queued: len(p.queue)}
	p.latMu.Lock()
	lat := slices.Clone(p.lat)
	p.latMu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		st.P50MS = lat[len(lat)/2]
		st.P99MS = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return st
}
