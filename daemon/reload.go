package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/pipeline"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/daemon/serving"
	"github.com/edgeinfer/edgeinfer/sensors"
)

// reloadConfig reads the config file again and applies what changed. An
// invalid file, or one that changes a setting only a restart can change,
// is refused with a config_rejected event; the running config stays.
func (d *Daemon) reloadConfig(why string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.cfg
	next, err := config.Load(old.File())
	if err == nil {
		if ch := config.Diff(old, next); len(ch.Restart) > 0 {
			err = fmt.Errorf("%s: %s changed: edgeinferd must be restarted for that; nothing of the new config was applied", old.File(), strings.Join(ch.Restart, ", "))
		}
	}
	if err != nil {
		d.log.Error("config reload refused", "why", why, "err", err)
		d.tel.Event(payload.Event{Type: payload.EventConfigRejected, Message: err.Error()})
		return err
	}
	ch := config.Diff(old, next)
	for _, w := range next.Warnings {
		d.log.Warn(w)
	}
	d.apply(old, next)
	msg := fmt.Sprintf("%s reloaded (%s)", next.File(), why)
	if ch.Empty() {
		msg += ": nothing changed"
	} else {
		msg += ": " + describe(ch)
	}
	if access := d.reloadBrokerAccess(next, slices.Contains(ch.Other, "mqtt.embedded.access")); access != "" {
		msg += "; " + access
	}
	d.log.Info(msg)
	d.tel.Event(payload.Event{Type: payload.EventConfigReloaded, Message: msg, Attrs: map[string]any{
		"sensors": ch.Sensors, "pipelines": ch.Pipelines, "serving": ch.Serving, "other": ch.Other}})
	return nil
}

// reloadBrokerAccess gives the embedded broker the users and ACL files as
// the reloaded config's check read them (changed or not, as Mosquitto
// reads them again on SIGHUP) and says what it did; "" without the
// embedded broker, or when it has no users file and had none (changed:
// [mqtt.embedded]'s access settings changed).
func (d *Daemon) reloadBrokerAccess(cfg *config.Config, changed bool) string {
	if d.broker == nil || cfg.MQTT.Embedded.UsersFile == "" && !changed {
		return ""
	}
	n := d.broker.SetRules(cfg.BrokerRules())
	return fmt.Sprintf("embedded broker access read again, %d clients disconnected", n)
}

func describe(ch config.Changes) string {
	var parts []string
	for _, x := range []struct {
		what string
		dl   config.Delta
	}{{"sensors", ch.Sensors}, {"pipelines", ch.Pipelines}} {
		for _, y := range []struct {
			how   string
			names []string
		}{{"added", x.dl.Added}, {"removed", x.dl.Removed}, {"changed", x.dl.Changed}} {
			if len(y.names) > 0 {
				parts = append(parts, fmt.Sprintf("%s %s: %s", x.what, y.how, strings.Join(y.names, ", ")))
			}
		}
	}
	if len(ch.Serving) > 0 {
		parts = append(parts, "serving changed: "+strings.Join(ch.Serving, ", "))
	}
	if len(ch.Other) > 0 {
		parts = append(parts, "changed: "+strings.Join(ch.Other, ", "))
	}
	return strings.Join(parts, "; ")
}

// apply makes the running daemon match next (old is nil at start). What
// did not change is not touched: its sensors keep reading, its pipelines'
// processes keep serving. Pipelines whose settings changed are updated in
// place between two frames; their frames waiting stay. d.mu is held.
func (d *Daemon) apply(old, next *config.Config) {
	var ch config.Changes
	if old == nil {
		ch.Sensors.Added = slices.Sorted(maps.Keys(next.Sensors))
		ch.Pipelines.Added = slices.Sorted(maps.Keys(next.Pipelines))
	} else {
		ch = config.Diff(old, next)
	}
	d.cfg = next

	for _, name := range ch.Pipelines.Removed {
		d.stopPipeline(name, nil)
		if ha := d.ha.Load(); ha != nil {
			ha.Forget(name)
		}
	}
	for _, name := range ch.Sensors.Removed {
		run := d.sensors[name]
		d.stopSensor(name)
		// A removed sensor's subscriptions go with it. (At shutdown they
		// stay, so that the broker keeps what comes meanwhile for the next
		// start.)
		for _, unsubscribe := range run.unsubscribe {
			unsubscribe()
		}
	}
	for _, name := range ch.Sensors.Added {
		d.sensors[name] = &sensorRun{sink: router.NewSink(name, d)}
	}
	for _, name := range ch.Pipelines.Added {
		pc := next.Pipelines[name]
		q := router.NewQueue(pc.Queue)
		set := settingsOf(pc)
		set.Snapshot = d.snapshots(name, pc)
		p := pipeline.New(name, set, q, d.mgr.Model(pc.Model), pipeline.Env{
			Device: next.Device, Topic: d.tel.Topic(name, "result"), Retain: next.MQTT.RetainResults, Bus: d.bus,
			Event: d.tel.Event, Logger: d.log.With("pipeline", name), LogResults: next.Log.Results, Publishing: &d.publishing,
			Result: d.observeResult,
		})
		ctx, cancel := context.WithCancel(context.Background())
		run := &pipeRun{p: p, cfg: pc, cancel: cancel, done: make(chan struct{})}
		d.setFeed(run)
		d.pipelines[name] = run
		go func() { defer close(run.done); p.Run(ctx) }()
	}
	for _, name := range ch.Pipelines.Changed {
		run, pc := d.pipelines[name], next.Pipelines[name]
		run.p.Queue().SetHot(pc.Queue)
		set := settingsOf(pc)
		set.Snapshot = d.snapshots(name, pc)
		run.p.Update(set, d.mgr.Model(pc.Model))
		run.cfg = pc
		d.setFeed(run)
	}

	// The models: each gets its serving settings and its pipelines' options.
	used := next.ModelPipelines()
	for _, model := range slices.Sorted(maps.Keys(used)) {
		s := next.Serving(model)
		md := d.mgr.Model(model)
		md.SetSettings(serving.Settings{Version: s.Version, Policy: s.Policy, LoadTimeout: s.LoadTimeout.Duration, Tolerance: s.Tolerance})
		md.SetPipelines(used[model])
	}
	for _, model := range d.mgr.Names() {
		if used[model] == nil {
			d.mgr.Remove(model)
		}
	}
	if old != nil {
		d.revet(next)
	}
	d.watcher.SetModels(slices.Sorted(maps.Keys(used)))

	// Each sensor feeds the queues of its pipelines, each pipeline the
	// feeds of the pipelines that take its detections.
	queues := map[string][]*router.Queue{}
	feeds := map[string][]*router.Feed{}
	for _, name := range slices.Sorted(maps.Keys(next.Pipelines)) {
		run := d.pipelines[name]
		if run.feed != nil {
			feeds[run.cfg.From] = append(feeds[run.cfg.From], run.feed)
			continue
		}
		queues[run.cfg.Sensor] = append(queues[run.cfg.Sensor], run.p.Queue())
	}
	for name, s := range d.sensors {
		s.sink.SetQueues(queues[name])
	}
	d.announce(next)
	for name, run := range d.pipelines {
		run.p.SetFeeds(feeds[name])
	}
	for _, name := range ch.Sensors.Changed {
		d.restartSensor(name)
	}
	for _, name := range ch.Sensors.Added {
		d.startSensor(name)
	}
}

