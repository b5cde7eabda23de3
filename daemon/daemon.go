// Package daemon is edgeinferd: it connects to MQTT (or starts the embedded
// broker), starts one plugin process per pipeline, runs the sensors and
// routes their frames to the pipelines, publishes results, events, model
// state and stats, and shuts down cleanly. It is pure Go: models run in the
// plugin processes (plugins/), which are the only ones to link TensorFlow.
//
// The way a frame travels: sensor -> sink (sink.go: lossless queue or live
// newest-wins slot per pipeline) -> pipeline worker (pipeline.go) -> plugin
// process over gRPC, pixels through shared memory (plugins/sdk) -> Result
// JSON -> MQTT.
package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
	"github.com/edgeinfer/edgeinfer/daemon/bus"
	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/sensors"
)

// Daemon is one edgeinferd.
type Daemon struct {
	cfg   *config.Config
	log   *slog.Logger
	start time.Time

	bus       *bus.Bus
	pipelines map[string]*pipeline
	sinks     map[string]*sensorSink

	modelsMu sync.Mutex
	models   map[string]*ModelState

	// publishing counts results not yet acknowledged by the broker; their
	// frames finish when they are.
	publishing sync.WaitGroup
}

// New prepares a daemon for cfg; Run starts it.
func New(cfg *config.Config, log *slog.Logger) *Daemon {
	return &Daemon{cfg: cfg, log: log, pipelines: map[string]*pipeline{}, sinks: map[string]*sensorSink{}, models: map[string]*ModelState{}}
}

func (d *Daemon) topic(parts ...string) string {
	t := d.cfg.MQTT.Prefix
	for _, p := range parts {
		t += "/" + p
	}
	return t
}

// Run serves until ctx ends, then shuts down: sensors stop, frames already
// taken are finished, "offline" is published, plugins stop. It returns nil
// after a clean shutdown.
func (d *Daemon) Run(ctx context.Context) error {
	d.start = time.Now()
	for _, w := range d.cfg.Warnings {
		d.log.Warn(w)
	}
	m := d.cfg.MQTT
	brokerURL := m.Broker
	if m.Broker == "embedded" {
		b, err := broker.Start(m.Listen, d.log.With("component", "broker"))
		if err != nil {
			return err
		}
		defer b.Close()
		brokerURL = b.URL()
		d.log.Info("embedded MQTT broker listening", "addr", b.Addr())
	}
	password := m.Password
	if m.PasswordFile != "" {
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return fmt.Errorf("mqtt.password_file: %w", err)
		}
		password = string(trimNewline(b))
	}
	var err error
	d.bus, err = bus.New(bus.Options{
		Broker: brokerURL, ClientID: m.ClientID, Username: m.Username, Password: password,
		CAFile: m.CAFile, CertFile: m.CertFile, KeyFile: m.KeyFile, Insecure: m.InsecureSkipVerify,
		Keepalive: m.Keepalive.Duration, ConnectTimeout: m.ConnectTimeout.Duration, QoS: byte(m.QoS),
		WillTopic: d.topic("status"), WillPayload: "offline",
		OnConnect: d.publishState,
		Logger:    d.log.With("component", "mqtt"),
	})
	if err != nil {
		return err
	}
	if err := d.bus.Connect(); err != nil {
		return err
	}

	// Pipelines first, so that sensors have somewhere to put frames.
	work, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	var workers sync.WaitGroup
	for name := range d.cfg.Sensors {
		d.sinks[name] = &sensorSink{d: d, name: name}
	}
	for _, name := range slices.Sorted(maps.Keys(d.cfg.Pipelines)) {
		p := newPipeline(d, name, d.cfg.Pipelines[name])
		d.pipelines[name] = p
		sink := d.sinks[p.cfg.Sensor]
		sink.pipelines = append(sink.pipelines, p)
		workers.Add(1)
		go func() { defer workers.Done(); p.run(work) }()
	}

	sensorCtx, stopSensors := context.WithCancel(ctx)
	defer stopSensors()
	var running sync.WaitGroup
	for _, name := range slices.Sorted(maps.Keys(d.cfg.Sensors)) {
		sink := d.sinks[name]
		if len(sink.pipelines) == 0 {
			continue
		}
		s, err := d.cfg.NewSensor(name, sensors.Env{
			Name: name, Prefix: m.Prefix, Logger: d.log.With("sensor", name), Subscribe: d.bus.Subscribe,
		})
		if err != nil {
			stopSensors()
			running.Wait()
			d.shutdown(&workers, stopWork)
			return err
		}
		running.Add(1)
		go func() {
			defer running.Done()
			d.runSensor(sensorCtx, name, s, sink)
		}()
	}
	d.event(Event{Type: EventStarted, Message: fmt.Sprintf("edgeinferd serving %d pipelines", len(d.pipelines))})
	d.log.Info("edgeinferd started", "device", d.cfg.Device, "prefix", m.Prefix, "pipelines", len(d.pipelines))

	statsTick := time.NewTicker(d.cfg.StatsInterval.Duration)
	defer statsTick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-statsTick.C:
			d.publishStats()
		}
	}

	d.log.Info("shutting down: stopping sensors")
	d.event(Event{Type: EventStopping, Message: "edgeinferd is shutting down"})
	stopSensors()
	running.Wait()
	for _, s := range d.sinks {
		s.close()
	}
	d.shutdown(&workers, stopWork)
	d.log.Info("edgeinferd stopped")
	return nil
}

