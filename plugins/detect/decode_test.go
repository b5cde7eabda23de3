package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
	"github.com/edgeinfer/edgeinfer/plugins/common/imageprep"
	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// decodeCase is one case of testdata/cases (testdata/README.md): raw model
// outputs and what the numpy reference (tfmodels/zoo/detect_ref.py) makes
// of them.
type decodeCase struct {
	Kind   string `json:"kind"`
	Source struct {
		Width  int `json:"width"`
		Height int `json:"height"`
	} `json:"source"`
	Input struct {
		Width  int    `json:"width"`
		Height int    `json:"height"`
		Resize string `json:"resize"`
	} `json:"input"`
	Labels   int             `json:"labels"`
	Output   map[string]any  `json:"output"` // edgeinfer.toml's [output] keys
	Options  json.RawMessage `json:"options"`
	Expected []struct {
		Class int        `json:"class"`
		Score float64    `json:"score"`
		Box   [4]float64 `json:"box"`
		Mask  *masks.RLE `json:"mask"`
	} `json:"expected"`
}

var caseTasks = map[string]string{
	"yolo": manifest.TaskDetectYOLO, "odapi": manifest.TaskDetectRCNN,
	"rows": manifest.TaskDetectRows, "anchorfree": manifest.TaskDetectAnchorFree,
}

// casesDir holds the cases make writes (plugins/detect/testdata/make_cases.py).
func casesDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("testdata", "cases")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("%s missing: run make test (it runs testdata/make_cases.py): %v", dir, err)
	}
	return dir
}

