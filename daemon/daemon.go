// Package daemon is edgeinferd: it connects to MQTT (or starts the embedded
// broker), runs the sensors, the pipelines and the model lifecycle, reloads
// its config on SIGHUP or when the file changes, answers commands, and
// shuts down cleanly. It is pure Go: models run in the plugin processes
// (plugins/), which are the only ones to link TensorFlow.
//
// The jobs are kept apart, each in a package of its own with its own tests:
//
//	daemon/repo       the model repository and its watch
//	daemon/serving    the model-version lifecycle: versions, processes, policies
//	daemon/router     sensors (and pipelines' detections) to pipelines: per-pipeline queues, input completion
//	daemon/crop       which upstream detections become crop frames, and their pixels
//	daemon/pipeline   the pipeline worker: frame in, result out
//	daemon/telemetry  events, model state, stats
//	daemon/outbox     results and events on disk, in order, while the broker is away
//	daemon/health     readiness, stuck pipelines and the status line systemd is told (service.go)
//	daemon/payload    the JSON payloads (imported by watch and the tests)
//
// This package wires them together and applies config changes (reload.go)
// and commands (commands.go).
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
	"github.com/edgeinfer/edgeinfer/daemon/bus"
	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/homeassistant"
	"github.com/edgeinfer/edgeinfer/daemon/metrics"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/pipeline"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/daemon/serving"
	"github.com/edgeinfer/edgeinfer/daemon/telemetry"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/plugins/sdk/confine"
)

// Daemon is one edgeinferd.
type Daemon struct {
	log    *slog.Logger
	start  time.Time
	reload chan struct{}

	bus     *bus.Bus
	broker  *broker.Broker // the embedded broker; nil with another
	tel     *telemetry.Publisher
	mgr     *serving.Manager
	watcher *repo.Watcher
	vet     *vetter // what the watcher vets versions with (vet.go); guarded by mu

	// mu guards the running config and what it made; reload.go changes
	// them, stats and commands read them.
	mu        sync.Mutex
	cfg       *config.Config
	sensors   map[string]*sensorRun
	pipelines map[string]*pipeRun

	// publishing counts results not yet acknowledged by the broker; their
	// frames finish when they are.
	publishing sync.WaitGroup

	// svc is what systemd is told (service.go).
	svc service

	// ha announces the pipelines to Home Assistant (ha.go); nil while
	// [homeassistant] discovery is off. It is set with mu held, and read
	// without (from the MQTT client's goroutines). haCfg, guarded by mu,
	// is the table it was made for.
	ha    atomic.Pointer[homeassistant.Announcer]
	haCfg config.HomeAssistant

	// metrics serves /metrics, /healthz and /readyz (metrics.go); nil
	// without [http] listen.
	metrics *metrics.Metrics
}

// sensorRun is a running sensor and the sink its frames go to.
type sensorRun struct {
	sink   *router.Sink
	cancel context.CancelFunc
	done   chan struct{}
	// unsubscribe ends the MQTT subscriptions the sensor made; written by
	// the sensor's goroutine, read once done is closed.
	unsubscribe []func()
}

// pipeRun is a running pipeline worker.
type pipeRun struct {
	p      *pipeline.Pipeline
	cfg    config.Pipeline
	feed   *router.Feed // its input when another pipeline feeds it (from); nil for a sensor's
	cancel context.CancelFunc
	done   chan struct{}
}

// New prepares a daemon for cfg; Run starts it.
func New(cfg *config.Config, log *slog.Logger) *Daemon {
	return &Daemon{cfg: cfg, log: log, reload: make(chan struct{}, 1),
		sensors: map[string]*sensorRun{}, pipelines: map[string]*pipeRun{},
		svc: service{modelChanged: make(chan struct{}, 1)}, vet: newVetter(cfg)}
}

