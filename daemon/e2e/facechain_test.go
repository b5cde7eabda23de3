package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/crop"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// faceScenes is scenes/labels.json as ident_eval.py write DIR PER_ID SCENES
// writes it (tfmodels/zoo/facescenes.py write_dir).
type faceScenes struct {
	Size   int     `json:"size"`
	Margin float64 `json:"margin"` // the crop margin that puts a head at the embedding's training scale
	Scenes []struct {
		Image string `json:"image"`
		Heads []struct {
			Identity string     `json:"identity"`
			Box      [4]float64 `json:"box"` // the head disc's x1, y1, x2, y2
		} `json:"heads"`
		// Unlabelled objects that are not faces: "disc" (a plain head),
		// "partial" (a disc with one or two face parts), "square", "triangle".
		Distractors []struct {
			Kind string     `json:"kind"`
			Box  [4]float64 `json:"box"` // the outline's x1, y1, x2, y2
		} `json:"distractors"`
	} `json:"scenes"`
}

// maxFalseFaceCrops bounds the crops TestEveryFaceInHeldOutScenesIsFoundAndNamedThroughDetectCropEmbed
// may take from no face in its 50 scenes. train_facedet.py measured 12
// detections scoring >= 0.5 on no face in 300 held-out scenes (0.04 a scene,
// each on a distractor: 11 of the 42 discs with two face parts, 1 of 118
// triangles, no plain disc); the 50 scenes here hold 14 partial faces and
// gave 4, each on one of them. The same recipe trained on scenes of other
// training identities (identities.TRAIN_IDS 0..999 instead of 0..299) gave
// 19 in 300 scenes and 6 here (the detector now trained). 8 (0.16 a scene) leaves room for
// such retraining, while the same detector trained on scenes without
// distractors took 34 crops here (and named 0.926 of the faces right: the
// accuracy alone passed it), and one that takes every disc for a face would
// take at least 38 (24 plain discs and 14 partial faces).
const maxFalseFaceCrops = 8

