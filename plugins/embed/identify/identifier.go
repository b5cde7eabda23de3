package identify

import (
	"bytes"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"path/filepath"
	"sync"
)

// Options configure an Identifier.
type Options struct {
	// Threshold is the largest distance at which a probe matches an
	// identity, in (0, 2], unless gallery.toml gives the identity its own.
	Threshold float64
	// ClusterThreshold is Clustering's threshold, in (0, MaxClusterThreshold].
	ClusterThreshold float64
	// Exemplars is M, the embeddings (and images) kept per cluster, >= 1.
	Exemplars int
	// Space names the embedding space, e.g. the model's name and version:
	// vectors of different spaces cannot be compared. Required with
	// StateDir.
	Space string
	// StateDir keeps the clusters and the runtime identities across
	// restarts; "" keeps them in memory only (and no images).
	StateDir string
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

func (o Options) check() error {
	if err := checkThreshold(o.Threshold); err != nil {
		return fmt.Errorf("threshold: %w", err)
	}
	if _, err := NewClustering(o.ClusterThreshold, o.Exemplars); err != nil {
		return err
	}
	if o.StateDir != "" && o.Space == "" {
		return errors.New("space is empty: a state directory needs the embedding space named")
	}
	return nil
}

// Identifier says whose an embedding is: an identity of the gallery or one
// enrolled at runtime, or, for an unknown, a cluster. It is safe for
// concurrent use: Identify runs on the plugin's Infer path while commands
// and gallery reloads come from elsewhere.
type Identifier struct {
	opts Options
	emb  Embedder
	log  *slog.Logger

	saveMu sync.Mutex // one Save at a time; taken before mu
	// adopted is the space of the state file Open loaded when it was not
	// opts.Space: Save may overwrite a file of that space until it has
	// written one of its own (state.go). Guarded by saveMu.
	adopted string

	mu       sync.Mutex
	gallery  *Gallery // nil until SetGallery
	runtime  map[string]*runtimeIdentity
	clusters *Clustering
	dirty    bool // changed since the last Save
}

// runtimeIdentity is an identity enrolled by a command: enrol, or
// name_cluster.
type runtimeIdentity struct {
	entries []exemplar
}

// Result is what Identify says of an embedding.
type Result struct {
	Match
	// Cluster is the cluster an unknown embedding joined or started; 0
	// when it matched an identity.
	Cluster Assignment
}

// Open makes an Identifier and loads its state from opts.StateDir (made if
// missing). emb embeds enrolment images and, when the state was written
// in another Space, the stored images, to rebuild the clusters and the
// runtime identities in this one. What could not be kept is in the
// Problems: a corrupt state file (moved aside, with its images, to
// <name>.corrupt-<time>), a missing image, an exemplar without an image
// on a change of space. The error is for bad options and a state
// directory that cannot be used.
func Open(opts Options, emb Embedder) (*Identifier, []Problem, error) {
	if err := opts.check(); err != nil {
		return nil, nil, fmt.Errorf("identify: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	clusters, _ := NewClustering(opts.ClusterThreshold, opts.Exemplars)
	id := &Identifier{opts: opts, emb: emb, log: opts.Logger, runtime: map[string]*runtimeIdentity{}, clusters: clusters}
	if opts.StateDir == "" {
		return id, nil, nil
	}
	problems, err := id.load()
	if err != nil {
		return nil, problems, err
	}
	if err := id.Save(); err != nil {
		return nil, problems, err
	}
	return id, problems, nil
}

// SetGallery replaces the gallery (nil: none) in one step: a probe is
// matched against the old one or the new one, never a mix.
func (id *Identifier) SetGallery(g *Gallery) error {
	id.mu.Lock()
	defer id.mu.Unlock()
	if g != nil && g.dim != 0 {
		if err := id.checkDimLocked(g.dim, false); err != nil {
			return fmt.Errorf("gallery %s: %w", g.dir, err)
		}
	}
	id.gallery = g
	return nil
}

// Match matches e against the identities (see the rule in match.go) and
// returns the top k of them. e is normalised first; NaN, Inf, zero and
// a length unlike the identities' are errors.
func (id *Identifier) Match(e []float32, k int) (Match, error) {
	v, err := Unit(e)
	if err != nil {
		return Match{}, fmt.Errorf("embedding: %w", err)
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.sources().match(v, k)
}

// Identify is Match, and for an embedding that matches no identity, Add
// to the clusters, png (the crop, may be nil) kept if it becomes an
// exemplar. The clusters are written to the state directory by Save.
func (id *Identifier) Identify(e []float32, png []byte, k int) (Result, error) {
	v, err := Unit(e)
	if err != nil {
		return Result{}, fmt.Errorf("embedding: %w", err)
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	m, err := id.sources().match(v, k)
	if err != nil || m.Name != "" {
		return Result{Match: m}, err
	}
	if id.opts.StateDir == "" {
		png = nil // no use for it without a state to re-embed from
	}
	a, err := id.clusters.add(v, png)
	if err != nil {
		return Result{}, err
	}
	id.dirty = true
	return Result{Match: m, Cluster: a}, nil
}

// Clusters describes every cluster, ascending id.
func (id *Identifier) Clusters() []Cluster {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.clusters.Clusters()
}

// Enrol adds an image (PNG or JPEG bytes) of name to the runtime
// identities, and saves the state; the image is kept in the state
// directory, as PNG, to be re-embedded by a later model. The Embedder is
// called from the caller's goroutine.
func (id *Identifier) Enrol(name string, img []byte) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("enrol: %w", err)
	}
	decoded, err := decodeImage(img)
	if err != nil {
		return fmt.Errorf("enrol %q: %w", name, err)
	}
	v, err := embedImage(id.emb, decoded)
	if err != nil {
		return fmt.Errorf("enrol %q: %w", name, err)
	}
	var ref *imageRef
	if id.opts.StateDir != "" {
		var buf bytes.Buffer
		if err := png.Encode(&buf, decoded); err != nil {
			return fmt.Errorf("enrol %q: encoding PNG: %w", name, err)
		}
		ref = newImageRef(buf.Bytes())
	}
	id.mu.Lock()
	if err := id.checkDimLocked(len(v), true); err != nil {
		id.mu.Unlock()
		return fmt.Errorf("enrol %q: %w", name, err)
	}
	id.addRuntimeLocked(name, exemplar{vector: v, image: ref})
	id.mu.Unlock()
	return id.saveAfter("enrol " + name)
}

// NameCluster makes the exemplars of cluster cid runtime enrolments of
// name (added to it if it exists), removes the cluster, and saves the
// state. The cluster's id is not given out again.
func (id *Identifier) NameCluster(cid int, name string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("name_cluster: %w", err)
	}
	id.mu.Lock()
	cl := id.clusters.take(cid)
	if cl == nil {
		id.mu.Unlock()
		return fmt.Errorf("name_cluster %d: no such cluster", cid)
	}
	for _, ex := range cl.exemplars {
		id.addRuntimeLocked(name, ex)
	}
	id.mu.Unlock()
	id.log.Info("identify: cluster named", "cluster", cid, "name", name, "exemplars", len(cl.exemplars), "count", cl.count)
	return id.saveAfter(fmt.Sprintf("name_cluster %d", cid))
}

// ErrInGallery is wrapped by Forget's error for an identity of the
// gallery folder: only removing its folder forgets it.
var ErrInGallery = errors.New("identity is in the gallery folder")

// ErrUnknownIdentity is wrapped by Forget's error for a name that is no
// identity.
var ErrUnknownIdentity = errors.New("no such identity")

// Forget removes the runtime identity name and saves the state. For a
// name of the gallery it returns ErrInGallery, saying which folder to
// remove (having removed the runtime enrolments of that name, if any).
func (id *Identifier) Forget(name string) error {
	id.mu.Lock()
	rt, inRuntime := id.runtime[name]
	delete(id.runtime, name)
	var folder string
	if id.gallery != nil {
		if _, ok := id.gallery.identities[name]; ok {
			folder = filepath.Join(id.gallery.dir, name)
		}
	}
	if inRuntime {
		id.dirty = true
	}
	id.mu.Unlock()
	var err error
	switch {
	case folder != "" && inRuntime:
		err = fmt.Errorf("forget %q: its %d runtime enrolments are forgotten, but %w: remove the folder %s to forget it", name, len(rt.entries), ErrInGallery, folder)
	case folder != "":
		err = fmt.Errorf("forget %q: %w: remove the folder %s to forget it", name, ErrInGallery, folder)
	case !inRuntime:
		return fmt.Errorf("forget %q: %w", name, ErrUnknownIdentity)
	}
	if inRuntime {
		if serr := id.saveAfter("forget " + name); serr != nil {
			return errors.Join(err, serr)
		}
	}
	return err
}

// addRuntimeLocked appends ex to the runtime identity name.
func (id *Identifier) addRuntimeLocked(name string, ex exemplar) {
	rt := id.runtime[name]
	if rt == nil {
		rt = &runtimeIdentity{}
		id.runtime[name] = rt
	}
	rt.entries = append(rt.entries, ex)
	id.dirty = true
}

// checkDimLocked refuses vectors of n dimensions when those enrolled (the
// gallery's too, if withGallery) or clustered have another.
func (id *Identifier) checkDimLocked(n int, withGallery bool) error {
	s := id.sources()
	if !withGallery {
		s.gallery = nil
	}
	if err := s.checkDim(n); err != nil {
		return err
	}
	if d := id.clusters.dim; d != 0 && d != n {
		return fmt.Errorf("embedding has %d dimensions, the clusters %d", n, d)
	}
	return nil
}

func (id *Identifier) sources() sources {
	return sources{gallery: id.gallery, runtime: id.runtime, threshold: id.opts.Threshold}
}

// saveAfter saves after a command, saying which one failed to be saved.
func (id *Identifier) saveAfter(what string) error {
	if err := id.Save(); err != nil {
		return fmt.Errorf("%s: done, but not saved: %w", what, err)
	}
	return nil
}