// Reload asks the running daemon to read its config file again (SIGHUP).
func (d *Daemon) Reload() {
	select {
	case d.reload <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends, then shuts down: sensors stop, the frames in
// progress finish, "offline" is published, plugins stop. Frames that were
// waiting keep their inputs for the next start. It returns nil after a
// clean shutdown.
func (d *Daemon) Run(ctx context.Context) error {
	d.start = time.Now()
	cfg := d.cfg
	for _, w := range cfg.Warnings {
		d.log.Warn(w)
	}
	m := cfg.MQTT
	brokerURL := m.Broker
	password, err := m.ReadPassword()
	if err != nil {
		return err
	}
	username, caFile, certFile, keyFile := m.Username, m.CAFile, m.CertFile, m.KeyFile
	if m.Broker == "embedded" {
		e := m.Embedded
		b, err := broker.Start(broker.Options{Listen: m.Listen, TLSListen: e.TLSListen, CertFile: e.CertFile, KeyFile: e.KeyFile,
			ClientCAFile: e.ClientCAFile, Rules: cfg.BrokerRules(), Logger: d.log.With("component", "broker")})
		if err != nil {
			return err
		}
		defer b.Close()
		d.broker = b
		// The daemon connects on the broker's own loopback listener with
		// the identity the broker made for it.
		brokerURL = b.URL()
		username, password = b.Credentials().Username, b.Credentials().Password()
		caFile, certFile, keyFile = "", "", ""
		d.log.Info("embedded MQTT broker listening", "addr", b.Addr(), "tls_addr", b.TLSAddr())
	}
	d.tel = &telemetry.Publisher{Prefix: m.Prefix, Device: cfg.Device, Logger: d.log}
	box, err := d.openOutbox(cfg)
	if err != nil {
		return err
	}
	d.bus, err = bus.New(bus.Options{
		Broker: brokerURL, ClientID: m.ClientID, Username: username, Password: password,
		CAFile: caFile, CertFile: certFile, KeyFile: keyFile, Insecure: m.InsecureSkipVerify,
		Keepalive: m.Keepalive.Duration, ConnectTimeout: m.ConnectTimeout.Duration, QoS: byte(m.QoS),
		WillTopic: d.tel.Topic("status"), WillPayload: "offline",
		OnConnect: d.publishState,
		Logger:    d.log.With("component", "mqtt"),
		Outbox:    box,
	})
	if err != nil {
		return err
	}
	d.tel.Bus = d.bus
	cache, err := pluginCache(os.TempDir(), d.log)
	if err != nil {
		return err
	}
	defer os.RemoveAll(cache)
	confined := ConfinePlugins(cfg.Models.Confine, d.log)
	d.mgr = serving.New(serving.Config{
		PluginDir: cfg.PluginDir, CacheDir: cache, Settle: cfg.Models.Settle.Duration, Threads: cfg.Models.Threads,
		Start: func(binary string, access sdk.Access) (sdk.Process, error) {
			return sdk.Start(sdk.Options{Path: binary, Stderr: os.Stderr, Confine: confined, Access: access})
		},
		Publish: d.publishModel, Event: d.tel.Event, Logger: d.log.With("component", "serving"),
	})
	d.watcher = repo.NewWatcher(repo.WatchOptions{Repository: cfg.Models.Repository,
		Settle: cfg.Models.Settle.Duration, Rescan: cfg.Models.Rescan.Duration, Logger: d.log.With("component", "repo"),
		Vet: d.vet.check})
	stopMetrics, err := d.startMetrics()
	if err != nil {
		return err
	}
	defer stopMetrics()
	if err := d.bus.Connect(); err != nil {
		return err
	}

	bg, stopBG := context.WithCancel(context.Background())
	var background sync.WaitGroup
	defer func() { stopBG(); background.Wait() }()
	for _, run := range []func(context.Context){d.mgr.Run, d.versions, d.watchRepo} {
		background.Add(1)
		go func() { defer background.Done(); run(bg) }()
	}

	d.mu.Lock()
	d.apply(nil, cfg)
	d.mu.Unlock()
	d.metrics.SetPhase(metrics.Running)
	if err := d.subscribeCommands(bg); err != nil {
		d.log.Error("cannot subscribe to commands", "err", err)
	}
	d.tel.Event(payload.Event{Type: payload.EventStarted, Message: fmt.Sprintf("edgeinferd serving %d pipelines", len(cfg.Pipelines))})
	d.log.Info("edgeinferd started", "device", cfg.Device, "prefix", m.Prefix, "pipelines", len(cfg.Pipelines))

	statsTick := time.NewTicker(cfg.StatsInterval.Duration)
	defer statsTick.Stop()
	fileTick := time.NewTicker(time.Second)
	defer fileTick.Stop()
	// Under systemd: READY=1 once the models serve, WATCHDOG=1 from this
	// loop every half watchdog timeout while nothing is stuck.
	var watchdog <-chan time.Time
	if d.reporting() {
		d.checkReady()
		if d.svc.watchdog > 0 {
			d.warnWatchdog()
			t := time.NewTicker(d.svc.watchdog / 2)
			defer t.Stop()
			watchdog = t.C
			d.watchdogTick(time.Now())
		}
	}
	stamp := fileStamp(cfg.File())
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-watchdog:
			d.watchdogTick(time.Now())
		case <-d.svc.modelChanged:
			if d.reporting() {
				d.checkReady()
			}
		case <-statsTick.C:
			d.publishStats(nil, nil)
			if d.reporting() {
				d.statusTick(time.Now())
			}
		case <-d.reload:
			d.reloadConfig("SIGHUP")
			stamp = fileStamp(cfg.File())
			statsTick.Reset(d.statsInterval())
			if d.reporting() {
				d.checkReady() // the pipelines start-up waits for may have changed
			}
		case <-fileTick.C:
			if s := fileStamp(cfg.File()); s != stamp {
				stamp = s
				d.reloadConfig("the config file changed")
				statsTick.Reset(d.statsInterval())
				if d.reporting() {
					d.checkReady()
				}
			}
		}
	}
	stopBG() // no restarts or reloads while stopping
	if d.reporting() {
		d.notify("STOPPING=1", "STATUS=stopping: finishing the frames in the plugins, then stopping them")
	}
	d.shutdown()
	return nil
}

