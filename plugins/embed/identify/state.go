package identify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The state directory:
//
//	state.json            the clusters and the runtime identities
//	images/<sha256>.png   the exemplars' and enrolments' images, by content
//	.lock                 flock'ed while a Save checks and writes (lockDir)
//
// state.json is written whole, to a temporary file that is synced and
// renamed over the old one, the directory synced after; images are written
// the same way before the state that names them, and those no state names
// any more are removed after.
const (
	StateFile = "state.json"
	ImagesDir = "images"
)

// stateVersion is the format of state.json.
const stateVersion = 1

type stateJSON struct {
	Version     int            `json:"version"`
	Space       string         `json:"space"`
	NextCluster int            `json:"next_cluster"`
	Clusters    []clusterJSON  `json:"clusters"`
	Identities  []identityJSON `json:"identities"`
}

type clusterJSON struct {
	ID        int            `json:"id"`
	Count     int            `json:"count"`
	Sum       []float64      `json:"sum"`
	Centroid  []float64      `json:"centroid"` // kept, not recomputed: a restart changes no bit
	Exemplars []exemplarJSON `json:"exemplars"`
}

type identityJSON struct {
	Name       string         `json:"name"`
	Embeddings []exemplarJSON `json:"embeddings"`
}

type exemplarJSON struct {
	Embedding []float64 `json:"embedding"`       // unit vector
	Image     string    `json:"image,omitempty"` // file name in images/
}

var imageName = regexp.MustCompile(`^[0-9a-f]{64}\.png$`)

