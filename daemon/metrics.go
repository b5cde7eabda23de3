package daemon

import (
	"github.com/edgeinfer/edgeinfer/daemon/metrics"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// startMetrics serves /metrics, /healthz and /readyz on [http] listen
// (daemon/metrics), fed from the daemon's own state (snapshot), the events
// it publishes and its pipelines' results, and, with an outbox, the
// outbox's depth, bound and drops (read from it at each scrape). Without
// [http] listen it does nothing, and d.metrics stays nil (which takes
// every call and ignores it). stop closes the server. d.bus is made.
func (d *Daemon) startMetrics() (stop func(), err error) {
	listen := d.cfg.HTTP.Listen
	if listen == "" {
		return func() {}, nil
	}
	m := metrics.New(d.snapshot, d.log.With("component", "http"))
	if box := d.bus.Outbox(); box != nil {
		if err := m.Register(metrics.NewOutboxCollector(box, d.cfg.MQTT.Prefix)); err != nil {
			return nil, err
		}
	}
	srv, err := m.Listen(listen)
	if err != nil {
		return nil, err
	}
	d.metrics = m
	d.tel.OnEvent = m.ObserveEvent
	d.log.Info("metrics and health endpoints listening", "url", "http://"+srv.Addr(), "paths", "/metrics /healthz /readyz")
	return srv.Close, nil
}

// snapshot is what the metrics read at each scrape and /readyz: the
// running pipelines and sensors with their counters, the models' states
// and the broker connection.
func (d *Daemon) snapshot() metrics.Snapshot {
	var s metrics.Snapshot
	st := payload.Stats{Pipelines: map[string]payload.PipelineStats{}, Sensors: map[string]payload.SensorStats{}}
	d.mu.Lock()
	d.countStats(&st, d.sensors, d.pipelines)
	for name, run := range d.pipelines {
		s.Pipelines = append(s.Pipelines, metrics.Pipeline{Name: name, Model: run.cfg.Model, Stats: st.Pipelines[name]})
	}
	d.mu.Unlock()
	s.Sensors = st.Sensors
	for _, name := range d.mgr.Names() {
		if md, ok := d.mgr.Lookup(name); ok {
			s.Models = append(s.Models, md.State())
		}
	}
	s.MQTT = metrics.MQTT{Connected: d.bus.Connected(), Reconnects: d.bus.Reconnects()}
	return s
}

// countStats fills st with the counters of sensors and pipelines (for
// <prefix>/stats and the metrics); d.mu is held.
func (d *Daemon) countStats(st *payload.Stats, sensors map[string]*sensorRun, pipelines map[string]*pipeRun) {
	for name, p := range pipelines {
		ps := p.p.Stats()
		if p.feed != nil {
			cs := p.feed.Stats()
			ps.Crops = &cs
		}
		st.Pipelines[name] = ps
	}
	for name, s := range sensors {
		frames, bad, skipped := s.sink.Stats()
		st.Sensors[name] = payload.SensorStats{Frames: frames, BadInput: bad, Skipped: skipped}
	}
}

// observeResult hands a result to the metrics (its timings) and to Home
// Assistant's state (pipeline.Env.Result).
func (d *Daemon) observeResult(r payload.Result) {
	d.metrics.ObserveResult(r)
	d.haResult(r)
}
