package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // a verify reference may be JPEG
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/plugins/embed/identify"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

// saveEvery is how often the pipelines' states are saved when they
// changed (identify.Identifier.Save writes nothing otherwise); Close
// saves too.
const saveEvery = 5 * time.Second

// pipeline is what one configured pipeline keeps besides its options: its
// identifier (nil when it neither matches, keeps a state nor clusters),
// its gallery's watcher and status, its verify reference.
type pipeline struct {
	name   string
	opts   options
	log    *slog.Logger
	id     *identify.Identifier
	verify []float64 // the reference image's unit vector; nil: no verify

	gallery   atomic.Pointer[galleryStatus] // nil: no gallery
	stopWatch context.CancelFunc            // nil: no gallery
	watchDone chan struct{}

	saveMu  sync.Mutex // the saver and Configure both save
	saveErr string     // the last Save error logged, so that it is logged once
}

// galleryStatus is the output's "gallery": what the last load of the
// gallery folder gave.
type galleryStatus struct {
	Identities int    `json:"identities"`
	Problems   int    `json:"problems"`        // files and folders skipped (logged one by one)
	Error      string `json:"error,omitempty"` // the last reload failed: the gallery before it is in use
}

// Configure replaces the set of pipelines: every pipeline's options are
// checked (tfplugin), then each new or changed pipeline gets its identifier
// (its state directory opened, its gallery enrolled and watched) and its
// verify reference embedded. Pipelines whose options did not change keep
// theirs. If anything fails nothing changes: the error names the pipeline.
func (e *embedder) Configure(ctx context.Context, raw map[string]json.RawMessage) error {
	e.mu.Lock()
	err := e.Model.Configure(ctx, raw)
	e.mu.Unlock()
	if err != nil {
		return err
	}
	next, err := e.openPipelines(ctx)
	if err != nil {
		e.mu.Lock()
		if rerr := e.Model.Configure(context.Background(), e.raw); rerr != nil { // was accepted before
			err = errors.Join(err, rerr)
		}
		e.mu.Unlock()
		return err
	}
	e.mu.Lock()
	old := e.pipes
	e.pipes, e.raw = next, raw
	e.mu.Unlock()
	e.closePipelines(old, next)
	return nil
}

// openPipelines makes the pipelines of the options tfplugin holds now,
// reusing those of e.pipes whose options are the same. Two pipelines may
// not share a state directory. On error it closes what it opened.
func (e *embedder) openPipelines(ctx context.Context) (map[string]*pipeline, error) {
	e.mu.Lock()
	all := maps.Clone(e.Pipelines())
	e.mu.Unlock()
	// The states as they are in memory now, for a pipeline that opens one
	// an old pipeline has open (renamed, or its options changed).
	e.saveAll(e.pipes)
	next := map[string]*pipeline{}
	fail := func(name string, err error) (map[string]*pipeline, error) {
		e.closePipelines(next, e.pipes)
		return nil, fmt.Errorf("pipeline %s: %w", name, err)
	}
	stateDirs := map[string]string{} // absolute path -> pipeline
	for _, name := range slices.Sorted(maps.Keys(all)) {
		o := all[name]
		if o.StateDir != "" {
			abs, err := filepath.Abs(o.StateDir)
			if err != nil {
				return fail(name, fmt.Errorf("state_dir: %w", err))
			}
			if other, ok := stateDirs[abs]; ok {
				return fail(name, fmt.Errorf("state_dir %s is also pipeline %s's: each pipeline needs its own", o.StateDir, other))
			}
			stateDirs[abs] = name
		}
		if p := e.pipes[name]; p != nil && p.opts == o {
			next[name] = p
			continue
		}
		p, err := e.openPipeline(ctx, name, o)
		if err != nil {
			return fail(name, err)
		}
		next[name] = p
	}
	return next, nil
}

