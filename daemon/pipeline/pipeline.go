// Package pipeline is the pipeline worker: it takes one frame at a time from
// its queue (daemon/router), runs it on the process that serves its model
// now (a lease from daemon/serving, so a version switch happens between
// frames), and publishes the result, after the images the task made for
// dashboards (sdk.Result.Images, each on <prefix>/<pipeline>/<name>). The
// frame's input is released only once the broker has the result, or, with
// an outbox, once the result is on disk in it (OutboxPublisher).
//
// A pipeline can feed others ([pipelines.<name>] from): after its result
// is handed to the broker, each router.Feed it has cuts the crops it wants
// out of the frame and queues them for its pipeline; the frame's input
// waits for their results too.
//
// A process that dies or hangs (no answer within the pipeline's timeout)
// is restarted by the lifecycle and the frame tried again, up to retries
// times. A pipeline whose model cannot serve waits, and its frames wait in
// its queue; its siblings on the same sensor are not held up.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/daemon/serving"
	"github.com/edgeinfer/edgeinfer/daemon/snapshot"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/sensors"

	"github.com/edgeinfer/edgeinfer/daemon/track"
)

// Publisher sends a result to the broker and calls then once the broker
// has it (or it failed).
type Publisher interface {
	PublishThen(topic string, retain bool, payload []byte, then func(error))
}

// OutboxPublisher is a Publisher with an outbox (daemon/bus with
// daemon/outbox): PublishResult calls then once the result is on disk in
// the outbox, before the broker has it. A lossless frame's result waits
// there for room until ctx ends (the pipeline waits with it); a live one
// is dropped when there is none.
type OutboxPublisher interface {
	PublishResult(ctx context.Context, topic string, retain bool, payload []byte, lossless bool, then func(error))
}

// Env is what a pipeline needs from the daemon.
type Env struct {
	Device     string
	Topic      string // <prefix>/<pipeline>/result
	Retain     bool
	Bus        Publisher
	Event      func(payload.Event)
	Logger     *slog.Logger
	LogResults bool
	// Publishing counts results not yet acknowledged by the broker.
	Publishing *sync.WaitGroup
	// Result, when set, sees each result as it is handed to the broker
	// (the metrics' stage latencies); it must not block.
	Result func(payload.Result)
}

// Settings are the pipeline's [pipelines.<name>] settings the worker uses.
type Settings struct {
	Timeout time.Duration // one inference; longer kills the plugin process
	Retries int           // tries again of a frame whose process died
	Tracker *track.Config // track a detector's objects across frames; nil: no tracking
	// Snapshot takes some results for an annotated JPEG; nil: none.
	Snapshot *snapshot.Snapshots
}

// Pipeline is one pipeline's worker.
type Pipeline struct {
	name  string
	env   Env
	queue *router.Queue

	mu    sync.Mutex // guards set, model, moved and feeds, changed by a config reload
	set   Settings
	model *serving.Model
	feeds []*router.Feed // the inputs of the pipelines fed by this one
	// moved ends when a reload gives the pipeline another model: a frame
	// waiting for the old one to serve goes to wait for the new one.
	moved context.Context
	move  context.CancelFunc

	// tracker lives as long as the pipeline and its tracker config, across
	// model versions and plugin restarts. Only the worker goroutine uses it.
	tracker    *track.Tracker
	trackerCfg track.Config
	// alerting are the labels the last result's alerts named (segment's
	// share alerts); only the worker goroutine uses it.
	alerting map[string]bool

	// dispatched is when the frame now in the plugin was sent to it (Unix
	// nanoseconds); 0 while none is.
	dispatched atomic.Int64

	frames, results, failed, restarts atomic.Uint64
	latMu                             sync.Mutex
	lat                               []float64 // recent totals (ms), a ring
	latNext                           int
}

const latencyWindow = 1024

// New makes the worker of the pipeline called name.
func New(name string, set Settings, queue *router.Queue, model *serving.Model, env Env) *Pipeline {
	moved, move := context.WithCancel(context.Background())
	return &Pipeline{name: name, env: env, set: set, queue: queue, model: model, moved: moved, move: move}
}

// Update changes the pipeline's settings and model (config reload). A frame
// already sent to a plugin finishes with the old ones; a frame still
// waiting for its model to serve waits for the new model instead (the old
// one may never serve this pipeline again: it no longer has its options,
// it may be broken, or no pipeline may use it any more).
func (p *Pipeline) Update(set Settings, model *serving.Model) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if model != p.model {
		p.move()
		p.moved, p.move = context.WithCancel(context.Background())
	}
	p.set, p.model = set, model
}

