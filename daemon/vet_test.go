package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/internal/signing"
)

// zooVersion copies version 1 of a model of the exported zoo
// ($EDGEINFER_MODELS, or models/) into a temporary folder.
func zooVersion(t *testing.T, model string) *repo.Version {
	t.Helper()
	zoo := os.Getenv("EDGEINFER_MODELS")
	if zoo == "" {
		zoo = filepath.Join("..", "models")
	}
	dir := filepath.Join(t.TempDir(), model, "1")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(zoo, model, "1"))); err != nil {
		t.Fatalf("the exported zoo (make models): %v", err)
	}
	return &repo.Version{Model: model, Version: "1", Num: 1, Dir: dir}
}

func TestTheVetterChecksTheSignatureFirstThenTheOps(t *testing.T) {
	v := zooVersion(t, "lenet5")
	key, err := signing.GenerateKey("release")
	if err != nil {
		t.Fatal(err)
	}
	keys := signing.Keys{key.Public().ID: key.Public()}
	if err := (&vetter{}).check(v); err != nil {
		t.Fatalf("without trusted keys, an unsigned zoo model: %v", err)
	}
	if err := (&vetter{keys: keys}).check(v); err == nil || !strings.Contains(err.Error(), "edgeinfer.sig: missing") {
		t.Fatalf("with trusted keys, unsigned: %v", err)
	}
	if _, err := signing.Sign(v.Dir, key); err != nil {
		t.Fatal(err)
	}
	if err := (&vetter{keys: keys}).check(v); err != nil {
		t.Fatalf("signed: %v", err)
	}
	// A graph that is not a SavedModel, signed all the same, is refused
	// by the op check, naming the file.
	pb := filepath.Join(v.Dir, repo.SavedModelFile)
	if err := os.WriteFile(pb, []byte{0xff, 0xff}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := signing.Sign(v.Dir, key); err != nil {
		t.Fatal(err)
	}
	if err := (&vetter{keys: keys}).check(v); err == nil || !strings.HasPrefix(err.Error(), pb+": not a well-formed SavedModel") {
		t.Fatalf("a signed bad graph: %v", err)
	}
}

func TestVettersDifferWhenKeysOrAllowOpsDo(t *testing.T) {
	a, _ := signing.GenerateKey("a")
	b, _ := signing.GenerateKey("b")
	ka := signing.Keys{a.Public().ID: a.Public()}
	kb := signing.Keys{b.Public().ID: b.Public()}
	tests := []struct {
		name string
		x, y *vetter
		same bool
	}{
		{"nothing", &vetter{}, &vetter{allow: map[string][]string{}}, true},
		{"same key", &vetter{keys: ka}, &vetter{keys: signing.Keys{a.Public().ID: a.Public()}}, true},
		{"keys added", &vetter{}, &vetter{keys: ka}, false},
		{"another key", &vetter{keys: ka}, &vetter{keys: kb}, false},
		{"no keys vs an empty set", &vetter{}, &vetter{keys: signing.Keys{}}, false},
		{"allow_ops added", &vetter{}, &vetter{allow: map[string][]string{"m": {"ReadFile"}}}, false},
		{"allow_ops changed", &vetter{allow: map[string][]string{"m": {"ReadFile"}}}, &vetter{allow: map[string][]string{"m": {"WriteFile"}}}, false},
	}
	for _, tt := range tests {
		if got := tt.x.same(tt.y); got != tt.same {
			t.Errorf("%s: same = %v", tt.name, got)
		}
	}
}

func TestAVersionHoldingAnotherGraphFileBesideSavedModelPBIsRefused(t *testing.T) {
	for _, other := range otherGraphFiles {
		v := zooVersion(t, "lenet5")
		if err := (&vetter{}).check(v); err != nil {
			t.Fatalf("lenet5 alone: %v", err)
		}
		// TensorFlow could load the graph from this file, which the op
		// check does not read.
		pb, err := os.ReadFile(filepath.Join(v.Dir, repo.SavedModelFile))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(v.Dir, other)
		if err := os.WriteFile(path, pb, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := (&vetter{}).check(v); err == nil || !strings.HasPrefix(err.Error(), path+": TensorFlow may load the graph from it") {
			t.Errorf("%s beside saved_model.pb: got %v", other, err)
		}
	}
}
