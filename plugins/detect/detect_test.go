package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/plugins/common/imageprep"
	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin/tfplugintest"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

const testPipeline = "p"

func load(t *testing.T, dir, options string) *detector {
	t.Helper()
	d := newDetector()
	t.Cleanup(func() { d.Close() })
	if _, err := d.Load(context.Background(), sdk.LoadRequest{ModelDir: dir, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	if err := d.Configure(context.Background(), map[string]json.RawMessage{testPipeline: json.RawMessage(options)}); err != nil {
		t.Fatal(err)
	}
	return d
}

func randomFrame(w, h int, seed uint64) sdk.Frame {
	r := rand.New(rand.NewPCG(seed, 1))
	rgb := make([]byte, w*h*3)
	for i := range rgb {
		rgb[i] = byte(r.IntN(256))
	}
	return sdk.Frame{Pipeline: testPipeline, Width: w, Height: h, RGB: rgb}
}

func infer(t *testing.T, d *detector, f sdk.Frame) output {
	t.Helper()
	return tfplugintest.Infer[output](t, d, f)
}

// Every zoo detector loads, validates its golden samples, and publishes
// boxes inside the frame, sorted by score, no more than max_detections,
// with valid labels; Mask R-CNN's masks decode to the frame's size and lie
// in their boxes.
func TestZooDetectorsGiveBoxesInsideTheFrame(t *testing.T) {
	for _, name := range []string{"yolov3", "faster_rcnn", "mask_rcnn", "anchorfree"} {
		t.Run(name, func(t *testing.T) {
			d := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", name), `{"score_threshold": 0.05, "max_detections": 7}`)
			if v, err := d.Validate(context.Background()); err != nil || v.Samples == 0 {
				t.Fatalf("validate: %+v %v", v, err)
			}
			for i, sz := range [][2]int{{640, 480}, {200, 333}, {d.Man.Input.Width, d.Man.Input.Height}} {
				out := infer(t, d, randomFrame(sz[0], sz[1], uint64(i)))
				if len(out.Detections) > 7 || out.Candidates < len(out.Detections) {
					t.Fatalf("%d detections of %d candidates", len(out.Detections), out.Candidates)
				}
				for j, det := range out.Detections {
					b := det.Box
					if b.X1 < 0 || b.Y1 < 0 || b.X2 > float64(sz[0]) || b.Y2 > float64(sz[1]) || b.X2 < b.X1 || b.Y2 < b.Y1 {
						t.Fatalf("box %+v outside the %dx%d frame", b, sz[0], sz[1])
					}
					if det.Label != d.Man.Labels[det.Class] || det.Score < 0.05 || (j > 0 && det.Score > out.Detections[j-1].Score) {
						t.Fatalf("detection %d: %+v", j, det)
					}
					if det.Mask != nil {
						m, err := masks.Decode(*det.Mask)
						if err != nil || det.Mask.Size != [2]int{sz[1], sz[0]} {
							t.Fatalf("mask %+v: %v", det.Mask.Size, err)
						}
						for p, on := range m {
							x, y := float64(p%sz[0])+0.5, float64(p/sz[0])+0.5
							if on && (x < b.X1 || x > b.X2 || y < b.Y1 || y > b.Y2) {
								t.Fatalf("mask pixel (%g, %g) outside its box %+v", x, y, b)
							}
						}
					}
				}
				if name == "mask_rcnn" && len(out.Detections) > 0 && out.Detections[0].Mask == nil {
					t.Fatal("mask_rcnn published no mask")
				}
			}
		})
	}
}

// With mask_png, Mask R-CNN's result comes with a PNG of the frame's size
// whose pixel is i + 1 where detection i's mask is on (the best detection
// on top) and 0 elsewhere: the published RLE masks, painted.
func TestMaskPNGPaintsThePublishedMasks(t *testing.T) {
	d := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "mask_rcnn"), `{"score_threshold": 0.05, "mask_png": true}`)
	painted := 0
	for i, sz := range [][2]int{{640, 480}, {200, 333}} {
		res, err := d.Infer(context.Background(), randomFrame(sz[0], sz[1], uint64(i)))
		if err != nil {
			t.Fatal(err)
		}
		var out output
		if err := json.Unmarshal(res.Output, &out); err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(res.Images["mask"]))
		if err != nil {
			t.Fatalf("images %d: %v", len(res.Images), err)
		}
		p := img.(*image.Paletted)
		want := make([]uint8, sz[0]*sz[1])
		for j := len(out.Detections) - 1; j >= 0; j-- {
			m, err := masks.Decode(*out.Detections[j].Mask)
			if err != nil {
				t.Fatal(err)
			}
			for k, on := range m {
				if on {
					want[k] = uint8(j + 1)
				}
			}
		}
		if p.Bounds() != image.Rect(0, 0, sz[0], sz[1]) || !bytes.Equal(p.Pix, want) {
			t.Fatalf("%dx%d: the PNG (%v) is not the %d masks painted", sz[0], sz[1], p.Bounds(), len(out.Detections))
		}
		for _, v := range want {
			if v != 0 {
				painted++
			}
		}
	}
	if painted == 0 {
		t.Fatal("no mask pixel in any frame: nothing was checked")
	}
	plain := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "mask_rcnn"), `{"score_threshold": 0.05}`)
	if res, err := plain.Infer(context.Background(), randomFrame(64, 48, 9)); err != nil || res.Images != nil {
		t.Fatalf("without mask_png: images %v, %v", res.Images, err)
	}
}