// openPipeline makes one pipeline: the verify reference embedded, the
// identifier opened with its state, the gallery enrolled and watched.
func (e *embedder) openPipeline(ctx context.Context, name string, o options) (*pipeline, error) {
	p := &pipeline{name: name, opts: o, log: slog.Default().With("pipeline", name, "model", e.space)}
	emb := modelEmbedder{e: e, pipeline: name}
	if o.Verify != "" {
		v, err := embedFile(emb, o.Verify)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		p.verify = v
	}
	if !o.identifies() {
		return p, nil
	}
	clusterThreshold := o.ClusterThreshold
	if clusterThreshold == 0 {
		// Clustering off: decide calls Match, never Identify, so the
		// identifier's clustering (which must have a valid threshold) is
		// not used; stored clusters are kept as they are.
		clusterThreshold = identify.MaxClusterThreshold
	}
	id, problems, err := identify.Open(identify.Options{
		Threshold: o.Threshold, ClusterThreshold: clusterThreshold, Exemplars: o.Exemplars,
		Space: e.space, StateDir: o.StateDir, Logger: p.log,
	}, emb)
	for _, pr := range problems {
		p.log.Warn("embed: state", "problem", pr.Error())
	}
	if err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	p.id = id
	if o.Gallery == "" {
		return p, nil
	}
	if err := p.loadGallery(ctx, emb); err != nil {
		return nil, err
	}
	watchCtx, stop := context.WithCancel(context.Background())
	p.stopWatch, p.watchDone = stop, make(chan struct{})
	go func() {
		defer close(p.watchDone)
		err := identify.WatchGallery(watchCtx, o.Gallery, 0, p.log, func() {
			if err := p.loadGallery(watchCtx, emb); err != nil && watchCtx.Err() == nil {
				p.log.Error("embed: gallery reload failed; the gallery loaded before stays in use", "gallery", o.Gallery, "err", err)
				st := *p.gallery.Load()
				st.Error = err.Error()
				p.gallery.Store(&st)
			}
		})
		if err != nil {
			p.log.Error("embed: gallery not watched: changes need a new Configure", "gallery", o.Gallery, "err", err)
		}
	}()
	return p, nil
}

// loadGallery enrols the gallery folder, logs its problems one by one and
// swaps it in; the status counts them. An error leaves the gallery in use
// as it was.
func (p *pipeline) loadGallery(ctx context.Context, emb identify.Embedder) error {
	g, problems, err := identify.LoadGallery(ctx, p.opts.Gallery, emb)
	if err != nil {
		return err
	}
	for _, pr := range problems {
		p.log.Warn("embed: gallery", "problem", pr.Error())
	}
	if err := p.id.SetGallery(g); err != nil {
		return err
	}
	names := g.Names()
	p.log.Info("embed: gallery loaded", "gallery", p.opts.Gallery, "identities", len(names), "problems", len(problems))
	p.gallery.Store(&galleryStatus{Identities: len(names), Problems: len(problems)})
	return nil
}

// embedFile embeds the image file path (PNG or JPEG) into a unit vector.
func embedFile(emb identify.Embedder, path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	raw, err := emb.Embed(img)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return identify.Unit(raw)
}

// closePipelines stops the gallery watchers of the pipelines of pipes that
// are not in keep, and saves their states.
func (e *embedder) closePipelines(pipes, keep map[string]*pipeline) {
	for name, p := range pipes {
		if keep[name] == p {
			continue
		}
		if p.stopWatch != nil {
			p.stopWatch()
			<-p.watchDone
		}
		p.save()
	}
}

// startSaver saves the states every saveEvery until Close.
func (e *embedder) startSaver() {
	ctx, stop := context.WithCancel(context.Background())
	e.stopSaver, e.saverDone = stop, make(chan struct{})
	go func() {
		defer close(e.saverDone)
		t := time.NewTicker(saveEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.mu.Lock()
				pipes := maps.Clone(e.pipes)
				e.mu.Unlock()
				e.saveAll(pipes)
			}
		}
	}()
}