// setFeed gives a pipeline fed by another (from) its input, with its crop
// settings, and takes it from one that no longer is: crops already queued
// stay, those refused later owe the upstream nothing. apply then hands the
// feed to its upstream pipeline. d.mu is held.
func (d *Daemon) setFeed(run *pipeRun) {
	switch pc := run.cfg; {
	case pc.From == "" && run.feed != nil:
		run.feed.Close(nil)
		run.feed = nil
	case pc.From == "":
	case run.feed == nil:
		run.feed = router.NewFeed(run.p.Name(), run.p.Queue(), config.CropConfig(pc.Crop), d.tel.Event)
	default:
		run.feed.SetConfig(config.CropConfig(pc.Crop))
	}
}

func settingsOf(pc config.Pipeline) pipeline.Settings {
	s := pipeline.Settings{Timeout: pc.Timeout.Duration, Retries: pc.Retries}
	if pc.Tracker != nil {
		tc := config.TrackConfig(pc.Tracker)
		s.Tracker = &tc
	}
	return s
}

// startSensor builds the sensor called name from the running config and
// runs it into its sink.
func (d *Daemon) startSensor(name string) {
	run := d.sensors[name]
	subscribe := func(topic string, handler func(topic string, payload []byte, ack func())) error {
		unsubscribe, err := d.bus.Subscribe(topic, handler)
		run.unsubscribe = append(run.unsubscribe, unsubscribe)
		return err
	}
	s, err := d.cfg.NewSensor(name, sensors.Env{
		Name: name, Prefix: d.cfg.MQTT.Prefix, Logger: d.log.With("sensor", name), Subscribe: subscribe,
	})
	if err != nil {
		d.log.Error("sensor not started", "sensor", name, "err", err)
		d.tel.Event(payload.Event{Type: payload.EventSensorFailed, Sensor: name, Message: err.Error()})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	run.cancel, run.done = cancel, make(chan struct{})
	kind := d.cfg.Sensors[name].Kind
	go func() {
		defer close(run.done)
		d.log.Info("sensor started", "sensor", name, "kind", kind)
		err := s.Run(ctx, run.sink)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			d.log.Error("sensor stopped", "sensor", name, "err", err)
			d.tel.Event(payload.Event{Type: payload.EventSensorFailed, Sensor: name, Message: err.Error()})
		default:
			d.log.Info("sensor finished its input", "sensor", name)
		}
	}()
}

// stopSensor stops the sensor called name and refuses its frames.
func (d *Daemon) stopSensor(name string) {
	run, ok := d.sensors[name]
	if !ok {
		return
	}
	run.sink.Close()
	if run.cancel != nil {
		run.cancel()
		<-run.done
	}
	delete(d.sensors, name)
}

// restartSensor stops a sensor whose settings changed and starts it again
// once the frames it handed over are finished, so that no input is read
// twice. Its pipelines keep their queues.
func (d *Daemon) restartSensor(name string) {
	run := d.sensors[name]
	if run.cancel != nil {
		run.cancel()
		<-run.done
		run.cancel = nil
	}
	go func() {
		run.sink.Wait()
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.sensors[name] == run {
			d.startSensor(name)
		}
	}()
}

// stopPipeline stops the pipeline called name after the frame it is on.
// Its waiting frames finish with err: ErrStopping keeps their inputs for
// another try (shutdown), nil lets them go (the pipeline was removed).
func (d *Daemon) stopPipeline(name string, err error) {
	run, ok := d.pipelines[name]
	if !ok {
		return
	}
	if s, ok := d.sensors[run.cfg.Sensor]; ok {
		s.sink.SetQueues(slices.DeleteFunc(s.sink.Queues(), func(q *router.Queue) bool { return q == run.p.Queue() }))
	}
	if run.feed != nil {
		run.feed.Close(err) // its upstream lets go of it at the end of apply
	}
	run.cancel()
	<-run.done
	run.p.Queue().Close(err)
	delete(d.pipelines, name)
}
