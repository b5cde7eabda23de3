// Package serving is the model-version lifecycle of edgeinferd: which
// version of each model serves, and the plugin processes that run them. It
// follows TF Serving's AspiredVersionsManager in keeping apart the policy
// (policy.go: which version should serve, pure) and the loading harness
// (model.go: states and processes), and Triton's model lifecycle in giving
// every version a state and a reason. Unlike either, a version serves only
// after its golden samples are reproduced, and each version is a process of
// its own, so nothing of an old version lingers in a new one.
//
// A version goes loading -> validating -> serving -> draining -> retired,
// or to failed (rejected: not tried again until its files change). One
// process serves every pipeline of a model version; the pipelines switch
// at a frame boundary: each frame takes a Lease on the serving process, and
// a replaced process stops once its last lease is released.
//
// The package knows plugins only through sdk.Process, so its tests run
// with sdk.NewFake and no TensorFlow.
package serving

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

// Config is what the lifecycle needs from the daemon.
type Config struct {
	PluginDir string // edgeinfer-<task> binaries
	// CacheDir receives a copy of each plugin binary before it runs.
	CacheDir string
	// Settle is how long a changed plugin binary must stay unchanged
	// before it is taken.
	Settle  time.Duration
	Threads int // TensorFlow intra-op threads per process
	// Start starts a plugin process (sdk.Start; sdk.NewFake in tests) that
	// needs access (the version and the paths its pipelines' options name)
	// if it is confined. An error wrapping sdk.ErrCannotConfine rejects the
	// version; any other, the binary.
	Start func(binary string, access sdk.Access) (sdk.Process, error)
	// Publish receives each model's state after every change; it must not
	// block.
	Publish func(payload.ModelState)
	// Event publishes an event; it must not block.
	Event  func(payload.Event)
	Logger *slog.Logger
	// LoadNice is the niceness of a process while it loads and validates
	// (default 10); it goes to 0 when the process serves.
	LoadNice int
	// MinBackoff and MaxBackoff bound the wait between restarts of a
	// process that keeps failing (default 1s and 30s).
	MinBackoff, MaxBackoff time.Duration
	// Poll is how often plugin binaries and idle processes are checked
	// (default 1s).
	Poll time.Duration
}

// Manager holds the lifecycle of every model in use.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	bins *binaries

	mu     sync.Mutex
	models map[string]*Model

	// stopping counts processes being stopped gracefully in the background
	// (Model.stop); Close waits until there are none (stopped).
	stopMu   sync.Mutex
	stopping int
	stopped  *sync.Cond // on stopMu
}

// New makes a manager; Run polls plugin binaries and idle processes.
func New(cfg Config) *Manager {
	if cfg.LoadNice == 0 {
		cfg.LoadNice = 10
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	if cfg.Settle == 0 {
		cfg.Settle = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, bins: newBinaries(cfg.PluginDir, cfg.CacheDir, cfg.Settle), models: map[string]*Model{}}
	m.stopped = sync.NewCond(&m.stopMu)
	return m
}

func (m *Manager) event(e payload.Event) { m.cfg.Event(e) }

// Model returns the lifecycle of the model called name, made on first use.
func (m *Manager) Model(name string) *Model {
	m.mu.Lock()
	defer m.mu.Unlock()
	md, ok := m.models[name]
	if !ok {
		md = newModel(m, name)
		m.models[name] = md
	}
	return md
}

// Lookup returns the model called name if it is in use.
func (m *Manager) Lookup(name string) (*Model, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	md, ok := m.models[name]
	return md, ok
}

// Names lists the models in use, sorted.
func (m *Manager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.models))
}

// Remove stops a model no pipeline uses any more.
func (m *Manager) Remove(name string) {
	m.mu.Lock()
	md, ok := m.models[name]
	delete(m.models, name)
	m.mu.Unlock()
	if ok {
		md.close()
	}
}

func (m *Manager) all() []*Model {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Values(m.models))
}

// Run checks, every Poll until ctx ends, for plugin binaries that changed
// (their models load the new binary and switch to it) and for serving
// processes that died while idle (restarted).
func (m *Manager) Run(ctx context.Context) {
	tick := time.NewTicker(m.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			changed, errs := m.bins.poll(now)
			for _, err := range errs {
				m.log.Error("plugin binary", "err", err)
			}
			for _, md := range m.all() {
				md.checkExited()
				if len(changed) > 0 {
					md.mu.Lock()
					md.reconcile()
					md.mu.Unlock()
				}
			}
		}
	}
}

// Close stops every process, each given sdk.StopTimeout to close its task
// (all at once), and returns when they have ended; Acquire returns
// ErrClosed from then on.
func (m *Manager) Close() {
	for _, md := range m.all() {
		md.close()
	}
	m.stopMu.Lock()
	for m.stopping > 0 {
		m.stopped.Wait()
	}
	m.stopMu.Unlock()
}

// stopProcess stops proc gracefully in the background (sdk.StopTimeout at
// most) and then calls done, which must not be called with a lock the
// caller holds.
func (m *Manager) stopProcess(proc sdk.Process, done func()) {
	m.stopMu.Lock()
	m.stopping++
	m.stopMu.Unlock()
	go func() {
		proc.Stop()
		done()
		m.stopMu.Lock()
		m.stopping--
		m.stopped.Broadcast()
		m.stopMu.Unlock()
	}()
}