// saveAll saves the state of every pipeline of pipes.
func (e *embedder) saveAll(pipes map[string]*pipeline) {
	for _, p := range pipes {
		p.save()
	}
}

// save saves the pipeline's state if it has one; an error is logged once
// (until another one comes). identify.ErrStateTaken means a newer model
// version owns the state directory: this process's changes stay in memory.
func (p *pipeline) save() {
	if p.id == nil {
		return
	}
	p.saveMu.Lock()
	defer p.saveMu.Unlock()
	err := p.id.Save()
	switch {
	case err == nil:
		p.saveErr = ""
	case err.Error() != p.saveErr:
		p.saveErr = err.Error()
		if errors.Is(err, identify.ErrStateTaken) {
			p.log.Warn("embed: state not saved: a newer model version owns it", "state_dir", p.opts.StateDir, "err", err)
		} else {
			p.log.Error("embed: state not saved", "state_dir", p.opts.StateDir, "err", err)
		}
	}
}

// decide is the output of one frame's embedding (README.md: Result
// payload).
func (p *pipeline) decide(raw []float32, unit []float64, f sdk.Frame) (output, error) {
	out := output{Top: []candidate{}, Dim: len(unit)}
	if p.opts.Embedding {
		out.Embedding = unit
	}
	if p.verify != nil {
		d := identify.Distance(unit, p.verify)
		out.Verify = &verdict{Same: d <= p.opts.Threshold, Distance: d, Threshold: p.opts.Threshold}
	}
	if p.id == nil {
		return out, nil
	}
	out.Gallery = p.gallery.Load()
	m, err := p.id.Match(raw, p.opts.TopK)
	if err == nil && m.Name == "" && p.opts.ClusterThreshold > 0 {
		// Unknown: cluster it. The crop is kept (as PNG) if it becomes an
		// exemplar, so it is encoded only for unknowns, and only with a
		// state to keep it in.
		var crop []byte
		if p.opts.StateDir != "" {
			crop, err = pngOf(f.RGB, f.Width, f.Height)
		}
		var r identify.Result
		if err == nil {
			r, err = p.id.Identify(raw, crop, p.opts.TopK)
		}
		m = r.Match
		if r.Cluster.ID != 0 {
			out.Cluster = &clusterRef{ID: r.Cluster.ID, New: r.Cluster.New}
		}
	}
	if err != nil {
		return output{}, err
	}
	if m.Name != "" {
		out.Identity, out.Distance = &m.Name, &m.Distance
	}
	for _, c := range m.Top {
		out.Top = append(out.Top, candidate{Name: c.Name, Distance: c.Distance, Threshold: c.Threshold, Vetoed: c.Vetoed})
	}
	return out, nil
}

// output is the task's JSON output (README.md).
type output struct {
	Identity  *string        `json:"identity"` // null: unknown (or the pipeline does not identify)
	Distance  *float64       `json:"distance"` // to the identity's nearest enrolled vector; null when unknown
	Top       []candidate    `json:"top"`
	Cluster   *clusterRef    `json:"cluster,omitempty"`
	Gallery   *galleryStatus `json:"gallery,omitempty"`
	Verify    *verdict       `json:"verify,omitempty"`
	Embedding []float64      `json:"embedding,omitempty"`
	Dim       int            `json:"dim"`
}

// candidate is one of the nearest identities.
type candidate struct {
	Name      string  `json:"name"`
	Distance  float64 `json:"distance"`
	Threshold float64 `json:"threshold"`
	Vetoed    bool    `json:"vetoed,omitempty"` // one of its negatives is nearer than its positives
}

// clusterRef is the cluster an unknown joined.
type clusterRef struct {
	ID  int  `json:"id"`
	New bool `json:"new"`
}

// verdict is the verify mode's answer.
type verdict struct {
	Same      bool    `json:"same"`
	Distance  float64 `json:"distance"`
	Threshold float64 `json:"threshold"`
}