// Letterboxing maps the input back to the frame: a frame letterboxed and
// decoded gives the same boxes as the model's own input size would, scaled.
func TestLetterboxBoxesAreInFramePixels(t *testing.T) {
	d := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "yolov3"), `{"score_threshold": 0.05, "resize": "letterbox"}`)
	in := d.Man.Input.Width
	small := randomFrame(in, in, 9)
	// The same picture at twice the size, wider by padding nothing: a square
	// frame letterboxes to the full input, so boxes scale by 2.
	big := sdk.Frame{Pipeline: testPipeline, Width: 2 * in, Height: 2 * in, RGB: make([]byte, 4*in*in*3)}
	for y := range 2 * in {
		for x := range 2 * in {
			copy(big.RGB[(y*2*in+x)*3:(y*2*in+x)*3+3], small.RGB[((y/2)*in+x/2)*3:])
		}
	}
	a, b := infer(t, d, small), infer(t, d, big)
	if len(a.Detections) == 0 {
		t.Fatal("no detections to compare")
	}
	// The upscaled picture differs slightly after the resize back; the
	// strongest box must be where the small one's is, twice as large.
	ba, bb := a.Detections[0].Box, b.Detections[0].Box
	if math.Abs(bb.X1-2*ba.X1) > 4 || math.Abs(bb.Y2-2*ba.Y2) > 4 {
		t.Fatalf("small %+v, twice the size %+v", ba, bb)
	}
	if tr := imageprep.LetterboxTransform(2*in, in, in, in); tr.PadY == 0 {
		t.Fatal("a wide frame is not padded")
	}
}

func TestOptionsAreCheckedAndNamed(t *testing.T) {
	man := manifest.Manifest{Labels: []string{"a", "b"}, Input: manifest.Input{Resize: "letterbox", Height: 96, Width: 96}}
	for _, tc := range []struct{ options, want string }{
		{`{"score_threshold": 1.5}`, "score_threshold is 1.5"},
		{`{"nms_threshold": 1.2}`, "nms_threshold is 1.2"},
		{`{"max_detections": 0}`, "max_detections is 0"},
		{`{"classes": ["a", "zebra"]}`, `classes: "zebra" is not one of the model's labels`},
		{`{"min_area": -1}`, "min_area is -1"},
		{`{"resize": "crop"}`, `resize is "crop"`},
		{`{"masks": true}`, "masks: the model has no masks"},
		{`{"mask_threshold": 1}`, "mask_threshold is 1"},
		{`{"mask_png": true}`, "mask_png: the model has no masks"},
		{`{"top_k": 3}`, `unknown field "top_k"`},
	} {
		if _, err := parseOptions(json.RawMessage(tc.options), man); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.options, err, tc.want)
		}
	}
	o, err := parseOptions(json.RawMessage(`{"classes": ["b"]}`), man)
	if err != nil || o.Resize != "letterbox" || o.MaxDetections != 100 || !o.classSet[1] || o.classSet[0] {
		t.Fatalf("defaults: %+v %v", o, err)
	}
}