// faceDetector is the trained face detector's repository and what
// train_facedet.py measured on 300 held-out scenes
// (golden/facedet_metrics.json): the score threshold it reports recall at,
// the recall there, and AP@0.5.
func faceDetector(t *testing.T) (repo string, minScore, recall, ap float64) {
	t.Helper()
	repo = models(t)
	path := filepath.Join(repo, "faces_faster_rcnn", "1", "golden", "facedet_metrics.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the trained faces_faster_rcnn is not in EDGEINFER_MODELS (make models-trained installs it): %v", err)
	}
	var m struct {
		ScoreThreshold float64 `json:"score_threshold"`
		Recall         float64 `json:"recall"`
		MAP50          float64 `json:"map50"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.ScoreThreshold <= 0 {
		t.Fatalf("%s: no score threshold (%v): %s", path, err, b)
	}
	return repo, m.ScoreThreshold, m.Recall, m.MAP50
}

// releases records, with one poller, when each input file of a dir sensor
// reached done/ and when the last result naming it (its own, or one of
// its crops': source "<file>#<pipeline>[i]") came, so the two compare.
type releases struct {
	mu             sync.Mutex
	doneAt, lastAt map[string]time.Time
	stop, polled   chan struct{}
}

func watchReleases(w *watcher, inbox string, pipelines ...string) *releases {
	l := &releases{doneAt: map[string]time.Time{}, lastAt: map[string]time.Time{}, stop: make(chan struct{}), polled: make(chan struct{})}
	done := filepath.Join(inbox, "done")
	go func() {
		defer close(l.polled)
		seen := map[string]int{}
		for {
			now := time.Now()
			l.mu.Lock()
			for _, p := range pipelines {
				ms := w.all(p + "/result")
				for _, m := range ms[seen[p]:] {
					var r payload.Result
					json.Unmarshal(m.payload, &r)
					l.lastAt[filepath.Base(strings.SplitN(r.Source, "#", 2)[0])] = now
				}
				seen[p] = len(ms)
			}
			entries, _ := os.ReadDir(done)
			for _, e := range entries {
				if _, ok := l.doneAt[e.Name()]; !ok {
					l.doneAt[e.Name()] = now
				}
			}
			l.mu.Unlock()
			select {
			case <-l.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return l
}

// done is the number of files seen in done/.
func (l *releases) done() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.doneAt)
}

// check stops the poller and fails the test for each file that reached
// done/ before its last result (beyond slack: the broker forwarding to the
// watcher, and polling).
func (l *releases) check(t *testing.T, slack time.Duration) {
	t.Helper()
	close(l.stop)
	<-l.polled
	for file, at := range l.doneAt {
		if early := l.lastAt[file].Sub(at); early > slack {
			t.Errorf("%s reached done/ %s before its last result", file, early)
		}
	}
}

// Held-out scenes (tfmodels/zoo facescenes.py: 128x128, 1-3 faces of the 20
// identities no model trained on, among 0-3 distractors: plain discs of a
// head's size and colours, discs with one or two face parts, squares and
// triangles) dropped into a folder go through the
// trained face detector (faces_faster_rcnn, train_facedet.py), and each
// face it finds is cropped (the margin that puts a head at the scale
// ident_facenet trained on) and named by ident_facenet against the gallery
// folder of those identities, all served by edgeinferd over Mosquitto.
// Every scene gets its detector result and every crop the table chooses
// (as daemon/crop chooses them from the published results) its embed
// result, no file reaches done/ before them, nothing is a bad input; and
// at least 90% of the faces drawn are found (a crop's origin box with
// IoU >= 0.5) and named right (the nearest gallery identity, as the embed
// test scores identification, at the model's trained threshold): a face
// the detector misses counts as wrong. A crop matched to no face is a false
// positive (logged with the distractor it covers, if any, and what it was
// named; it never counts as a right name): at most maxFalseFaceCrops.
func TestEveryFaceInHeldOutScenesIsFoundAndNamedThroughDetectCropEmbed(t *testing.T) {
	const n = 50
	repo, minScore, pyRecall, pyAP := faceDetector(t)
	_, thr, _ := identFacenet(t)
	dir := t.TempDir()
	script(t, "ident_eval.py", "write", dir, "0", strconv.Itoa(n))
	var set faceScenes
	b, err := os.ReadFile(filepath.Join(dir, "scenes", "labels.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &set); err != nil || len(set.Scenes) != n || set.Margin <= 0 {
		t.Fatalf("scenes/labels.json: %v: %d scenes, margin %g", err, len(set.Scenes), set.Margin)
	}
	kinds := map[string]int{}
	for _, s := range set.Scenes {
		for _, d := range s.Distractors {
			kinds[d.Kind]++
		}
	}
	if kinds["disc"] == 0 || kinds["partial"] == 0 || kinds["disc"]+kinds["partial"]+kinds["square"]+kinds["triangle"] < n {
		t.Fatalf("scenes/labels.json: distractors %v, want at least one a scene, plain discs and partial faces among them", kinds)
	}
	files := make([]string, n)
	for i, s := range set.Scenes {
		files[i] = s.Image
	}
	cfg := crop.Config{MinScore: minScore, Margin: set.Margin, MinSize: 16, MaxCrops: 10}
	inbox := t.TempDir()
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: repo, extra: fmt.Sprintf(`
[pipelines.faces]
sensor = "inbox"
model = "faces_faster_rcnn"
[pipelines.who]
from = "faces"
model = "ident_facenet"
[pipelines.who.options]
gallery = %q
threshold = %g
cluster_threshold = 0
top_k = 1
[pipelines.who.crop]
min_score = %g
margin = %g
min_size = %d
max_crops = %d
`, filepath.Join(dir, "gallery"), thr, cfg.MinScore, cfg.Margin, cfg.MinSize, cfg.MaxCrops)})
	w.serving(t, proc, "faces_faster_rcnn", "faces")
	w.serving(t, proc, "ident_facenet", "who")
	rel := watchReleases(w, inbox, "faces", "who")
	start := time.Now()
	dropNamed(t, inbox, files, readAll(t, filepath.Join(dir, "scenes"), files))

	// The crops each upstream result should have given.
	want := map[string][]crop.Crop{}
	wanted := func() int {
		total := 0
		for _, r := range w.results(t, "faces") {
			ch, err := crop.Choose(cfg, r.Output, r.Width, r.Height)
			if err != nil {
				t.Fatal(err)
			}
			want[filepath.Base(r.Source)] = ch.Crops
			total += len(ch.Crops)
		}
		return total
	}
	waitFor(t, proc, 5*time.Minute, "every scene in done/ and a result per chosen detection", func() bool {
		return rel.done() == n && len(w.all("faces/result")) == n && len(w.all("who/result")) == wanted()
	})
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond) // nothing more comes
	rel.check(t, 100*time.Millisecond)
	total := wanted()
	if got := len(w.all("who/result")); got != total || len(w.all("faces/result")) != n || len(want) != n {
		t.Fatalf("%d embed results for %d chosen detections; %d detector results for %d scenes (%d sources)", got, total, len(w.all("faces/result")), n, len(want))
	}
	if failed, _ := os.ReadDir(filepath.Join(inbox, "failed")); len(failed) > 0 {
		t.Fatalf("%d inputs failed", len(failed))
	}
	if bad := w.eventsOf(t, "bad_input"); len(bad) > 0 {
		t.Fatalf("%d bad inputs, the first: %+v", len(bad), bad[0])
	}

	// Each crop result is one chosen detection's, once; keep its origin
	// box and what it was named.
	type named struct {
		box        [4]float64
		top, ident string
	}
	crops := map[string][]named{}
	got := map[string]map[int]bool{}
	for _, r := range w.results(t, "who") {
		o := r.Origin
		if o == nil || o.Pipeline != "faces" || o.Sensor != "inbox" {
			t.Fatalf("crop result %s without the upstream's origin: %+v", r.Source, o)
		}
		file := filepath.Base(o.Source)
		var c *crop.Crop
		for i := range want[file] {
			if want[file][i].Index == o.Detection {
				c = &want[file][i]
			}
		}
		if c == nil || got[file][o.Detection] || o.Box != c.Det.Box || o.Label != "face" || o.Crop != c.Rect ||
			r.Width != c.Rect.Dx() || r.Height != c.Rect.Dy() || r.Source != fmt.Sprintf("%s#faces[%d]", o.Source, o.Detection) {
			t.Fatalf("crop result %s (%dx%d), origin %+v: not one chosen detection of %s's result once (%+v)", r.Source, r.Width, r.Height, o, file, want[file])
		}
		if got[file] == nil {
			got[file] = map[int]bool{}
		}
		got[file][o.Detection] = true
		if r.Task != "embed" || r.Model.Name != "ident_facenet" {
			t.Fatalf("%s: result of task %q, model %q", r.Source, r.Task, r.Model.Name)
		}
		var out embedOut
		if err := json.Unmarshal(r.Output, &out); err != nil {
			t.Fatalf("%s: output %s: %v", r.Source, r.Output, err)
		}
		if out.Gallery == nil || out.Gallery.Identities != 20 || out.Gallery.Problems != 0 || len(out.Top) != 1 {
			t.Fatalf("%s: %+v, want a gallery of 20 identities without problems and one top", r.Source, out)
		}
		crops[file] = append(crops[file], named{[4]float64{o.Box.X1, o.Box.Y1, o.Box.X2, o.Box.Y2}, out.Top[0].Name, nameOf(out)})
	}

	// Each face drawn: the crop whose box overlaps it most, if IoU >= 0.5.
	heads, found, right, accepted, matchedCrops, falseNamed := 0, 0, 0, 0, 0, 0
	falseOn := map[string]int{} // false-positive crops by the distractor kind under them ("nothing": none)
	for _, s := range set.Scenes {
		used := map[int]bool{}
		for _, h := range s.Heads {
			heads++
			best, bestIoU := -1, 0.5
			for i, c := range crops[s.Image] {
				if v := iou(c.box, h.Box); v >= bestIoU && !used[i] {
					best, bestIoU = i, v
				}
			}
			if best < 0 {
				t.Logf("%s: %s at %v: no crop", s.Image, h.Identity, h.Box)
				continue
			}
			used[best] = true
			found++
			c := crops[s.Image][best]
			if c.top == h.Identity {
				right++
			} else {
				t.Logf("%s: %s named %s", s.Image, h.Identity, c.top)
			}
			if c.ident == h.Identity {
				accepted++
			}
		}
		matchedCrops += len(used)
		// The crops left: false positives, on the distractor they overlap
		// most (IoU >= 0.5), or on nothing drawn.
		for i, c := range crops[s.Image] {
			if used[i] {
				continue
			}
			kind, on, best := "nothing", "nothing drawn", 0.5
			for _, d := range s.Distractors {
				if v := iou(c.box, d.Box); v >= best {
					kind, on, best = d.Kind, fmt.Sprintf("a %s distractor at %v (IoU %.2f)", d.Kind, d.Box, v), v
				}
			}
			falseOn[kind]++
			if c.ident != "unknown" {
				falseNamed++
			}
			t.Logf("%s: a crop of no face, box %v on %s: named %s (within the threshold: %s)", s.Image, c.box, on, c.top, c.ident)
		}
	}
	acc := float64(right) / float64(heads)
	falseCrops := total - matchedCrops
	t.Logf("%d scenes, %d faces, %d distractors %v, %d crops (%d on no face: %v, %d of them given a gallery identity) in %s; faces found %d (%.4f; train_facedet.py: recall %.4f at score >= %g, AP@0.5 %.4f), named right %d: %.4f; within the threshold %g as well: %.4f",
		n, heads, kinds["disc"]+kinds["partial"]+kinds["square"]+kinds["triangle"], kinds, total, falseCrops, falseOn, falseNamed,
		elapsed.Round(time.Millisecond), found, float64(found)/float64(heads), pyRecall, minScore, pyAP,
		right, acc, thr, float64(accepted)/float64(heads))
	if acc < 0.9 {
		t.Errorf("%.4f of the faces found and named right, want >= 0.9", acc)
	}
	if falseCrops > maxFalseFaceCrops {
		t.Errorf("%d crops of no face (%v), want at most %d", falseCrops, falseOn, maxFalseFaceCrops)
	}
}