// shutdown lets the pipelines finish the frames they hold, then publishes
// the final state and disconnects.
func (d *Daemon) shutdown(workers *sync.WaitGroup, stopWork context.CancelFunc) {
	for _, p := range d.pipelines {
		p.drain()
	}
	workers.Wait()
	stopWork()
	if !waitTimeout(&d.publishing, 10*time.Second) {
		d.log.Warn("results still unacknowledged by the broker after 10s; their inputs are kept for the next start")
	}
	d.publishStats()
	d.modelsMu.Lock()
	for _, st := range d.models {
		st.State = "stopped"
		for name, ps := range st.Pipelines {
			ps.State, ps.PID = "stopped", 0
			st.Pipelines[name] = ps
		}
	}
	d.modelsMu.Unlock()
	d.publishModels()
	if err := d.bus.PublishWait(d.topic("status"), true, []byte("offline"), 5*time.Second); err != nil {
		d.log.Warn("could not publish offline status", "err", err)
	}
	d.bus.Close(time.Second)
}

func (d *Daemon) runSensor(ctx context.Context, name string, s sensors.Sensor, sink *sensorSink) {
	d.log.Info("sensor started", "sensor", name, "kind", d.cfg.Sensors[name].Kind)
	err := s.Run(ctx, sink)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		d.log.Error("sensor stopped", "sensor", name, "err", err)
		d.event(Event{Type: EventSensorFailed, Sensor: name, Message: err.Error()})
	default:
		d.log.Info("sensor finished its input", "sensor", name)
	}
}

// publishState republishes everything retained; it runs after every
// (re)connection.
func (d *Daemon) publishState() {
	d.bus.Publish(d.topic("status"), true, []byte("online"))
	d.publishModels()
}

func (d *Daemon) publishModels() {
	d.modelsMu.Lock()
	defer d.modelsMu.Unlock()
	for name, st := range d.models {
		d.publishJSON(d.topic("models", name), true, st)
	}
}

// setModel updates the retained state of a model as one pipeline sees it.
func (d *Daemon) setModel(model string, update func(st *ModelState)) {
	d.modelsMu.Lock()
	defer d.modelsMu.Unlock()
	st, ok := d.models[model]
	if !ok {
		st = &ModelState{Schema: Schema, Model: model, Pipelines: map[string]PipelineState{}}
		d.models[model] = st
	}
	update(st)
	if d.bus != nil {
		d.publishJSON(d.topic("models", model), true, st)
	}
}

func (d *Daemon) event(e Event) {
	e.Schema, e.Time, e.Device = Schema, time.Now().UTC(), d.cfg.Device
	d.publishJSON(d.topic("events"), false, e)
}

func (d *Daemon) publishJSON(topic string, retain bool, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		d.log.Error("cannot encode payload", "topic", topic, "err", err)
		return
	}
	d.bus.Publish(topic, retain, b)
}

func (d *Daemon) publishStats() {
	st := Stats{Schema: Schema, Time: time.Now().UTC(), Uptime: time.Since(d.start).Seconds(),
		Pipelines: map[string]PipelineStats{}, Sensors: map[string]SensorStats{}}
	for name, p := range d.pipelines {
		st.Pipelines[name] = p.stats()
	}
	for name, s := range d.sinks {
		st.Sensors[name] = s.stats()
	}
	d.publishJSON(d.topic("stats"), true, st)
}

// waitTimeout waits for wg, at most d; it reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