// runCase decodes a case's raw outputs as the plugin does a frame's.
func runCase(t *testing.T, dir string, c decodeCase) []Detection {
	t.Helper()
	labels := make([]string, c.Labels)
	for i := range labels {
		labels[i] = string(rune('a' + i%26))
	}
	// The [output] table through TOML, so its keys are the manifest's.
	for k, v := range c.Output { // JSON numbers are float64; TOML keeps integers apart
		if f, ok := v.(float64); ok && f == math.Trunc(f) {
			c.Output[k] = int64(f)
		}
		if l, ok := v.([]any); ok {
			for i, e := range l {
				if f, ok := e.(float64); ok && f == math.Trunc(f) {
					l[i] = int64(f)
				}
			}
		}
		if v == nil {
			delete(c.Output, k)
		}
	}
	var tb bytes.Buffer
	if err := toml.NewEncoder(&tb).Encode(c.Output); err != nil {
		t.Fatal(err)
	}
	var out manifest.Output
	if _, err := toml.Decode(tb.String(), &out); err != nil {
		t.Fatalf("output table: %v\n%s", err, tb.String())
	}
	man := manifest.Manifest{Task: caseTasks[c.Kind], Labels: labels, Output: out}
	man.Input.Resize = c.Input.Resize
	man.Input.Width, man.Input.Height = c.Input.Width, c.Input.Height
	// The reference's options are JSON in the plugin's own option names;
	// classes come as indices.
	var raw map[string]any
	if err := json.Unmarshal(c.Options, &raw); err != nil {
		t.Fatal(err)
	}
	if cl, ok := raw["classes"].([]any); ok {
		names := make([]string, len(cl))
		for i, v := range cl {
			names[i] = labels[int(v.(float64))]
		}
		raw["classes"] = names
	} else {
		delete(raw, "classes")
	}
	opts, _ := json.Marshal(raw)
	o, err := parseOptions(opts, man)
	if err != nil {
		t.Fatalf("options %s: %v", opts, err)
	}
	dec, err := newDecoder(man, c.Input.Width, c.Input.Height)
	if err != nil {
		t.Fatal(err)
	}
	var outs []tensor
	for _, key := range dec.outputs() {
		a, err := npy.Read(filepath.Join(dir, "output_"+key+".npy"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := a.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, tensor{data: v, shape: a.Shape})
	}
	cands, err := dec.decode(outs, o)
	if err != nil {
		t.Fatal(err)
	}
	tr := imageprep.Stretch(c.Source.Width, c.Source.Height, c.Input.Width, c.Input.Height)
	if c.Input.Resize == "letterbox" {
		tr = imageprep.LetterboxTransform(c.Source.Width, c.Source.Height, c.Input.Width, c.Input.Height)
	}
	var got []Detection
	for _, k := range postprocess(cands, tr, c.Source.Width, c.Source.Height, o, dec.nms()) {
		d := Detection{Class: k.Class, Score: float32(k.Score), Box: Box{k.Box.X1, k.Box.Y1, k.Box.X2, k.Box.Y2}}
		if k.mask >= 0 && out.Masks != "" {
			m := outs[len(outs)-1]
			mh, mw := int(m.shape[2]), int(m.shape[3])
			px, _ := masks.Paste(m.data[k.mask*mh*mw:(k.mask+1)*mh*mw], mw, mh, k.unclipped, c.Source.Width, c.Source.Height, o.MaskThreshold)
			rle := masks.Encode(px, c.Source.Width, c.Source.Height)
			d.Mask = &rle
		}
		got = append(got, d)
	}
	return got
}

// Every decode kind, on the raw outputs of real model runs, gives what the
// independent numpy reference gives: the same detections in the same
// order, boxes with IoU >= 0.999, scores within 1e-5, masks with IoU >= 0.99.
func TestDecodeEqualsTheNumpyReference(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(casesDir(t), "*", "case.json"))
	perKind := map[string]int{}
	for _, p := range dirs {
		dir := filepath.Dir(p)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var c decodeCase
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			got := runCase(t, dir, c)
			if len(got) != len(c.Expected) {
				t.Fatalf("%d detections, the reference %d", len(got), len(c.Expected))
			}
			for i, e := range c.Expected {
				g := got[i]
				eb := boxes.Box{X1: e.Box[0], Y1: e.Box[1], X2: e.Box[2], Y2: e.Box[3]}
				gb := boxes.Box{X1: g.Box.X1, Y1: g.Box.Y1, X2: g.Box.X2, Y2: g.Box.Y2}
				iou := boxes.IoU(eb, gb)
				if eb.Area() == 0 && gb.Area() == 0 { // clipped flat: IoU says nothing, the corners do
					iou = 1
					for j, v := range []float64{gb.X1, gb.Y1, gb.X2, gb.Y2} {
						if math.Abs(v-e.Box[j]) > 1e-6 {
							iou = 0
						}
					}
				}
				if g.Class != e.Class || math.Abs(float64(g.Score)-e.Score) > 1e-5 || iou < 0.999 {
					t.Fatalf("detection %d: class %d score %g box %v; reference class %d score %g box %v (IoU %.5f)",
						i, g.Class, g.Score, g.Box, e.Class, e.Score, e.Box, iou)
				}
				if (e.Mask != nil) != (g.Mask != nil) {
					t.Fatalf("detection %d: mask %v, reference %v", i, g.Mask != nil, e.Mask != nil)
				}
				if e.Mask != nil {
					if miou := maskIoU(t, *g.Mask, *e.Mask); miou < 0.99 {
						t.Fatalf("detection %d: mask IoU %.4f with the reference's", i, miou)
					}
				}
			}
			perKind[c.Kind]++
		})
	}
	for kind := range caseTasks {
		if perKind[kind] < 20 {
			t.Errorf("%d passing cases of kind %s, want >= 20", perKind[kind], kind)
		}
	}
}

func maskIoU(t *testing.T, a, b masks.RLE) float64 {
	t.Helper()
	ma, err := masks.Decode(a)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := masks.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != b.Size {
		return 0
	}
	inter, union := 0, 0
	for i := range ma {
		if ma[i] && mb[i] {
			inter++
		}
		if ma[i] || mb[i] {
			union++
		}
	}
	if union == 0 {
		return 1
	}
	return float64(inter) / float64(union)
}