// SetFeeds sets the inputs of the pipelines this one feeds (config
// reload); the frame in progress goes to those set when its result came.
func (p *Pipeline) SetFeeds(feeds []*router.Feed) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.feeds = feeds
}

func (p *Pipeline) current() (Settings, *serving.Model, context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.set, p.model, p.moved
}

// Name is the pipeline's name.
func (p *Pipeline) Name() string { return p.name }

// Queue is the pipeline's input.
func (p *Pipeline) Queue() *router.Queue { return p.queue }

// Run processes frames until ctx ends. The frame in progress is finished;
// frames still queued are left to the caller (Queue.Close keeps their
// inputs for another try).
func (p *Pipeline) Run(ctx context.Context) {
	for {
		j, err := p.queue.Next(ctx)
		if err != nil {
			return
		}
		p.process(ctx, j)
	}
}

// process runs one frame and publishes its result or the failure.
func (p *Pipeline) process(ctx context.Context, j *router.Job) {
	p.frames.Add(1)
	f := j.Frame
	rgb, err := j.Pixels()
	if err != nil {
		_, model, _ := p.current()
		p.fail(j, model, err)
		return
	}
	res, model, lease, started, err := p.infer(ctx, sdk.Frame{
		Pipeline: p.name, Seq: f.Seq, Sensor: f.Sensor, Source: f.Source, Time: f.Time,
		Width: f.Width, Height: f.Height, RGB: rgb,
	})
	finished := time.Now()
	if lease == nil && err != nil { // stopping before a version served it: the sensor keeps the input
		j.Done(router.ErrStopping)
		return
	}
	if err != nil {
		p.fail(j, model, err)
		return
	}
	set, _, _ := p.current()
	if res.Output, err = p.track(set, f.Time, res.Output); err != nil {
		p.fail(j, model, err)
		return
	}
	p.alerts(f.Source, res.Output)
	t := res.Timings
	inside := t.Preprocess + t.Inference + t.Postprocess
	v := lease.Version()
	r := payload.Result{
		Schema: payload.Schema, Device: p.env.Device, Pipeline: p.name, Sensor: f.Sensor, Seq: f.Seq, Source: f.Source,
		CapturedAt: f.Time.UTC(), Model: payload.ModelRef{Name: v.Model, Version: v.Version, PID: lease.Process().Pid()},
		Task: v.Manifest.Task, Width: f.Width, Height: f.Height, Output: res.Output, Origin: j.Origin,
		Timings: payload.Timings{
			Queue: sdk.Millis(started.Sub(j.Enqueued)), Transfer: sdk.Millis(max(finished.Sub(started)-inside, 0)),
			Preprocess: sdk.Millis(t.Preprocess), Inference: sdk.Millis(t.Inference),
			Postprocess: sdk.Millis(t.Postprocess), Total: sdk.Millis(finished.Sub(j.Enqueued)),
		},
	}
	b, err := json.Marshal(r)
	if err != nil {
		p.fail(j, model, fmt.Errorf("encode result: %w", err))
		return
	}
	names := slices.Sorted(maps.Keys(res.Images))
	for _, name := range names {
		if !imageName(name) {
			p.fail(j, model, fmt.Errorf("the plugin made an image named %q: want lower case letters, digits and _, not \"result\"", name))
			return
		}
	}
	for _, name := range names {
		p.env.Publishing.Add(1)
		topic := path.Dir(p.env.Topic) + "/" + name
		p.publish(ctx, j, topic, res.Images[name], func(err error) {
			defer p.env.Publishing.Done()
			if err != nil {
				p.env.Logger.Warn("image not published", "topic", topic, "err", err)
			}
		})
	}
	// The pipelines fed by this one hold the frame from before the result
	// can be acknowledged until their crops are queued, and each crop then
	// holds it until its own result is at the broker.
	p.mu.Lock()
	feeds := p.feeds
	p.mu.Unlock()
	var release func(error)
	if len(feeds) > 0 {
		release = j.Hold()
	}
	// The result is counted before it is published: once the broker has
	// it the frame may be finished, and whoever waits for that finds it
	// in the statistics and metrics.
	p.results.Add(1)
	p.record(r.Timings.Total)
	if p.env.Result != nil {
		p.env.Result(r)
	}
	// The frame is finished (its file moved to done/, its MQTT message
	// acknowledged) only once the broker has the result, or the outbox has
	// it on disk, so a crash in between loses nothing: the input is
	// processed again.
	p.env.Publishing.Add(1)
	p.publish(ctx, j, p.env.Topic, b, func(err error) {
		defer p.env.Publishing.Done()
		if err != nil {
			j.Done(fmt.Errorf("result not published: %v: %w", err, sensors.ErrUnfinished))
			return
		}
		j.Done(nil)
	})
	if set.Snapshot != nil {
		set.Snapshot.Offer(finished, r.Task, res.Output, f.Width, f.Height, rgb)
	}
	if p.env.LogResults {
		p.env.Logger.Info("result", "source", f.Source, "version", v.Version, "output", string(res.Output), "total_ms", r.Timings.Total)
	}
	for _, fd := range feeds {
		fd.Send(ctx, p.name, j, rgb, res.Output)
	}
	if release != nil {
		release(nil)
	}
}

