package identify

import (
	"errors"
	"image"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// identify runs img through meanColour and Identify, with its PNG when
// withImage.
func identify(t *testing.T, id *Identifier, img image.Image, withImage bool) Result {
	t.Helper()
	var data []byte
	if withImage {
		data = pngBytes(t, img)
	}
	r, err := id.Identify(embedOf(t, img), data, 3)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func storedImages(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, ImagesDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestStateSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StateDir: dir, Threshold: 0.3, ClusterThreshold: 0.3}
	id := newTestIdentifier(t, opts)
	red, green, blue := uniform(4, colorRGBA(255, 0, 0)), uniform(4, colorRGBA(0, 255, 0)), uniform(4, colorRGBA(0, 0, 255))
	darkRed := uniform(4, colorRGBA(200, 30, 0))
	for i, step := range []struct {
		img  image.Image
		want Assignment
	}{
		{red, Assignment{ID: 1, New: true}},
		{green, Assignment{ID: 2, New: true}},
		{darkRed, Assignment{ID: 1, Distance: Distance([]float64{1, 0, 0}, unitOf(200, 30, 0))}},
		{red, Assignment{ID: 1}}, // the same PNG again: one stored file
	} {
		if r := identify(t, id, step.img, true); r.Cluster.ID != step.want.ID || r.Cluster.New != step.want.New || step.want.Distance != 0 && !near(r.Cluster.Distance, step.want.Distance) {
			t.Fatalf("step %d: %+v, want %+v", i, r.Cluster, step.want)
		}
	}
	if err := id.Enrol("alice", pngBytes(t, blue)); err != nil {
		t.Fatal(err)
	}
	if err := id.NameCluster(2, "bob"); err != nil {
		t.Fatal(err)
	}
	if r := identify(t, id, uniform(4, colorRGBA(255, 255, 0)), true); r.Cluster.ID != 3 {
		t.Fatalf("yellow went to %+v, want new cluster 3", r.Cluster)
	}
	if err := id.Save(); err != nil {
		t.Fatal(err)
	}
	before := id.Clusters()
	if got := storedImages(t, dir); len(got) != 5 {
		t.Errorf("stored images %v, want 5: red, dark red, green (bob), blue (alice), yellow", got)
	}

	again := newTestIdentifier(t, opts)
	after := again.Clusters()
	if len(after) != len(before) {
		t.Fatalf("clusters after restart %+v, before %+v", after, before)
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.ID != b.ID || a.Count != b.Count || a.Exemplars != b.Exemplars || !slices.Equal(a.Centroid, b.Centroid) {
			t.Errorf("cluster after restart %+v, before %+v (bit for bit)", a, b)
		}
	}
	if got := []int{after[0].ID, after[1].ID}; !slices.Equal(got, []int{1, 3}) {
		t.Errorf("cluster ids %v, want 1 and 3 (2 was named)", got)
	}
	for _, tc := range []struct {
		img  image.Image
		want string
	}{{green, "bob"}, {blue, "alice"}, {red, ""}} {
		if m, err := again.Match(embedOf(t, tc.img), 1); err != nil || m.Name != tc.want {
			t.Errorf("after restart matched %+v (%v), want %q", m, err, tc.want)
		}
	}
	if r := identify(t, again, uniform(4, colorRGBA(0, 255, 255)), false); r.Cluster.ID != 4 || !r.Cluster.New {
		t.Errorf("the next new cluster is %+v, want 4: ids continue", r.Cluster)
	}

	// Forgetting bob drops his image from the store at the save.
	if err := again.Forget("bob"); err != nil {
		t.Fatal(err)
	}
	if got := storedImages(t, dir); len(got) != 4 || slices.Contains(got, newImageRef(pngBytes(t, green)).hash+".png") {
		t.Errorf("stored images after forget %v, want 4 without green", got)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func unitOf(r, g, b float64) []float64 {
	v := []float64{r / 255, g / 255, b / 255}
	normalise(v)
	return v
}

func TestCorruptStateIsMovedAside(t *testing.T) {
	v := `[0.6,0.8]`
	img := strings.Repeat("a", 64) + ".png"
	for _, tc := range []struct {
		name, state, want string
	}{
		{"not JSON", `{"version":1,`, "unexpected end of JSON"},
		{"another version", `{"version":7,"space":"s","next_cluster":1}`, "version is 7"},
		{"no space", `{"version":1,"next_cluster":1}`, "space is empty"},
		{"a cluster id not below next_cluster", `{"version":1,"space":"s","next_cluster":2,"clusters":[{"id":2,"count":1,"sum":` + v + `,"centroid":` + v + `}]}`, "clusters[0].id is 2"},
		{"cluster ids out of order", `{"version":1,"space":"s","next_cluster":5,"clusters":[{"id":3,"count":1,"sum":` + v + `,"centroid":` + v + `},{"id":2,"count":1,"sum":` + v + `,"centroid":` + v + `}]}`, "clusters[1].id is 2"},
		{"a zero count", `{"version":1,"space":"s","next_cluster":5,"clusters":[{"id":1,"count":0,"sum":` + v + `,"centroid":` + v + `}]}`, "clusters[0].count is 0"},
		{"a zero sum", `{"version":1,"space":"s","next_cluster":5,"clusters":[{"id":1,"count":1,"sum":[0,0]}]}`, "clusters[0].sum has length 0"},
		{"a centroid not of unit length", `{"version":1,"space":"s","next_cluster":5,"clusters":[{"id":1,"count":1,"sum":[1,0],"centroid":[0.5,0]}]}`, "clusters[0].centroid has length 0.5"},
		{"an exemplar not of unit length", `{"version":1,"space":"s","next_cluster":5,"clusters":[{"id":1,"count":1,"sum":[1,0],"centroid":[1,0],"exemplars":[{"embedding":[2,0]}]}]}`, "clusters[0].exemplars[0].embedding has length 2"},
		{"vectors of two lengths", `{"version":1,"space":"s","next_cluster":5,"clusters":[{"id":1,"count":1,"sum":[1,0],"centroid":[1,0],"exemplars":[{"embedding":[1,0,0]}]}]}`, "has 3 dimensions, want 2"},
		{"an image that is not a hash", `{"version":1,"space":"s","next_cluster":5,"clusters":[{"id":1,"count":1,"sum":[1,0],"centroid":[1,0],"exemplars":[{"embedding":[1,0],"image":"../x.png"}]}]}`, `image "../x.png"`},
		{"an identity twice", `{"version":1,"space":"s","next_cluster":1,"identities":[{"name":"a","embeddings":[{"embedding":` + v + `}]},{"name":"a","embeddings":[{"embedding":` + v + `}]}]}`, `"a" appears twice`},
		{"an identity with a bad name", `{"version":1,"space":"s","next_cluster":1,"identities":[{"name":"a/b","embeddings":[{"embedding":` + v + `}]}]}`, "identities[0].name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, StateFile), []byte(tc.state))
			writeFile(t, filepath.Join(dir, ImagesDir, img), []byte("png"))
			id, problems, err := Open(Options{StateDir: dir, Space: "s", Threshold: 0.5, ClusterThreshold: 0.5, Exemplars: 2, Logger: testLogger(t)}, &meanColour{})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, StateFile)
			if len(problems) != 1 || problems[0].Path != path || !strings.Contains(problems[0].Error(), "corrupt, moved aside") || !strings.Contains(problems[0].Error(), tc.want) {
				t.Fatalf("problems %v, want one for %s saying %q", problems, path, tc.want)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("%s still there: %v", path, err)
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 || !strings.Contains(problems[0].Error(), aside[0]) {
				t.Fatalf("moved aside: %v; the problem says %v", aside, problems[0])
			}
			if data, _ := os.ReadFile(aside[0]); string(data) != tc.state {
				t.Errorf("the file moved aside holds %q, want the corrupt state", data)
			}
			imagesAside, _ := filepath.Glob(filepath.Join(dir, ImagesDir+".corrupt-*", img))
			if len(imagesAside) != 1 {
				t.Errorf("the images were not moved aside with the state")
			}
			if r := identify(t, id, uniform(4, colorRGBA(255, 0, 0)), true); r.Cluster.ID != 1 {
				t.Errorf("fresh state: %+v, want cluster 1", r.Cluster)
			}
			if err := id.Save(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAMissingImageIsReportedAndTheEmbeddingKept(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StateDir: dir}
	id := newTestIdentifier(t, opts)
	red := uniform(4, colorRGBA(255, 0, 0))
	identify(t, id, red, true)
	if err := id.Save(); err != nil {
		t.Fatal(err)
	}
	lost := filepath.Join(dir, ImagesDir, newImageRef(pngBytes(t, red)).hash+".png")
	if err := os.Remove(lost); err != nil {
		t.Fatal(err)
	}
	id, problems, err := Open(Options{StateDir: dir, Space: "mean-colour@1", Threshold: 0.7, ClusterThreshold: 0.7, Exemplars: 4, Logger: testLogger(t)}, &meanColour{})
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Path != lost {
		t.Errorf("problems %v, want one for %s", problems, lost)
	}
	if c := id.Clusters(); len(c) != 1 || c[0].Exemplars != 1 {
		t.Errorf("clusters %+v, want cluster 1 with its exemplar", c)
	}
}

// After a change of space, every stored image is embedded again: here the
// new "model" gives (B, R, G) where the old gave (R, G, B).
func TestAChangeOfSpaceReembedsTheStoredImages(t *testing.T) {
	dir := t.TempDir()
	id := newTestIdentifier(t, Options{StateDir: dir, Space: "v1", ClusterThreshold: 0.3})
	red, darkRed := uniform(4, colorRGBA(255, 0, 0)), uniform(4, colorRGBA(200, 30, 0))
	green, blue := uniform(4, colorRGBA(0, 255, 0)), uniform(4, colorRGBA(0, 0, 255))
	for _, step := range []struct {
		img       image.Image
		withImage bool
		want      int
	}{
		{red, true, 1},
		{darkRed, true, 1},
		{green, false, 2}, // no image: cannot follow a new model
		{blue, true, 3},
		{uniform(4, colorRGBA(0, 20, 255)), false, 3},
	} {
		if r := identify(t, id, step.img, step.withImage); r.Cluster.ID != step.want {
			t.Fatalf("%+v, want cluster %d", r.Cluster, step.want)
		}
	}
	if err := id.Enrol("alice", pngBytes(t, uniform(4, colorRGBA(255, 255, 0)))); err != nil {
		t.Fatal(err)
	}
	sum1 := norm(id.clusters.clusters[0].sum)

	emb := &meanColour{permute: true}
	opts := Options{StateDir: dir, Space: "v2", Threshold: 0.3, ClusterThreshold: 0.3, Exemplars: 4, Logger: testLogger(t)}
	again, problems, err := Open(opts, emb)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, p := range problems {
		msgs = append(msgs, p.Error())
	}
	for _, want := range []string{
		`cluster 2, exemplar 0: no image to re-embed from space "v1": dropped`,
		"cluster 2: no exemplar could be re-embedded: cluster dropped",
		`cluster 3, exemplar 1: no image to re-embed from space "v1": dropped`,
	} {
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, want) }) {
			t.Errorf("problems %q, want %q", msgs, want)
		}
	}
	if len(msgs) != 3 {
		t.Errorf("problems %q, want 3", msgs)
	}
	if n := emb.calls.Load(); n != 4 {
		t.Errorf("%d images re-embedded, want 4 (red, dark red, blue, alice's yellow)", n)
	}
	// Cluster 1: red -> (0,1,0), dark red -> unit(0,200,30); centroid the
	// normalised sum; the sum keeps its length, the count its value.
	r, dr := []float64{0, 1, 0}, unitOf(0, 200, 30)
	c1 := []float64{r[0] + dr[0], r[1] + dr[1], r[2] + dr[2]}
	normalise(c1)
	checkClusters(t, again.Clusters(), []Cluster{
		{ID: 1, Count: 2, Centroid: c1, Exemplars: 2},
		{ID: 3, Count: 2, Centroid: []float64{1, 0, 0}, Exemplars: 1},
	})
	if got := norm(again.clusters.clusters[0].sum); math.Abs(got-sum1) > 1e-12 {
		t.Errorf("cluster 1's sum has length %g, want %g as before", got, sum1)
	}
	if m, err := again.Match([]float32{0, 1, 1}, 1); err != nil || m.Name != "alice" {
		t.Errorf("alice in the new space: %+v (%v)", m, err)
	}
	if r, err := again.Identify([]float32{0, 0, 1}, nil, 0); err != nil || r.Cluster.ID != 4 {
		t.Errorf("next cluster %+v, want 4: dropped ids are not reused", r.Cluster)
	}

	// Saved in the new space: opening it again re-embeds nothing.
	emb2 := &meanColour{permute: true}
	if _, problems, err := Open(opts, emb2); err != nil || len(problems) != 0 || emb2.calls.Load() != 0 {
		t.Errorf("reopened in v2: problems %v, err %v, %d embedded; want none", problems, err, emb2.calls.Load())
	}
}

// During a model version swap the old version's process and the new one's
// have the same state directory open: once the new one has re-embedded the
// state into its space, the old one's Save refuses to overwrite it
// (ErrStateTaken) and changes nothing on disk; the new one keeps saving,
// and a process of the old space opened later takes the state back by
// re-embedding it.
func TestSaveRefusesAStateTakenByAnotherSpace(t *testing.T) {
	dir := t.TempDir()
	old := newTestIdentifier(t, Options{StateDir: dir, Space: "m/1", ClusterThreshold: 0.3})
	identify(t, old, uniform(4, colorRGBA(255, 0, 0)), true)
	if err := old.Save(); err != nil {
		t.Fatal(err)
	}

	newer := newTestIdentifier(t, Options{StateDir: dir, Space: "m/2", ClusterThreshold: 0.3})
	taken, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(taken), `"space":"m/2"`) {
		t.Fatalf("the new space did not write the state at Open: %s", taken)
	}

	identify(t, old, uniform(4, colorRGBA(0, 255, 0)), true) // a new cluster in the old space
	err = old.Save()
	if !errors.Is(err, ErrStateTaken) || !strings.Contains(err.Error(), `records space "m/2", this identifier's is "m/1"`) {
		t.Fatalf("the old space's Save: %v, want ErrStateTaken naming both spaces", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, StateFile)); string(after) != string(taken) {
		t.Errorf("the refused Save changed state.json:\n%s\nwas\n%s", after, taken)
	}
	if got := storedImages(t, dir); len(got) != 1 {
		t.Errorf("stored images %v, want only red's: a refused Save writes no image", got)
	}

	identify(t, newer, uniform(4, colorRGBA(0, 0, 255)), true)
	if err := newer.Save(); err != nil {
		t.Errorf("the owner's Save: %v", err)
	}
	back := newTestIdentifier(t, Options{StateDir: dir, Space: "m/1", ClusterThreshold: 0.3})
	if n := len(back.Clusters()); n != 2 {
		t.Errorf("reopened in m/1: %d clusters, want the owner's 2 (red, blue)", n)
	}
	if err := newer.Save(); err != nil { // not dirty: nothing to write
		t.Errorf("a Save with nothing changed: %v", err)
	}
	identify(t, newer, uniform(4, colorRGBA(255, 255, 0)), true)
	if err := newer.Save(); !errors.Is(err, ErrStateTaken) {
		t.Errorf("m/2 after m/1 took the state back: %v, want ErrStateTaken", err)
	}
}

func TestOpenRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no threshold", Options{ClusterThreshold: 0.5, Exemplars: 1}, "threshold: threshold 0"},
		{"a threshold beyond 2", Options{Threshold: 2.1, ClusterThreshold: 0.5, Exemplars: 1}, "threshold 2.1"},
		{"a cluster threshold beyond sqrt2", Options{Threshold: 1, ClusterThreshold: 1.5, Exemplars: 1}, "cluster threshold 1.5"},
		{"no exemplars", Options{Threshold: 1, ClusterThreshold: 0.5}, "exemplars is 0"},
		{"a state directory without a space", Options{Threshold: 1, ClusterThreshold: 0.5, Exemplars: 1, StateDir: "/tmp/x"}, "space is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Open(tc.opts, &meanColour{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