func (d *Daemon) statsInterval() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.StatsInterval.Duration
}

// versions hands each repository update to its model.
func (d *Daemon) versions(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-d.watcher.Updates():
			if !ok {
				return
			}
			if u.Err != nil {
				d.log.Error("model repository", "model", u.Model, "err", u.Err)
			}
			d.applyUpdate(u)
		}
	}
}

func (d *Daemon) watchRepo(ctx context.Context) {
	if err := d.watcher.Run(ctx); err != nil && ctx.Err() == nil {
		d.log.Error("model repository watch stopped", "err", err)
	}
}

// shutdown stops the sensors, lets the pipelines finish the frame each is
// on, keeps the waiting frames' inputs for the next start, then publishes
// the final state and disconnects.
func (d *Daemon) shutdown() {
	d.metrics.SetPhase(metrics.Stopping)
	d.log.Info("shutting down: stopping sensors")
	d.tel.Event(payload.Event{Type: payload.EventStopping, Message: "edgeinferd is shutting down"})
	d.mu.Lock()
	sensors, pipelines := maps.Clone(d.sensors), maps.Clone(d.pipelines)
	for name := range d.sensors {
		d.stopSensor(name)
	}
	for name := range d.pipelines {
		d.stopPipeline(name, router.ErrStopping)
	}
	d.mu.Unlock()
	if !waitTimeout(&d.publishing, 10*time.Second) {
		d.log.Warn("results still unacknowledged by the broker after 10s; their inputs are kept for the next start")
	}
	d.publishStats(sensors, pipelines)
	d.mgr.Close()
	d.tel.Status("offline")
	if err := d.bus.PublishWait(d.tel.Topic("status"), true, []byte("offline"), 5*time.Second); err != nil {
		d.log.Warn("could not publish offline status", "err", err)
	}
	d.bus.Close(time.Second)
	d.log.Info("edgeinferd stopped")
}

// publishState republishes everything retained; it runs after every
// (re)connection.
func (d *Daemon) publishState() {
	d.tel.Status("online")
	if ha := d.ha.Load(); ha != nil {
		ha.Republish()
	}
	if d.mgr == nil {
		return
	}
	for _, name := range d.mgr.Names() {
		if md, ok := d.mgr.Lookup(name); ok {
			d.publishModel(md.State())
		}
	}
}

func (d *Daemon) publishModel(st payload.ModelState) {
	d.tel.Model(st)
	d.modelChanged()
}

// publishStats publishes the stats of the running sensors and pipelines,
// or of those given (at shutdown, once they are stopped).
func (d *Daemon) publishStats(sensors map[string]*sensorRun, pipelines map[string]*pipeRun) {
	st := payload.Stats{Schema: payload.Schema, Time: time.Now().UTC(), Uptime: time.Since(d.start).Seconds(),
		Pipelines: map[string]payload.PipelineStats{}, Sensors: map[string]payload.SensorStats{}}
	d.mu.Lock()
	if pipelines == nil {
		sensors, pipelines = d.sensors, d.pipelines
	}
	d.countStats(&st, sensors, pipelines)
	d.mu.Unlock()
	if box := d.bus.Outbox(); box != nil {
		records, bytes := box.Depth()
		st.Outbox = &payload.OutboxStats{Records: records, Bytes: bytes, MaxBytes: box.MaxBytes(), Dropped: box.Dropped().Records}
	}
	d.tel.Stats(st)
}

// BadInput implements router.Reporter.
func (d *Daemon) BadInput(sensor, source string, err error) {
	d.log.Warn("bad input", "sensor", sensor, "source", source, "err", err)
	d.tel.Event(payload.Event{Type: payload.EventBadInput, Sensor: sensor, Source: source, Message: fmt.Sprintf("%s: %v", source, err)})
}

// Event implements router.Reporter.
func (d *Daemon) Event(sensor, kind, message string, attrs map[string]any) {
	d.log.Warn(message, "sensor", sensor, "event", kind)
	d.tel.Event(payload.Event{Type: kind, Sensor: sensor, Message: message, Attrs: attrs})
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

// fileStamp is what tells a changed config file: its size and time.
func fileStamp(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", st.Size(), st.ModTime().UnixNano())
}

// ConfinePlugins tells whether plugin processes are to be confined, for
// [models] confine (a restart-only setting): "required" always (a version
// whose process cannot be confined is then rejected, with the reason),
// "auto" when the kernel can (else it says why, once), "off" never.
// `edgeinferd -check` starts its plugins as the daemon would.
func ConfinePlugins(mode string, log *slog.Logger) bool {
	err := confine.Check()
	switch {
	case mode == config.ConfineOff:
		return false
	case err == nil:
		log.Info("plugin processes are confined with Landlock", "abi", confine.ABI())
		return true
	case mode == config.ConfineRequired:
		log.Error("plugin processes cannot be confined: every model version will be rejected ([models] confine = \"required\")", "err", err)
		return true
	default:
		log.Warn("plugin processes run unconfined: the kernel cannot confine them ([models] confine = \"auto\")", "err", err)
		return false
	}
}
