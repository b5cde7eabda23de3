package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// embedOut is a result's output as the embed plugin publishes it.
type embedOut struct {
	Identity *string  `json:"identity"`
	Distance *float64 `json:"distance"`
	Top      []struct {
		Name      string  `json:"name"`
		Distance  float64 `json:"distance"`
		Threshold float64 `json:"threshold"`
	} `json:"top"`
	Cluster *struct {
		ID  int  `json:"id"`
		New bool `json:"new"`
	} `json:"cluster"`
	Gallery *struct {
		Identities int    `json:"identities"`
		Problems   int    `json:"problems"`
		Error      string `json:"error"`
	} `json:"gallery"`
	Embedding []float64 `json:"embedding"`
	Dim       int       `json:"dim"`
}

// identSet is what ident_eval.py write makes: the gallery folder of the 20
// held-out identities (5 images each), the probes of those and of 10
// distractors in the protocol's order (labels.json), and images of an
// identity in neither gallery (newbie/enrol, newbie/probe).
type identSet struct {
	dir, gallery, probes string
	files                []string // the probes, in order
	truth                map[string]string
}

func writeIdentSet(t *testing.T) identSet {
	t.Helper()
	dir := t.TempDir()
	script(t, "ident_eval.py", "write", dir)
	s := identSet{dir: dir, gallery: filepath.Join(dir, "gallery"), probes: filepath.Join(dir, "probes"), truth: map[string]string{}}
	var labels struct {
		Files []struct{ Image, Identity string } `json:"files"`
	}
	b, err := os.ReadFile(filepath.Join(s.probes, "labels.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &labels); err != nil {
		t.Fatal(err)
	}
	for _, f := range labels.Files {
		s.files = append(s.files, f.Image)
		s.truth[f.Image] = f.Identity
	}
	return s
}

// readAll returns the files of folder dir, in the order given.
func readAll(t *testing.T, dir string, names []string) [][]byte {
	t.Helper()
	out := make([][]byte, len(names))
	for i, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// dropNamed writes each file into dir as a camera would (a hidden name,
// then renamed), in order.
func dropNamed(t *testing.T, dir string, names []string, data [][]byte) {
	t.Helper()
	for i, name := range names {
		if err := os.WriteFile(filepath.Join(dir, "."+name), data[i], 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "."+name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// identFacenet is the trained embedding model's repository and the
// thresholds train_embed.py chose for it on training identities
// (golden/ident_metrics.json): identify at distance <= 0.6852, cluster at
// 0.85 when it was written.
func identFacenet(t *testing.T) (repo string, threshold, clusterThreshold float64) {
	t.Helper()
	repo = models(t)
	path := filepath.Join(repo, "ident_facenet", "1", "golden", "ident_metrics.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the trained ident_facenet is not in EDGEINFER_MODELS (make models-trained installs it): %v", err)
	}
	var m struct {
		Identification struct{ Threshold float64 } `json:"identification"`
		Clustering     struct{ Threshold float64 } `json:"clustering"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Identification.Threshold <= 0 || m.Clustering.Threshold <= 0 {
		t.Fatalf("%s: no thresholds (%v): %s", path, err, b)
	}
	return repo, m.Identification.Threshold, m.Clustering.Threshold
}

// embedResults returns the outputs published by pipeline, in arrival
// order, with the base names of their sources. The results of one
// pipeline must come in the order of their frames.
func embedResults(t *testing.T, w *watcher, pipeline string) ([]string, []embedOut) {
	t.Helper()
	var names []string
	var outs []embedOut
	var last uint64
	for i, r := range w.results(t, pipeline) {
		if r.Task != "embed" || r.Model.Name != "ident_facenet" {
			t.Fatalf("%s: result of task %q, model %q", pipeline, r.Task, r.Model.Name)
		}
		if i > 0 && r.Seq <= last {
			t.Fatalf("%s: result of frame %d came after frame %d's", pipeline, r.Seq, last)
		}
		last = r.Seq
		var o embedOut
		if err := json.Unmarshal(r.Output, &o); err != nil {
			t.Fatalf("%s: output %s: %v", pipeline, r.Output, err)
		}
		if o.Dim != 128 {
			t.Fatalf("%s: %s: dim %d, want 128", pipeline, r.Source, o.Dim)
		}
		names = append(names, filepath.Base(r.Source))
		outs = append(outs, o)
	}
	return names, outs
}

type identScore struct {
	Identification struct {
		Probes     int     `json:"probes"`
		Enrolled   int     `json:"enrolled"`
		ClosedSet  float64 `json:"closed_set_accuracy"`
		OpenSet    float64 `json:"open_set_accuracy"`
		Mismatches int     `json:"mismatches"`
		MaxDistErr float64 `json:"max_distance_error"`
	} `json:"identification"`
	Clustering struct {
		ARI        float64 `json:"ari"`
		Clusters   int     `json:"clusters"`
		Identities int     `json:"identities"`
		Mismatches int     `json:"mismatches"`
		Stable     float64 `json:"stable"`
		Images     int     `json:"images"`
	} `json:"clustering"`
}

// The FaceNet trained on the generated identities (tfmodels/zoo
// train_embed.py, ident_facenet), served by edgeinferd and the embed
// plugin: a gallery folder of the 20 held-out identities (5 images each),
// and their probes and those of 10 distractors (600 in all) dropped into a
// folder. The nearest identity published is right for >= 90% of the
// enrolled probes (scored by ident_eval.py against what identities.py
// drew), and every published identity and distance is what numpy's
// identities.identify decides on the published embeddings of the probes
// and of the gallery images (sent through a second pipeline), at the
// model's trained threshold.
func TestTheTrainedFaceNetNamesHeldOutFacesFromAGalleryFolderAsNumpyDoes(t *testing.T) {
	repo, thr, cthr := identFacenet(t)
	set := writeIdentSet(t)
	var galleryNames []string
	ids, _ := os.ReadDir(set.gallery)
	for _, id := range ids {
		files, _ := os.ReadDir(filepath.Join(set.gallery, id.Name()))
		for _, f := range files {
			galleryNames = append(galleryNames, id.Name()+"/"+f.Name())
		}
	}
	probes, gallery := t.TempDir(), t.TempDir()
	proc, w := run(t, setup{broker: mosquitto.Start(t), repo: repo, sensors: fmt.Sprintf(`
[sensors.probes]
kind = "dir"
path = %q
settle = "50ms"
[sensors.gallery]
kind = "dir"
path = %q
settle = "50ms"
`, probes, gallery), extra: fmt.Sprintf(`
[pipelines.faces]
sensor = "probes"
model = "ident_facenet"
[pipelines.faces.options]
gallery = %q
threshold = %g
cluster_threshold = 0
top_k = 1
embedding = true
[pipelines.plain]
sensor = "gallery"
model = "ident_facenet"
[pipelines.plain.options]
cluster_threshold = 0
embedding = true
`, set.gallery, thr)})
	w.serving(t, proc, "ident_facenet", "faces")
	w.serving(t, proc, "ident_facenet", "plain")
	start := time.Now()
	flat := make([]string, len(galleryNames))
	for i, n := range galleryNames {
		flat[i] = strings.ReplaceAll(n, "/", "_")
	}
	dropNamed(t, gallery, flat, readAll(t, set.gallery, galleryNames))
	dropNamed(t, probes, set.files, readAll(t, set.probes, set.files))
	n := len(set.files) + len(galleryNames)
	waitFor(t, proc, 2*time.Minute, "a result per probe and gallery image", func() bool {
		return len(w.all("faces/result"))+len(w.all("plain/result")) >= n
	})
	t.Logf("%d images embedded in %s", n, time.Since(start).Round(time.Millisecond))

	in := map[string]any{"threshold": thr, "cluster_threshold": cthr}
	names, outs := embedResults(t, w, "plain")
	g := map[string]embedOut{}
	for i, name := range names {
		g[strings.Replace(name, "_", "/", 1)] = outs[i]
	}
	in["gallery"] = g
	names, outs = embedResults(t, w, "faces")
	p := map[string]embedOut{}
	for i, name := range names {
		o := outs[i]
		if o.Gallery == nil || o.Gallery.Identities != 20 || o.Gallery.Problems != 0 || o.Cluster != nil || len(o.Top) != 1 || o.Top[0].Threshold != thr {
			t.Fatalf("%s: %+v, want a gallery of 20 identities without problems, one top, no cluster", name, o)
		}
		p[name] = o
	}
	in["probes"] = p
	var score identScore
	if err := json.Unmarshal(script(t, "ident_eval.py", "score", set.dir, jsonFile(t, "results.json", in)), &score); err != nil {
		t.Fatal(err)
	}
	s := score.Identification
	t.Logf("ident_facenet through the daemon: %d probes (%d enrolled); nearest identity right for %.4f; open-set accuracy at distance <= %g: %.4f; %d decisions differ from numpy's, distances within %.2g",
		s.Probes, s.Enrolled, s.ClosedSet, thr, s.OpenSet, s.Mismatches, s.MaxDistErr)
	if s.ClosedSet < 0.9 {
		t.Errorf("the nearest identity is right for %.4f of the enrolled probes, want >= 0.9", s.ClosedSet)
	}
	if s.Mismatches != 0 || s.MaxDistErr > 1e-12 {
		t.Errorf("%d identities differ from identities.identify's on the published embeddings, distances differ by up to %g", s.Mismatches, s.MaxDistErr)
	}
}

// clusterResult is one result of a clustering pipeline, for
// ident_eval.py.
type clusterResult struct {
	Image  string   `json:"image"`
	Output embedOut `json:"output"`
}

// Strangers through the trained FaceNet: the 600 probes (30 identities, no
// gallery) dropped into a folder of a pipeline with a state directory and
// the model's trained cluster threshold. The published cluster ids are
// exactly identities.online_clusters on the published embeddings, in the
// order the frames came; their adjusted Rand index against the true
// identities is at least 0.8. Then edgeinferd is stopped with SIGTERM and
// started again on the same state directory, and the same images, dropped
// again, continue that clustering exactly (the state saved at exit is the
// one numpy's clustering had reached), and get the ids they had.
func TestStrangersGetNumpysClusterIdsAndKeepThemAcrossARestart(t *testing.T) {
	repo, _, cthr := identFacenet(t)
	set := writeIdentSet(t)
	data := readAll(t, set.probes, set.files)
	broker, state := mosquitto.Start(t), t.TempDir()
	pass := func(k int) []clusterResult {
		inbox := t.TempDir()
		proc, w := run(t, setup{broker: broker, repo: repo, sensors: dirSensor(inbox), extra: fmt.Sprintf(`
[pipelines.strangers]
sensor = "inbox"
model = "ident_facenet"
[pipelines.strangers.options]
state_dir = %q
cluster_threshold = %g
embedding = true
`, state, cthr)})
		w.serving(t, proc, "ident_facenet", "strangers")
		start := time.Now()
		dropNamed(t, inbox, set.files, data)
		waitFor(t, proc, 2*time.Minute, fmt.Sprintf("pass %d: a result per probe", k), func() bool { return len(w.all("strangers/result")) >= len(set.files) })
		t.Logf("pass %d: %d probes clustered in %s", k, len(set.files), time.Since(start).Round(time.Millisecond))
		names, outs := embedResults(t, w, "strangers")
		if !slices.Equal(names, set.files) {
			t.Fatalf("pass %d: the probes came in another order than the files': %v", k, names[:10])
		}
		rs := make([]clusterResult, len(names))
		for i := range names {
			if outs[i].Identity != nil || outs[i].Cluster == nil {
				t.Fatalf("pass %d: %s: %+v, want an unknown with a cluster", k, names[i], outs[i])
			}
			rs[i] = clusterResult{names[i], outs[i]}
		}
		if code := proc.stop(t); code != 0 {
			t.Fatalf("pass %d: edgeinferd exited with %d after SIGTERM", k, code)
		}
		// edgeinferd stops a plugin gracefully (sdk.Process.Stop): the
		// embed plugin's Close saves the clusters of every frame, not
		// only those of its last periodic save (every 5 s).
		if n := savedClusterCount(state); n != k*len(set.files) {
			t.Fatalf("pass %d: the state saved at exit holds %d frames, want all %d", k, n, k*len(set.files))
		}
		return rs
	}
	first := pass(1)
	second := pass(2)

	score := func(passes ...[]clusterResult) identScore {
		var s identScore
		in := map[string]any{"cluster_threshold": cthr, "passes": passes}
		if err := json.Unmarshal(script(t, "ident_eval.py", "score", set.dir, jsonFile(t, "results.json", in)), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	c := score(first).Clustering
	t.Logf("pass 1: %d probes of %d identities in %d clusters at distance <= %g: adjusted Rand index %.4f; %d ids differ from numpy's online_clusters",
		len(first), c.Identities, c.Clusters, cthr, c.ARI, c.Mismatches)
	if c.Mismatches != 0 {
		t.Errorf("%d of %d cluster ids differ from identities.online_clusters on the published embeddings", c.Mismatches, len(first))
	}
	if c.ARI < 0.8 {
		t.Errorf("adjusted Rand index %.4f, want >= 0.8", c.ARI)
	}
	both := score(first, second).Clustering
	t.Logf("pass 2, after a restart on the same state: %d ids differ from numpy's clustering continued over both passes; %.4f of the images got the id they had in pass 1",
		both.Mismatches, both.Stable)
	if both.Mismatches != 0 {
		t.Errorf("after the restart, %d cluster ids differ from numpy's online_clusters continued over both passes", both.Mismatches)
	}
	for _, r := range second {
		if r.Output.Cluster.ID > c.Clusters {
			t.Errorf("after the restart, %s started cluster %d: pass 1 left %d clusters", r.Image, r.Output.Cluster.ID, c.Clusters)
			break
		}
	}
}

// savedClusterCount is the number of frames the clusters of the state
// saved in dir hold (0 without a state).
func savedClusterCount(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return 0
	}
	var st struct {
		Clusters []struct{ Count int } `json:"clusters"`
	}
	if json.Unmarshal(b, &st) != nil {
		return 0
	}
	n := 0
	for _, c := range st.Clusters {
		n += c.Count
	}
	return n
}

// embedCommand publishes a command (any fields) on <prefix>/cmd and returns
// its reply.
func embedCommand(t *testing.T, p *proc, w *watcher, c map[string]any) payload.Reply {
	t.Helper()
	id := fmt.Sprintf("%v-%d", c["command"], time.Now().UnixNano())
	c["id"] = id
	b, _ := json.Marshal(c)
	w.publish(t, prefixOf(t)+"/cmd", b)
	var reply payload.Reply
	waitFor(t, p, 60*time.Second, "the reply to command "+id, func() bool {
		for _, m := range w.all("cmd/reply") {
			var r payload.Reply
			if json.Unmarshal(m.payload, &r) == nil && r.ID == id {
				reply = r
				return true
			}
		}
		return false
	})
	return reply
}

// Commands over Mosquitto: with [commands] enabled, five images of an
// identity in no gallery are enrolled as "newbie" by enrol commands on
// <prefix>/cmd naming the pipeline; each reply says so, and the probes of
// that identity, which were not "newbie" before, are "newbie" after. After
// a restart on the same state directory they still are. Commands with a
// missing or bad field, or forgetting a gallery identity, get ok = false
// with the reason.
func TestAFaceEnrolledByAnMQTTCommandIsRecognisedAndBadCommandsAreRefused(t *testing.T) {
	repo, thr, cthr := identFacenet(t)
	set := writeIdentSet(t)
	enrol := readAll(t, filepath.Join(set.dir, "newbie", "enrol"), []string{"000.png", "001.png", "002.png", "003.png", "004.png"})
	probes := readAll(t, filepath.Join(set.dir, "newbie", "probe"), []string{"000.png", "001.png", "002.png", "003.png", "004.png"})
	broker, state := mosquitto.Start(t), t.TempDir()
	daemon := func() (*proc, *watcher, string) {
		inbox := t.TempDir()
		proc, w := run(t, setup{broker: broker, repo: repo, sensors: dirSensor(inbox), extra: fmt.Sprintf(`
[commands]
enabled = true
[pipelines.door]
sensor = "inbox"
model = "ident_facenet"
[pipelines.door.options]
gallery = %q
state_dir = %q
threshold = %g
cluster_threshold = %g
`, set.gallery, state, thr, cthr)})
		w.serving(t, proc, "ident_facenet", "door")
		return proc, w, inbox
	}
	// who drops the newbie's probes (named by tag) and returns who each is.
	who := func(proc *proc, w *watcher, inbox, tag string) []string {
		t.Helper()
		from := len(w.all("door/result"))
		dropImages(t, inbox, tag+"-%d.png", probes)
		waitFor(t, proc, 60*time.Second, tag+": a result per probe", func() bool { return len(w.all("door/result")) >= from+len(probes) })
		_, outs := embedResults(t, w, "door")
		var got []string
		for _, o := range outs[from:] {
			if o.Identity == nil {
				got = append(got, "")
			} else {
				got = append(got, *o.Identity)
			}
		}
		return got
	}
	count := func(names []string, name string) int {
		n := 0
		for _, s := range names {
			if s == name {
				n++
			}
		}
		return n
	}

	proc, w, inbox := daemon()
	before := who(proc, w, inbox, "before")
	if count(before, "newbie") != 0 {
		t.Fatalf("before any enrolment: %q", before)
	}
	for i, b := range enrol {
		r := embedCommand(t, proc, w, map[string]any{"pipeline": "door", "command": "enrol", "name": "newbie", "image": base64.StdEncoding.EncodeToString(b)})
		if !r.OK || !strings.Contains(r.Message, "newbie enrolled") {
			t.Fatalf("enrol image %d: %+v", i, r)
		}
	}
	after := who(proc, w, inbox, "after")
	t.Logf("the newbie's 5 probes: before enrolment %q; after enrolling 5 images over MQTT %q", before, after)
	if count(after, "newbie") < 4 {
		t.Errorf("after enrolling newbie, its probes are %q: want newbie for at least 4 of 5", after)
	}

	for _, tc := range []struct {
		cmd  map[string]any
		want string
	}{
		{map[string]any{"pipeline": "door", "command": "enrol", "name": "x"}, `field "image" is missing`},
		{map[string]any{"pipeline": "door", "command": "enrol", "name": "x", "image": "bm90IGFuIGltYWdl"}, "image"},
		{map[string]any{"pipeline": "door", "command": "name_cluster", "cluster": 0, "name": "x"}, `field "cluster"`},
		{map[string]any{"pipeline": "door", "command": "forget", "name": "id1000"}, "folder"},
		{map[string]any{"pipeline": "door", "command": "explode"}, "enrol, name_cluster, forget"},
		{map[string]any{"pipeline": "nowhere", "command": "forget", "name": "newbie"}, `no pipeline "nowhere"`},
	} {
		r := embedCommand(t, proc, w, tc.cmd)
		t.Logf("%v %v: ok=%v %s", tc.cmd["command"], tc.cmd["name"], r.OK, r.Error)
		if r.OK || !strings.Contains(r.Error, tc.want) {
			t.Errorf("command %v: %+v, want ok=false with %q", tc.cmd, r, tc.want)
		}
	}
	if code := proc.stop(t); code != 0 {
		t.Fatalf("edgeinferd exited with %d after SIGTERM", code)
	}

	proc, w, inbox = daemon()
	restarted := who(proc, w, inbox, "restarted")
	if !slices.Equal(restarted, after) {
		t.Errorf("after a restart on the same state, the newbie's probes are %q, were %q", restarted, after)
	}
}

// uniformPNG is a size x size image of one colour.
func uniformPNG(t *testing.T, size int, c color.RGBA) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A gallery folder with files that cannot be used (a truncated PNG, a text
// file named .png, an image of one colour, an identity folder holding
// nothing usable, a file at its top), and an empty one: each pipeline's
// results say how many identities were enrolled and how many problems were
// met, frames (a face, blank frames) still get results and match no one,
// and no process dies.
func TestGalleryProblemsAndAnEmptyGalleryAreReportedAndFramesStillFlow(t *testing.T) {
	repo, thr, _ := identFacenet(t)
	set := writeIdentSet(t)
	bad, empty := t.TempDir(), t.TempDir()
	good := readAll(t, filepath.Join(set.gallery, "id1000"), []string{"000.png", "001.png", "002.png", "003.png", "004.png"})
	for _, d := range []string{"id1000", "id1001"} {
		if err := os.Mkdir(filepath.Join(bad, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for path, b := range map[string][]byte{
		"id1000/000.png":    good[0],
		"id1000/001.png":    good[1],
		"id1000/002.png":    good[2],
		"id1000/broken.png": good[3][:len(good[3])/2],
		"id1001/notes.png":  []byte("not an image\n"),
		"id1001/blank.png":  uniformPNG(t, 64, color.RGBA{128, 128, 128, 255}),
		"stray.png":         good[4],
	} {
		if err := os.WriteFile(filepath.Join(bad, path), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	inbox := t.TempDir()
	proc, w := run(t, setup{broker: mosquitto.Start(t), repo: repo, sensors: dirSensor(inbox), extra: fmt.Sprintf(`
[pipelines.bad]
sensor = "inbox"
model = "ident_facenet"
[pipelines.bad.options]
gallery = %q
threshold = %g
[pipelines.empty]
sensor = "inbox"
model = "ident_facenet"
[pipelines.empty.options]
gallery = %q
threshold = %g
`, bad, thr, empty, thr)})
	vs := w.serving(t, proc, "ident_facenet", "bad")
	w.serving(t, proc, "ident_facenet", "empty")
	frames := [][]byte{good[0], uniformPNG(t, 64, color.RGBA{0, 0, 0, 255}), uniformPNG(t, 64, color.RGBA{200, 30, 30, 255})}
	dropImages(t, inbox, "frame-%d.png", frames)
	waitFor(t, proc, 60*time.Second, "a result per frame and pipeline", func() bool {
		return len(w.all("bad/result")) >= len(frames) && len(w.all("empty/result")) >= len(frames)
	})
	_, outs := embedResults(t, w, "bad")
	g := outs[0].Gallery
	if g == nil {
		t.Fatalf("no gallery in %+v", outs[0])
	}
	t.Logf("the bad gallery: %+v; frames: one of id1000's gallery images is %s, blank frames are %s and %s", *g, nameOf(outs[0]), nameOf(outs[1]), nameOf(outs[2]))
	for _, o := range outs {
		if *o.Gallery != *g {
			t.Errorf("the gallery changed between frames: %+v, then %+v", *g, *o.Gallery)
		}
	}
	if g.Problems != 5 || g.Identities != 1 {
		t.Errorf("gallery %+v, want id1000 enrolled and 5 problems (broken.png, notes.png, blank.png, id1001 with no usable image, stray.png at the top)", *g)
	}
	for _, o := range outs[1:] {
		if o.Identity != nil {
			t.Errorf("a blank frame matched %s", *o.Identity)
		}
	}
	if nameOf(outs[0]) != "id1000" || *outs[0].Distance > 1e-6 {
		t.Errorf("id1000's own gallery image is %s at %v against the bad gallery", nameOf(outs[0]), outs[0].Distance)
	}
	_, outs = embedResults(t, w, "empty")
	for _, o := range outs {
		if o.Gallery == nil || o.Gallery.Identities != 0 || o.Gallery.Problems != 1 || o.Identity != nil || len(o.Top) != 0 {
			t.Errorf("against an empty gallery: %+v, want no identity and a gallery of 0 identities with 1 problem", o)
		}
	}
	t.Logf("the empty gallery: %+v", *outs[0].Gallery)
	if st, _ := w.model(t, "ident_facenet"); st.Versions[st.Serving].Restarts != 0 || st.Versions[st.Serving].PID != vs.PID {
		t.Errorf("the plugin was restarted: %+v", st.Versions[st.Serving])
	}
	if failed, _ := os.ReadDir(filepath.Join(inbox, "failed")); len(failed) > 0 {
		t.Errorf("%d frames failed", len(failed))
	}
}

func nameOf(o embedOut) string {
	if o.Identity == nil {
		return "unknown"
	}
	return *o.Identity
}