// publish hands a result or one of its images to the bus: to its outbox
// if it has one (where a lossless frame's result may wait for room), else
// straight to the broker.
func (p *Pipeline) publish(ctx context.Context, j *router.Job, topic string, body []byte, then func(error)) {
	if ob, ok := p.env.Bus.(OutboxPublisher); ok {
		ob.PublishResult(ctx, topic, p.env.Retain, body, !j.Live(), then)
		return
	}
	p.env.Bus.PublishThen(topic, p.env.Retain, body, then)
}

// imageName reports whether name can be the last level of an image's
// topic: lower case letters, digits and _, and not the result's.
func imageName(name string) bool {
	if name == "" || name == "result" {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// track gives the detections of a result their track ids and publishes
// the objects that entered or left, when the pipeline tracks. A new tracker
// config starts new tracks.
func (p *Pipeline) track(set Settings, at time.Time, out json.RawMessage) (json.RawMessage, error) {
	if set.Tracker == nil {
		p.tracker = nil
		return out, nil
	}
	if p.tracker == nil || p.trackerCfg != *set.Tracker {
		p.tracker, p.trackerCfg = track.New(*set.Tracker), *set.Tracker
	}
	out, changes, err := p.tracker.Apply(at, out)
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		typ := payload.EventObjectLeft
		if c.Entered {
			typ = payload.EventObjectEntered
		}
		o := c.Object
		p.env.Event(payload.Event{Type: typ, Pipeline: p.name, Message: fmt.Sprintf("%s #%d %s", o.Label, o.ID, map[bool]string{true: "entered", false: "left"}[c.Entered]),
			Attrs: map[string]any{"track_id": o.ID, "label": o.Label, "class": o.Class, "first_seen": o.FirstSeen.UTC(), "last_seen": o.LastSeen.UTC(),
				"best_score": o.BestScore, "box": o.Box}})
	}
	return out, nil
}

// alerts turns the "alerts" of a result ([{label, share, threshold}], as
// the segment plugin gives them while a class covers more of the frame
// than its threshold) into events when they change: alert_raised when a
// label appears, alert_cleared when it goes. A result without "alerts"
// changes nothing.
func (p *Pipeline) alerts(source string, out json.RawMessage) {
	var res struct {
		Alerts *[]struct {
			Label     string  `json:"label"`
			Share     float64 `json:"share"`
			Threshold float64 `json:"threshold"`
		} `json:"alerts"`
		Classes []struct {
			Label string  `json:"label"`
			Share float64 `json:"share"`
		} `json:"classes"`
	}
	if json.Unmarshal(out, &res) != nil || res.Alerts == nil {
		return
	}
	now := map[string]bool{}
	for _, a := range *res.Alerts {
		now[a.Label] = true
		if !p.alerting[a.Label] {
			p.env.Event(payload.Event{Type: payload.EventAlertRaised, Pipeline: p.name, Source: source,
				Message: fmt.Sprintf("%s covers %.1f%% of the frame (threshold %.1f%%)", a.Label, 100*a.Share, 100*a.Threshold),
				Attrs:   map[string]any{"label": a.Label, "share": a.Share, "threshold": a.Threshold}})
		}
	}
	for _, label := range slices.Sorted(maps.Keys(p.alerting)) {
		if now[label] {
			continue
		}
		share := 0.0
		for _, c := range res.Classes {
			if c.Label == label {
				share = c.Share
			}
		}
		p.env.Event(payload.Event{Type: payload.EventAlertCleared, Pipeline: p.name, Source: source,
			Message: fmt.Sprintf("%s covers %.1f%% of the frame, under its threshold again", label, 100*share),
			Attrs:   map[string]any{"label": label, "share": share}})
	}
	p.alerting = now
}

// fail publishes a frame's failure and finishes it.
func (p *Pipeline) fail(j *router.Job, model *serving.Model, err error) {
	f := j.Frame
	p.failed.Add(1)
	ev := payload.Event{Type: payload.EventInferenceFailed, Pipeline: p.name, Sensor: f.Sensor, Model: model.Name(), Source: f.Source,
		Message: fmt.Sprintf("%s: %v", f.Source, err), Attrs: map[string]any{"seq": f.Seq}}
	if j.Origin != nil {
		ev.Attrs["origin"] = j.Origin
	}
	if errors.Is(err, sdk.ErrBadFrame) {
		ev.Type = payload.EventBadInput
	}
	p.env.Logger.Warn("frame failed", "source", f.Source, "err", err)
	p.env.Event(ev)
	j.Done(err)
}

// infer runs a frame on the serving process. A process that died or hung
// is restarted by the lifecycle and the frame tried again, up to Retries
// times (a frame that kills the plugin every time is given up, not tried
// forever). started is when the frame went to the plugin the last time.
//
// Only the wait for a serving version ends with ctx: a frame already sent
// to the plugin is finished (cancelling it would kill the process, which
// other pipelines share). Each try takes the pipeline's settings and model
// as they are then (a reload may have changed them); model is the one that
// ran the frame.
func (p *Pipeline) infer(ctx context.Context, f sdk.Frame) (res sdk.Result, model *serving.Model, lease *serving.Lease, started time.Time, err error) {
	var set Settings
	for attempt := 0; ; attempt++ {
		set, model, lease, err = p.acquire(ctx)
		if err != nil {
			return res, model, nil, started, err
		}
		started = time.Now()
		ictx, cancel := context.WithTimeout(context.Background(), set.Timeout)
		p.dispatched.Store(started.UnixNano())
		res, err = lease.Process().Infer(ictx, f)
		p.dispatched.Store(0)
		cancel()
		lease.Release(err)
		if !errors.Is(err, sdk.ErrPluginExited) || ctx.Err() != nil {
			return res, model, lease, started, err
		}
		p.restarts.Add(1)
		if errors.Is(err, sdk.ErrHung) {
			err = fmt.Errorf("no answer within %s (pipelines.%s.timeout): %w", set.Timeout, p.name, err)
		}
		if attempt >= set.Retries {
			return res, model, lease, started, fmt.Errorf("the plugin died %d times on this frame; giving up on it: %w", attempt+1, err)
		}
		p.env.Logger.Warn("plugin died during a frame; trying it again", "seq", f.Seq, "attempt", attempt+1, "err", err)
	}
}

// Dispatched returns when the frame now in the plugin was sent to it, and
// false while no frame is (the pipeline is idle, or its frame waits for its
// model to serve). Each try of a frame counts from its own start. The daemon
// calls a pipeline whose frame stays far longer than its timeout stuck.
func (p *Pipeline) Dispatched() (time.Time, bool) {
	ns := p.dispatched.Load()
	if ns == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// Command hands a command to the task serving the pipeline (sdk.Commander:
// enrol an identity, name a cluster) and returns what it did. It waits at
// most the pipeline's timeout for the model to serve, and for the answer.
func (p *Pipeline) Command(ctx context.Context, command json.RawMessage) (string, error) {
	set, _, _ := p.current()
	ctx, cancel := context.WithTimeout(ctx, set.Timeout)
	defer cancel()
	_, _, lease, err := p.acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("pipeline %s: its model does not serve: %w", p.name, err)
	}
	msg, err := lease.Process().Command(ctx, p.name, command)
	lease.Release(err)
	if errors.Is(err, sdk.ErrNoCommands) {
		return "", fmt.Errorf("pipeline %s: its task (%s) takes no commands", p.name, lease.Version().Manifest.Task)
	}
	return msg, err
}

// acquire waits until the pipeline's model serves it. If a reload moves the
// pipeline to another model meanwhile, it waits for that one instead.
func (p *Pipeline) acquire(ctx context.Context) (Settings, *serving.Model, *serving.Lease, error) {
	for {
		set, model, moved := p.current()
		actx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(moved, cancel)
		lease, err := model.Acquire(actx, p.name)
		stop()
		cancel()
		if err != nil && ctx.Err() == nil && moved.Err() != nil {
			continue // moved to another model while waiting
		}
		return set, model, lease, err
	}
}

func (p *Pipeline) record(ms float64) {
	p.latMu.Lock()
	defer p.latMu.Unlock()
	if len(p.lat) < latencyWindow {
		p.lat = append(p.lat, ms)
	} else {
		p.lat[p.latNext] = ms
		p.latNext = (p.latNext + 1) % latencyWindow
	}
}

// Stats counts since the pipeline started.
func (p *Pipeline) Stats() payload.PipelineStats {
	st := payload.PipelineStats{Frames: p.frames.Load(), Results: p.results.Load(), Failed: p.failed.Load(),
		Skipped: p.queue.Skipped(), Restarts: p.restarts.Load(), Queued: p.queue.Len()}
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