// load reads the state directory into id (which is empty and not shared
// yet).
func (id *Identifier) load() ([]Problem, error) {
	dir := id.opts.StateDir
	if err := os.MkdirAll(filepath.Join(dir, ImagesDir), 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	// Under the lock: another process's Save may be writing its temporaries.
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	removeTemps(dir)
	removeTemps(filepath.Join(dir, ImagesDir))
	unlock()
	path := filepath.Join(dir, StateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	var st stateJSON
	err = json.Unmarshal(data, &st)
	if err == nil {
		err = st.check()
	}
	if err != nil {
		aside, merr := moveAside(dir)
		if merr != nil {
			return nil, fmt.Errorf("state %s is corrupt (%v), and could not be moved aside: %w", path, err, merr)
		}
		id.log.Error("identify: state file corrupt, moved aside; starting with no clusters and no runtime identities", "file", path, "moved_to", aside, "err", err)
		return []Problem{{Path: path, Err: fmt.Errorf("corrupt, moved aside to %s with its images: %w", aside, err)}}, nil
	}
	var problems []Problem
	ref := func(name string) *imageRef {
		if name == "" {
			return nil
		}
		p := filepath.Join(dir, ImagesDir, name)
		if _, err := os.Stat(p); err != nil {
			problems = append(problems, Problem{Path: p, Err: fmt.Errorf("image of a stored embedding: %w", err)})
			return nil
		}
		return &imageRef{hash: strings.TrimSuffix(name, ".png")}
	}
	exemplars := func(js []exemplarJSON) []exemplar {
		out := make([]exemplar, len(js))
		for i, j := range js {
			out[i] = exemplar{vector: j.Embedding, image: ref(j.Image)}
		}
		return out
	}
	c := id.clusters
	c.next = st.NextCluster
	for _, cj := range st.Clusters {
		cl := &cluster{id: cj.ID, count: cj.Count, sum: cj.Sum, centroid: cj.Centroid, exemplars: exemplars(cj.Exemplars)}
		c.clusters = append(c.clusters, cl)
		c.dim = len(cj.Sum)
	}
	for _, ij := range st.Identities {
		id.runtime[ij.Name] = &runtimeIdentity{entries: exemplars(ij.Embeddings)}
	}
	if st.Space != id.opts.Space {
		id.adopted = st.Space
		id.log.Info("identify: embedding space changed, re-embedding the stored images", "from", st.Space, "to", id.opts.Space)
		problems = append(problems, id.reembed(st.Space)...)
		id.dirty = true
	}
	return problems, nil
}

// check validates a decoded state.json.
func (st *stateJSON) check() error {
	if st.Version != stateVersion {
		return fmt.Errorf("version is %d, want %d", st.Version, stateVersion)
	}
	if st.Space == "" {
		return errors.New("space is empty")
	}
	if st.NextCluster < 1 {
		return fmt.Errorf("next_cluster is %d, must be at least 1", st.NextCluster)
	}
	dim := 0
	vec := func(where string, v []float64, isUnit bool) error {
		if dim == 0 {
			dim = len(v)
		}
		if len(v) == 0 || len(v) != dim {
			return fmt.Errorf("%s has %d dimensions, want %d", where, len(v), dim)
		}
		for i, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("%s[%d] is %g", where, i, x)
			}
		}
		n := norm(v)
		if n == 0 || isUnit && math.Abs(n-1) > 1e-6 {
			return fmt.Errorf("%s has length %g", where, n)
		}
		return nil
	}
	exemplars := func(where string, js []exemplarJSON) error {
		for i, j := range js {
			w := fmt.Sprintf("%s[%d]", where, i)
			if err := vec(w+".embedding", j.Embedding, true); err != nil {
				return err
			}
			if j.Image != "" && !imageName.MatchString(j.Image) {
				return fmt.Errorf("%s.image %q is not <sha256>.png", w, j.Image)
			}
		}
		return nil
	}
	prev := 0
	for i, c := range st.Clusters {
		w := fmt.Sprintf("clusters[%d]", i)
		if c.ID <= prev || c.ID >= st.NextCluster {
			return fmt.Errorf("%s.id is %d: ids must ascend and be below next_cluster %d", w, c.ID, st.NextCluster)
		}
		prev = c.ID
		if c.Count < 1 {
			return fmt.Errorf("%s.count is %d, must be at least 1", w, c.Count)
		}
		if err := vec(w+".sum", c.Sum, false); err != nil {
			return err
		}
		if err := vec(w+".centroid", c.Centroid, true); err != nil {
			return err
		}
		if err := exemplars(w+".exemplars", c.Exemplars); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i, ij := range st.Identities {
		w := fmt.Sprintf("identities[%d]", i)
		if err := ValidName(ij.Name); err != nil {
			return fmt.Errorf("%s.name: %w", w, err)
		}
		if seen[ij.Name] {
			return fmt.Errorf("%s.name %q appears twice", w, ij.Name)
		}
		seen[ij.Name] = true
		if len(ij.Embeddings) == 0 {
			return fmt.Errorf("%s (%q) has no embeddings", w, ij.Name)
		}
		if err := exemplars(w+".embeddings", ij.Embeddings); err != nil {
			return err
		}
	}
	return nil
}

// reembed rebuilds the clusters and the runtime identities, loaded from
// the space from, in id's: every stored image is embedded again; an
// exemplar without an image, or whose image cannot be embedded, is
// dropped, and a cluster or identity left with none too. A cluster's
// centroid becomes the normalised sum of its exemplars' new vectors; its
// sum keeps the length and its count the value they had, so that it moves
// as slowly as before. Cluster ids are kept.
func (id *Identifier) reembed(from string) []Problem {
	var problems []Problem
	dir := filepath.Join(id.opts.StateDir, ImagesDir)
	dim := 0
	again := func(what string, exs []exemplar) []exemplar {
		var out []exemplar
		for i, ex := range exs {
			if ex.image == nil {
				problems = append(problems, Problem{Path: id.opts.StateDir, Err: fmt.Errorf("%s, exemplar %d: no image to re-embed from space %q: dropped", what, i, from)})
				continue
			}
			path := filepath.Join(dir, ex.image.hash+".png")
			data, err := os.ReadFile(path)
			if err == nil {
				ex.vector, err = embedBytes(id.emb, data)
			}
			if err == nil && dim != 0 && len(ex.vector) != dim {
				err = fmt.Errorf("embedding has %d dimensions, the others %d", len(ex.vector), dim)
			}
			if err != nil {
				problems = append(problems, Problem{Path: path, Err: fmt.Errorf("%s, exemplar %d: re-embedding: %w: dropped", what, i, err)})
				continue
			}
			dim = len(ex.vector)
			out = append(out, ex)
		}
		return out
	}
	c := id.clusters
	kept := c.clusters[:0]
	for _, cl := range c.clusters {
		what := fmt.Sprintf("cluster %d", cl.id)
		exs := again(what, cl.exemplars)
		if len(exs) == 0 {
			problems = append(problems, Problem{Path: id.opts.StateDir, Err: fmt.Errorf("%s: no exemplar could be re-embedded: cluster dropped", what)})
			continue
		}
		centroid := make([]float64, dim)
		for _, ex := range exs {
			for i, x := range ex.vector {
				centroid[i] += x
			}
		}
		if err := normalise(centroid); err != nil {
			problems = append(problems, Problem{Path: id.opts.StateDir, Err: fmt.Errorf("%s: exemplars re-embedded cancel out: %w: cluster dropped", what, err)})
			continue
		}
		length := norm(cl.sum)
		cl.sum = make([]float64, dim)
		for i, x := range centroid {
			cl.sum[i] = x * length
		}
		cl.centroid, cl.exemplars = centroid, exs
		kept = append(kept, cl)
	}
	c.clusters = kept
	c.dim = dim
	for _, name := range slices.Sorted(maps.Keys(id.runtime)) {
		what := fmt.Sprintf("identity %q", name)
		rt := id.runtime[name]
		rt.entries = again(what, rt.entries)
		if len(rt.entries) == 0 {
			problems = append(problems, Problem{Path: id.opts.StateDir, Err: fmt.Errorf("%s: no enrolment could be re-embedded: identity dropped", what)})
			delete(id.runtime, name)
		}
	}
	return problems
}

// ErrStateTaken is wrapped by Save's error when the state file records
// another embedding space than the identifier's: another process, serving
// a newer model version, has re-embedded the state and owns it.
var ErrStateTaken = errors.New("state taken by another embedding space")

// Save writes the clusters and the runtime identities to the state
// directory if they changed since the last Save. Commands save at once;
// the clusters, which change with every unknown, only when Save is
// called: the plugin calls it every few seconds and before it exits.
//
// During a model version swap two processes (the old version and the new)
// may have the same state directory open. The new one re-embeds the state
// at Open and writes it in its own space; from then on Save refuses to
// overwrite it with the old space's vectors (ErrStateTaken, nothing
// written, the changes kept in memory). Save overwrites a file of another
// space only when it is the one Open loaded and re-embedded. The check and
// the write are one step under an exclusive lock (flock) on
// <dir>/.lock, so two processes never interleave them.
func (id *Identifier) Save() error {
	if id.opts.StateDir == "" {
		return nil
	}
	id.saveMu.Lock()
	defer id.saveMu.Unlock()
	id.mu.Lock()
	if !id.dirty {
		id.mu.Unlock()
		return nil
	}
	st, pending := id.snapshotLocked()
	id.dirty = false
	id.mu.Unlock()

	err := id.writeOwned(st, pending)
	id.mu.Lock()
	if err != nil {
		id.dirty = true
	} else {
		for _, ref := range pending {
			ref.data = nil // on disk now
		}
	}
	id.mu.Unlock()
	if err != nil {
		return fmt.Errorf("state %s: %w", filepath.Join(id.opts.StateDir, StateFile), err)
	}
	return nil
}

// writeOwned writes st and its pending images, then removes the images no
// longer named, unless the state file records a space that is neither
// id's nor the one it adopted at Open (ErrStateTaken); all under the
// directory's lock. Called with saveMu held.
func (id *Identifier) writeOwned(st stateJSON, pending []*imageRef) error {
	dir := id.opts.StateDir
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	space, err := storedSpace(filepath.Join(dir, StateFile))
	if err != nil {
		return err
	}
	if space != "" && space != id.opts.Space && space != id.adopted {
		return fmt.Errorf("%w: it records space %q, this identifier's is %q: not overwritten", ErrStateTaken, space, id.opts.Space)
	}
	if err := writeState(dir, st, pending); err != nil {
		return err
	}
	id.adopted = ""
	removeUnnamedImages(filepath.Join(dir, ImagesDir), st, id.log)
	return nil
}

// lockFile is the state directory's lock (flock), held while Save checks
// and writes.
const lockFile = ".lock"

// lockDir takes the exclusive lock of the state directory dir, waiting for
// another process to release it; unlock releases it.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking the state directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// storedSpace reads the space recorded in the state file at path, decoding
// only up to it (it is written second, after the version); "" when there
// is no file, or it records none or cannot be read as a state.
func storedSpace(path string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", nil
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return "", nil
		}
		if key == "space" {
			var space string
			if err := dec.Decode(&space); err != nil {
				return "", nil
			}
			return space, nil
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", nil
		}
	}
	return "", nil
}

