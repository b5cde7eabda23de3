package daemon

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/internal/signing"
	"github.com/edgeinfer/edgeinfer/tfmodels/graphcheck"
)

// vetter vets a model version before any process loads it (the repository
// watch runs it once per state of the version's files, after the deep
// check): with models.trusted_keys, the version must be signed by one of
// the keys and unchanged since (internal/signing); and its graph may use no
// op of the deny-list but those [serving.<model>] allow_ops allows
// (tfmodels/graphcheck). Its error becomes the version's Err: the version
// is rejected, with the reason in the model state and an event, and the
// version serving keeps serving.
type vetter struct {
	keys  signing.Keys        // nil: signatures are not required (nor checked)
	allow map[string][]string // model -> allow_ops
}

func newVetter(cfg *config.Config) *vetter {
	vt := &vetter{keys: cfg.TrustedKeys(), allow: map[string][]string{}}
	for model := range cfg.ModelPipelines() {
		if ops := cfg.AllowOps(model); len(ops) > 0 {
			vt.allow[model] = ops
		}
	}
	return vt
}

// Vet vets v as a daemon running cfg does before it loads the version
// (edgeinferd -check, which loads versions too).
func Vet(cfg *config.Config, v *repo.Version) error { return newVetter(cfg).check(v) }

// otherGraphFiles are the other files TensorFlow's loader reads a
// SavedModel from: a chunked proto (saved_model.cpb) and a text proto.
// Which it takes when one of them sits beside saved_model.pb is
// TensorFlow's choice, so a version holding one is refused.
var otherGraphFiles = []string{"saved_model.cpb", "saved_model.pbtxt"}

// check is repo.WatchOptions.Vet. The signature comes first: a version
// nobody trusted made is refused for that, whatever it holds.
func (vt *vetter) check(v *repo.Version) error {
	if vt.keys != nil {
		if _, err := signing.Verify(v.Dir, vt.keys); err != nil {
			return err
		}
	}
	path := filepath.Join(v.Dir, repo.SavedModelFile)
	for _, other := range otherGraphFiles {
		if _, err := os.Lstat(filepath.Join(v.Dir, other)); err == nil {
			return fmt.Errorf("%s: TensorFlow may load the graph from it rather than from %s, which alone is checked for denied ops: remove it", filepath.Join(v.Dir, other), repo.SavedModelFile)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	r, err := graphcheck.Check(b, vt.allow[v.Model])
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return r.Err(path, v.Model)
}

// same reports whether vt and o vet alike: the same keys, the same
// allow_ops for every model.
func (vt *vetter) same(o *vetter) bool {
	sameKeys := maps.EqualFunc(vt.keys, o.keys, func(a, b signing.PublicKey) bool { return a.Name == b.Name })
	return sameKeys && (vt.keys == nil) == (o.keys == nil) && maps.EqualFunc(vt.allow, o.allow, slices.Equal)
}

// revet vets every version again when next vets differently from the
// running config (trusted_keys or an allow_ops changed). d.mu is held.
func (d *Daemon) revet(next *config.Config) {
	vt := newVetter(next)
	if vt.same(d.vet) {
		return
	}
	d.vet = vt
	d.watcher.SetVet(vt.check)
	d.log.Info("model versions vetted again", "trusted_keys", next.Models.TrustedKeys, "allow_ops", vt.allow)
}