// A model whose signature does not fit its task fails at load, naming the
// expected and the found tensors.
func TestLoadRefusesModelsThatDoNotFit(t *testing.T) {
	for _, tc := range []struct {
		model, edit, want string
	}{
		{"lenet5", "", `task is "classify", this plugin serves detect_yolo, detect_rcnn, detect_rows, detect_anchorfree`},
		{"yolov3", `s/^labels = .*/labels = ["a", "b"]/`, `output "grid_s8" is [-1 12 12 24], want [batch, rows, cols, 21] (3 anchors x (5 + 2 labels))`},
		{"anchorfree", `s/"channels_first"/"channels_last"/`, "want [batch, N, 4+C] with 7 = 4 + 3 labels"},
		{"faster_rcnn", `s/^boxes = .*/boxes = "detection_scores"/`, `output "detection_scores" is [-1 20], the Object Detection API's has rank 3 ending in 4`},
	} {
		t.Run(tc.model, func(t *testing.T) {
			dir := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", tc.model)
			if tc.edit != "" {
				dir = tfplugintest.EditedCopy(t, dir, tc.edit)
			}
			_, err := newDetector().Load(context.Background(), sdk.LoadRequest{ModelDir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// Bad frames are ErrBadFrame and leave the plugin serving.
func TestBadFramesAreErrBadFrame(t *testing.T) {
	d := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "yolov3"), `{}`)
	tfplugintest.CheckBadFrames(t, d, testPipeline)
	infer(t, d, randomFrame(32, 32, 1))
}

// Raw outputs with NaN and Inf, boxes far outside the frame, nothing over
// the threshold and 10,000 candidates over it give clear results.
func TestDecodeSurvivesBadRawOutputs(t *testing.T) {
	man := manifest.Manifest{Task: manifest.TaskDetectRows, Labels: []string{"a", "b", "c"}, Output: manifest.Output{
		Detections: "d", BoxFormat: "xyxy", BoxUnits: "pixels", BoxColumn: 0, ScoreColumn: 4, ClassColumn: 5, NMS: true,
	}}
	dec, _ := newDecoder(man, 100, 100)
	o, _ := parseOptions(nil, manifest.Manifest{Labels: man.Labels, Input: manifest.Input{Resize: "stretch"}})
	tr := imageprep.Stretch(200, 100, 100, 100)
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	rowsOf := func(rs ...[6]float32) tensor {
		var t tensor
		for _, r := range rs {
			t.data = append(t.data, r[:]...)
		}
		t.shape = []int64{1, int64(len(rs)), 6}
		return t
	}
	for _, tc := range []struct {
		name string
		in   tensor
		want int
	}{
		{"nan and inf", rowsOf([6]float32{nan, 0, 10, 10, 0.9, 0}, [6]float32{0, 0, inf, 10, 0.9, 0}, [6]float32{0, 0, 10, 10, nan, 0}, [6]float32{0, 0, 10, 10, 0.9, 1}), 1},
		{"outside the frame", rowsOf([6]float32{-500, -500, -400, -400, 0.9, 0}, [6]float32{90, 90, 500, 500, 0.8, 1}), 1},
		{"inverted", rowsOf([6]float32{50, 50, 10, 10, 0.9, 0}), 0},
		{"nothing over the threshold", rowsOf([6]float32{0, 0, 10, 10, 0.1, 0}), 0},
		{"a class out of range", rowsOf([6]float32{0, 0, 10, 10, 0.9, 7}, [6]float32{0, 0, 10, 10, 0.9, -1}), 0},
	} {
		cands, err := dec.decode([]tensor{tc.in}, o)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		kept := postprocess(cands, tr, 200, 100, o, dec.nms())
		if len(kept) != tc.want {
			t.Fatalf("%s: %d kept, want %d: %+v", tc.name, len(kept), tc.want, kept)
		}
		for _, k := range kept {
			if k.Box.X1 < 0 || k.Box.X2 > 200 || k.Box.Y2 > 100 || k.Box.Area() <= 0 {
				t.Fatalf("%s: box %+v", tc.name, k.Box)
			}
		}
	}
	// 10,000 candidates over the threshold: max_detections hold.
	r := rand.New(rand.NewPCG(1, 1))
	var many [][6]float32
	for range 10000 {
		x, y := r.Float32()*90, r.Float32()*90
		many = append(many, [6]float32{x, y, x + 1 + r.Float32()*9, y + 1 + r.Float32()*9, 0.3 + 0.7*r.Float32(), float32(r.IntN(3))})
	}
	cands, _ := dec.decode([]tensor{rowsOf(many...)}, o)
	if kept := postprocess(cands, tr, 200, 100, o, true); len(cands) != 10000 || len(kept) != o.MaxDetections {
		t.Fatalf("%d candidates, %d kept", len(cands), len(kept))
	}
}

// sample.conf's options are valid for the models it names.
func TestSampleConfOptionsAreValid(t *testing.T) {
	tfplugintest.CheckSampleConf(t, map[string]string{
		"centernet":        filepath.Join(os.Getenv("EDGEINFER_REAL_MODELS"), "centernet", "1"),
		"shapes_mask_rcnn": tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "shapes_mask_rcnn"),
	}, func(raw json.RawMessage, man manifest.Manifest) error {
		_, err := parseOptions(raw, man)
		return err
	})
}