// snapshotLocked copies what Save writes, and lists the images not yet on
// disk.
func (id *Identifier) snapshotLocked() (stateJSON, []*imageRef) {
	var pending []*imageRef
	exemplars := func(exs []exemplar) []exemplarJSON {
		out := make([]exemplarJSON, len(exs))
		for i, ex := range exs {
			out[i].Embedding = ex.vector // never changed in place
			if ex.image != nil {
				out[i].Image = ex.image.hash + ".png"
				if ex.image.data != nil {
					pending = append(pending, ex.image)
				}
			}
		}
		return out
	}
	st := stateJSON{Version: stateVersion, Space: id.opts.Space, NextCluster: id.clusters.next, Clusters: []clusterJSON{}, Identities: []identityJSON{}}
	for _, cl := range id.clusters.clusters {
		st.Clusters = append(st.Clusters, clusterJSON{ID: cl.id, Count: cl.count, Sum: clone(cl.sum), Centroid: clone(cl.centroid), Exemplars: exemplars(cl.exemplars)})
	}
	for _, name := range slices.Sorted(maps.Keys(id.runtime)) {
		st.Identities = append(st.Identities, identityJSON{Name: name, Embeddings: exemplars(id.runtime[name].entries)})
	}
	return st, pending
}

// writeState writes the pending images, then state.json.
func writeState(dir string, st stateJSON, pending []*imageRef) error {
	images := filepath.Join(dir, ImagesDir)
	wrote := false
	for _, ref := range pending {
		name := ref.hash + ".png"
		if _, err := os.Stat(filepath.Join(images, name)); err == nil {
			continue // the same bytes, by their hash
		}
		if err := writeFileAtomic(images, name, ref.data, false); err != nil {
			return err
		}
		wrote = true
	}
	if wrote {
		if err := syncDir(images); err != nil {
			return err
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, StateFile, append(data, '\n'), true)
}

// writeFileAtomic writes dir/name through a synced temporary file renamed
// over it, and syncs dir after if asked.
func writeFileAtomic(dir, name string, data []byte, sync bool) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	if sync {
		return syncDir(dir)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// removeTemps removes the temporary files a crash left in dir.
func removeTemps(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// moveAside renames a corrupt state.json and its images folder to
// <name>.corrupt-<time>, and makes a new empty images folder.
func moveAside(dir string) (string, error) {
	suffix := ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
	aside := filepath.Join(dir, StateFile+suffix)
	if err := os.Rename(filepath.Join(dir, StateFile), aside); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(dir, ImagesDir), filepath.Join(dir, ImagesDir+suffix)); err != nil {
		return "", err
	}
	if err := os.Mkdir(filepath.Join(dir, ImagesDir), 0o755); err != nil {
		return "", err
	}
	return aside, syncDir(dir)
}

// removeUnnamedImages removes the images st does not name. An image added
// since st was taken is still in memory, and written by the next Save.
func removeUnnamedImages(dir string, st stateJSON, log *slog.Logger) {
	named := map[string]bool{}
	for _, c := range st.Clusters {
		for _, e := range c.Exemplars {
			named[e.Image] = true
		}
	}
	for _, ij := range st.Identities {
		for _, e := range ij.Embeddings {
			named[e.Image] = true
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		log.Warn("identify: listing the stored images", "dir", dir, "err", err)
		return
	}
	for _, e := range entries {
		if imageName.MatchString(e.Name()) && !named[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				log.Warn("identify: removing an image no longer used", "file", filepath.Join(dir, e.Name()), "err", err)
			}
		}
	}
}
