package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/plugins/common/crf"
	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin/tfplugintest"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

const testPipeline = "p"

// load loads a model version into a new segmenter closed at the end of the
// test and configures testPipeline with options.
func load(t *testing.T, dir, options string) (*segmenter, sdk.ModelInfo) {
	t.Helper()
	s := newSegmenter()
	t.Cleanup(func() { s.Close() })
	info, err := s.Load(context.Background(), sdk.LoadRequest{ModelDir: dir, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	configure(t, s, options)
	return s, info
}

func configure(t *testing.T, s *segmenter, options string) {
	t.Helper()
	if err := s.Configure(context.Background(), map[string]json.RawMessage{testPipeline: json.RawMessage(options)}); err != nil {
		t.Fatal(err)
	}
}

// infer runs one frame and decodes the output.
func infer(t *testing.T, s *segmenter, f sdk.Frame) (output, sdk.Result) {
	t.Helper()
	res, err := s.Infer(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var out output
	if err := json.Unmarshal(res.Output, &out); err != nil {
		t.Fatalf("output %s: %v", res.Output, err)
	}
	return out, res
}

func randomFrame(w, h int, seed uint64) sdk.Frame {
	r := rand.New(rand.NewPCG(seed, 1))
	rgb := make([]byte, w*h*3)
	for i := range rgb {
		rgb[i] = byte(r.IntN(256))
	}
	return sdk.Frame{Pipeline: testPipeline, Width: w, Height: h, RGB: rgb}
}

// ------------------------------------------------------------ the cases

// segCase is one case of testdata/cases (testdata/make_cases.py): a frame,
// the raw output of a real model run on it (or an edit of one), and what the
// numpy reference (tfmodels/zoo/segment_ref.py) makes of it.
type segCase struct {
	Mode  string `json:"mode"`
	Model string `json:"model"`
	Note  string `json:"note"`
	Frame struct {
		Width  int `json:"width"`
		Height int `json:"height"`
	} `json:"frame"`
	Labels   []string        `json:"labels"`
	Softmax  bool            `json:"softmax"`
	Options  json.RawMessage `json:"options"`
	E2E      bool            `json:"e2e"`
	Expected output          `json:"expected"`

	dir string
	raw rawOutput
	cls []uint8 // the reference class map
	rgb []byte  // the frame
}

// casesDir holds the cases make writes.
func casesDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("testdata", "cases")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("%s missing: run make test (it runs testdata/make_cases.py): %v", dir, err)
	}
	return dir
}

func readCases(t *testing.T) []*segCase {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(casesDir(t), "*", "case.json"))
	var cases []*segCase
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c := &segCase{dir: filepath.Dir(p)}
		if err := json.Unmarshal(b, c); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		a, err := npy.Read(filepath.Join(c.dir, "output.npy"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := a.Float32s()
		if err != nil || len(a.Shape) != 4 || a.Shape[0] != 1 {
			t.Fatalf("%s: output.npy %v %v", c.dir, a.Shape, err)
		}
		c.raw = rawOutput{data: v, h: int(a.Shape[1]), w: int(a.Shape[2]), n: int(a.Shape[3])}
		c.cls = readUint8s(t, filepath.Join(c.dir, "classmap.npy"), c.Frame.Height, c.Frame.Width)
		c.rgb = readUint8s(t, filepath.Join(c.dir, "frame.npy"), c.Frame.Height, c.Frame.Width, 3)
		cases = append(cases, c)
	}
	return cases
}

func readUint8s(t *testing.T, path string, shape ...int) []uint8 {
	t.Helper()
	a, err := npy.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Uint8s()
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Shape) != len(shape) {
		t.Fatalf("%s: shape %v, want %v", path, a.Shape, shape)
	}
	for i, d := range shape {
		if a.Shape[i] != int64(d) {
			t.Fatalf("%s: shape %v, want %v", path, a.Shape, shape)
		}
	}
	return v
}

// compareOutput checks got against the reference's output: the same classes
// in the same order with equal pixels, shares, boxes and component counts,
// masks whose RLE strings are pycocotools' and decode (masks.Decode) to
// exactly the reference's mask, the same alerts and NaN count.
func compareOutput(t *testing.T, got, want output) {
	t.Helper()
	if got.Width != want.Width || got.Height != want.Height || got.NaNValues != want.NaNValues {
		t.Fatalf("width %d height %d nan_values %d; reference %d %d %d", got.Width, got.Height, got.NaNValues, want.Width, want.Height, want.NaNValues)
	}
	if len(got.Classes) != len(want.Classes) {
		t.Fatalf("%d classes %v; reference %d %v", len(got.Classes), labelsOf(got.Classes), len(want.Classes), labelsOf(want.Classes))
	}
	for i, w := range want.Classes {
		g := got.Classes[i]
		if g.Label != w.Label || g.Class != w.Class || g.Pixels != w.Pixels || g.Share != w.Share || g.Box != w.Box || g.Components != w.Components {
			t.Fatalf("class %d: %+v; reference %+v", i, g, w)
		}
		if (g.Mask == nil) != (w.Mask == nil) {
			t.Fatalf("class %s: mask %v, reference %v", g.Label, g.Mask != nil, w.Mask != nil)
		}
		if w.Mask == nil {
			continue
		}
		gm, err := masks.Decode(*g.Mask)
		if err != nil {
			t.Fatalf("class %s: %v", g.Label, err)
		}
		wm, err := masks.Decode(*w.Mask)
		if err != nil {
			t.Fatalf("class %s: reference mask: %v", g.Label, err)
		}
		if g.Mask.Size != w.Mask.Size || !slices.Equal(gm, wm) {
			t.Fatalf("class %s: the mask differs from the reference's on %d pixels", g.Label, countDiff(gm, wm))
		}
		if g.Mask.Counts != w.Mask.Counts {
			t.Fatalf("class %s: RLE %q, pycocotools %q", g.Label, g.Mask.Counts, w.Mask.Counts)
		}
		set := 0
		for _, on := range gm {
			if on {
				set++
			}
		}
		if set != g.Pixels {
			t.Fatalf("class %s: mask has %d pixels, pixels says %d", g.Label, set, g.Pixels)
		}
	}
	if !slices.Equal(got.Alerts, want.Alerts) {
		t.Fatalf("alerts %+v; reference %+v", got.Alerts, want.Alerts)
	}
}

func countDiff[T comparable](a, b []T) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n + max(len(a), len(b)) - min(len(a), len(b))
}

func labelsOf(cs []Class) []string {
	var l []string
	for _, c := range cs {
		l = append(l, c.Label)
	}
	return l
}

// Every case (multi-class nearest, multi-class bilinear, single channel),
// on the raw outputs of real model runs: the class map equals the numpy
// reference's pixel for pixel, and the published classes, masks and alerts
// equal the reference's exactly.
func TestCasesEqualTheNumpyReference(t *testing.T) {
	cases := readCases(t)
	perMode := map[string]int{}
	pixels, maskCount := 0, 0
	for _, c := range cases {
		t.Run(filepath.Base(c.dir), func(t *testing.T) {
			man := manifest.Manifest{Labels: c.Labels}
			o, err := parseOptions(c.Options, man)
			if err != nil {
				t.Fatalf("options %s: %v", c.Options, err)
			}
			out, cls, err := post(c.raw, c.rgb, c.Frame.Width, c.Frame.Height, c.Labels, c.Softmax, o, nil, &scratch{})
			if err != nil {
				t.Fatal(err)
			}
			if d := countDiff(u8(cls), c.cls); d != 0 {
				t.Fatalf("%s (%s): the class map differs from numpy's argmax on %d of %d pixels", c.Note, c.Mode, d, len(c.cls))
			}
			compareOutput(t, out, c.Expected)
			perMode[c.Mode]++
			pixels += len(cls)
			for _, cl := range out.Classes {
				if cl.Mask != nil {
					maskCount++
				}
			}
		})
	}
	for _, mode := range []string{"nearest", "bilinear", "single"} {
		if perMode[mode] < 20 {
			t.Errorf("%d passing cases of mode %s, want >= 20", perMode[mode], mode)
		}
	}
	t.Logf("cases passed per mode %v: %d frame pixels equal to the reference's, %d masks decoded to the reference's exactly", perMode, pixels, maskCount)
}

func u8(cls []uint16) []uint8 {
	b := make([]uint8, len(cls))
	for i, c := range cls {
		b[i] = uint8(c)
	}
	return b
}

// The unedited cases' frames, run through the plugin end to end (Go resize
// and normalisation, the model through the TF C API): the raw output equals
// Python TensorFlow's within 1e-4, and the published output equals the
// reference's except where a pixel's decision is within that of a tie.
func TestCaseFramesEndToEnd(t *testing.T) {
	byModel := map[string][]*segCase{}
	for _, c := range readCases(t) {
		if c.E2E {
			byModel[c.Model] = append(byModel[c.Model], c)
		}
	}
	if len(byModel["unet"]) < 10 || len(byModel["fcn8s"]) < 10 || len(byModel["selfie"]) < 10 {
		t.Fatalf("end-to-end cases per model: unet %d, fcn8s %d, selfie %d; want >= 10 each", len(byModel["unet"]), len(byModel["fcn8s"]), len(byModel["selfie"]))
	}
	envs := map[string]string{"unet": "EDGEINFER_MODELS", "fcn8s": "EDGEINFER_MODELS", "selfie": "EDGEINFER_REAL_MODELS"}
	for _, name := range slices.Sorted(maps.Keys(byModel)) {
		t.Run(name, func(t *testing.T) {
			s, _ := load(t, tfplugintest.ModelDir(t, envs[name], name), `{}`)
			maxDiff, differing, total, same := 0.0, 0, 0, 0
			for _, c := range byModel[name] {
				configure(t, s, string(c.Options))
				f := sdk.Frame{Pipeline: testPipeline, Width: c.Frame.Width, Height: c.Frame.Height, RGB: c.rgb}
				fr, err := s.Prepare(context.Background(), f, false)
				if err != nil {
					t.Fatal(err)
				}
				outs, err := s.Run()
				if err != nil {
					t.Fatal(err)
				}
				raw, err := s.rawOf(outs[0])
				if err != nil {
					t.Fatal(err)
				}
				if raw.h != c.raw.h || raw.w != c.raw.w || raw.n != c.raw.n {
					t.Fatalf("%s: output %dx%dx%d, Python's %dx%dx%d", c.dir, raw.h, raw.w, raw.n, c.raw.h, c.raw.w, c.raw.n)
				}
				d := 0.0
				for i, v := range raw.data {
					d = max(d, math.Abs(float64(v)-float64(c.raw.data[i])))
				}
				maxDiff = max(maxDiff, d)
				out, cls, err := post(raw, f.RGB, f.Width, f.Height, s.Man.Labels, s.Man.Output.Softmax, fr.Options, nil, &scratch{})
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range outs {
					o.Close()
				}
				n := countDiff(u8(cls), c.cls)
				differing += n
				total += len(cls)
				if n == 0 {
					compareOutput(t, out, c.Expected)
					same++
				}
				// Infer gives what post gave.
				got, _ := infer(t, s, f)
				want, _ := json.Marshal(out)
				gotJSON, _ := json.Marshal(got)
				if !bytes.Equal(gotJSON, want) {
					t.Fatalf("%s: Infer %s, post %s", c.dir, gotJSON, want)
				}
			}
			if maxDiff > 1e-4 {
				t.Errorf("raw output differs from Python TensorFlow's by %g", maxDiff)
			}
			if float64(differing) > 1e-3*float64(total) {
				t.Errorf("%d of %d class-map pixels differ from the reference's", differing, total)
			}
			t.Logf("%d frames: raw output within %.2g of Python TensorFlow's; %d of %d class-map pixels differ; %d outputs equal the reference's exactly",
				len(byModel[name]), maxDiff, differing, total, same)
		})
	}
}

// ------------------------------------------------------- models and load

// The zoo's segmenters and the real person model load (a batch fixed at 1
// in the signature as well as any batch), validate their golden samples and
// segment frames of odd sizes.
func TestModelsLoadValidateAndSegment(t *testing.T) {
	for _, tc := range []struct {
		env, name string
		labels    int
		batch     int64
	}{
		{"EDGEINFER_MODELS", "unet", 2, -1},
		{"EDGEINFER_MODELS", "fcn8s", 21, -1},
		{"EDGEINFER_MODELS", "fcn32s", 21, -1},
		{"EDGEINFER_REAL_MODELS", "selfie", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, info := load(t, tfplugintest.ModelDir(t, tc.env, tc.name), `{"mask_png": true, "resize": "bilinear"}`)
			if info.Task != "segment" || info.Labels != tc.labels || len(info.InputShape) != 4 || info.InputShape[0] != tc.batch {
				t.Errorf("ModelInfo %+v", info)
			}
			v, err := s.Validate(context.Background())
			if err != nil || v.Samples == 0 {
				t.Fatalf("Validate: %+v %v", v, err)
			}
			for i, size := range [][2]int{{97, 61}, {1, 1}, {301, 7}} {
				f := randomFrame(size[0], size[1], uint64(i))
				out, res := infer(t, s, f)
				total := 0
				for _, c := range out.Classes {
					total += c.Pixels
					if c.Box.X1 < 0 || c.Box.Y1 < 0 || c.Box.X2 > f.Width || c.Box.Y2 > f.Height || c.Box.X2 <= c.Box.X1 || c.Box.Y2 <= c.Box.Y1 {
						t.Fatalf("%s: box %+v outside the %dx%d frame", c.Label, c.Box, f.Width, f.Height)
					}
				}
				if tc.labels > 1 && total != f.Width*f.Height {
					t.Fatalf("%dx%d: classes cover %d pixels", f.Width, f.Height, total)
				}
				img := decodePNG(t, res.Images["mask"], f.Width, f.Height)
				checkPNG(t, img, out, tc.labels == 1)
				if out.Alerts == nil || out.Width != f.Width || out.Height != f.Height {
					t.Fatalf("output %+v", out)
				}
			}
		})
	}
}

func decodePNG(t *testing.T, b []byte, w, h int) *image.Paletted {
	t.Helper()
	if b == nil {
		t.Fatal("no mask image")
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := img.(*image.Paletted)
	if !ok || p.Bounds().Dx() != w || p.Bounds().Dy() != h {
		t.Fatalf("mask png is %T %v, want paletted %dx%d", img, img.Bounds(), w, h)
	}
	return p
}

// checkPNG checks the mask PNG is the class map the output was made of (no
// min_area, nothing ignored): each class's pixels are where the PNG holds
// its index (single channel: 1).
func checkPNG(t *testing.T, img *image.Paletted, out output, single bool) {
	t.Helper()
	w := img.Bounds().Dx()
	for _, c := range out.Classes {
		want := uint8(c.Class)
		if single {
			want = 1
		}
		m, err := masks.Decode(*c.Mask)
		if err != nil {
			t.Fatal(err)
		}
		for p, on := range m {
			if (img.Pix[(p/w)*img.Stride+p%w] == want) != on {
				t.Fatalf("class %s: the png and the mask differ at pixel %d", c.Label, p)
			}
		}
	}
	if single && len(out.Classes) == 0 {
		for _, v := range img.Pix {
			if v != 0 {
				t.Fatal("png has foreground, the output none")
			}
		}
	}
}

// A model whose output is a 1x1 class map, with the batch fixed at 1 in its
// signature and any input size, segments whole frames: the frame's mean
// colour picks the class.
func TestOneByOneOutputModel(t *testing.T) {
	s, info := load(t, filepath.Join(casesDir(t), "models", "mean1x1", "1"), `{"mask_png": true, "resize": "bilinear"}`)
	if info.InputShape[0] != 1 {
		t.Fatalf("input shape %v, want batch 1", info.InputShape)
	}
	for _, tc := range []struct {
		rgb   [3]byte
		label string
	}{{[3]byte{200, 10, 10}, "r"}, {[3]byte{0, 90, 30}, "g"}, {[3]byte{1, 2, 250}, "b"}} {
		f := sdk.Frame{Pipeline: testPipeline, Width: 13, Height: 7, RGB: bytes.Repeat(tc.rgb[:], 13*7)}
		out, res := infer(t, s, f)
		if len(out.Classes) != 1 || out.Classes[0].Label != tc.label || out.Classes[0].Share != 1 || out.Classes[0].Box != (Box{0, 0, 13, 7}) || out.Classes[0].Components != 1 {
			t.Fatalf("%v: %+v", tc.rgb, out)
		}
		img := decodePNG(t, res.Images["mask"], 13, 7)
		checkPNG(t, img, out, false)
	}
}

// NaN logits from a real run (class a is NaN where the frame is red):
// NaN is the lowest value, so class b (-1) wins there; class a (0) wins
// elsewhere; the output counts the NaN values.
func TestNaNLogitsFromTheModel(t *testing.T) {
	s, _ := load(t, filepath.Join(casesDir(t), "models", "nanlogits", "1"), `{}`)
	w, h := 10, 4
	rgb := make([]byte, w*h*3)
	for y := range h {
		for x := range 3 { // columns 0..2 red
			rgb[(y*w+x)*3] = 255
		}
	}
	out, _ := infer(t, s, sdk.Frame{Pipeline: testPipeline, Width: w, Height: h, RGB: rgb})
	if out.NaNValues != 12 || len(out.Classes) != 2 {
		t.Fatalf("output %+v", out)
	}
	a, b := out.Classes[0], out.Classes[1]
	if a.Label != "a" || a.Pixels != 28 || a.Box != (Box{3, 0, 10, 4}) || b.Label != "b" || b.Pixels != 12 || b.Box != (Box{0, 0, 3, 4}) {
		t.Fatalf("classes %+v", out.Classes)
	}
}

// A model whose signature does not fit segmentation fails at load, naming
// the expected and the found tensors.
func TestLoadRefusesModelsThatDoNotFit(t *testing.T) {
	for _, tc := range []struct {
		env, model, edit, want string
	}{
		{"EDGEINFER_MODELS", "lenet5", "", `task is "classify", this plugin serves segment`},
		{"EDGEINFER_MODELS", "lenet5", `s/^task = .*/task = "segment"/`, "output is logits float32 (-1, 10), want float32 [batch, height, width, 10] (batch 1 or any; one channel per label)"},
		{"EDGEINFER_MODELS", "unet", `s/^labels = .*/labels = ["a", "b", "c"]/`, "output is logits float32 (-1, -1, -1, 2), want float32 [batch, height, width, 3]"},
		{"EDGEINFER_REAL_MODELS", "selfie", `s/^labels = .*/labels = ["background", "person"]/`, "output is mask float32 (1, 256, 256, 1), want float32 [batch, height, width, 2]"},
		{"EDGEINFER_MODELS", "unet", `s/^labels = .*/labels = ["person"]/`, "want float32 [batch, height, width, 1] (batch 1 or any; one label: one channel, its foreground)"},
		{"EDGEINFER_MODELS", "unet", `s/"stretch"/"letterbox"/`, `input.resize "letterbox" is not supported for segment`},
		{"EDGEINFER_MODELS", "unet", `s/^resize = .*/resize = "stretch"\nbatch = 2/`, "input.batch is 2: segment runs one frame at a time"},
		{"EDGEINFER_REAL_MODELS", "selfie", `s/^height = .*/height = 128/`, "input is input_1 float32 (1, 256, 256, 3), edgeinfer.toml says float32 [batch, 128, 256, 3]"},
	} {
		t.Run(tc.model, func(t *testing.T) {
			dir := tfplugintest.ModelDir(t, tc.env, tc.model)
			if tc.edit != "" {
				dir = tfplugintest.EditedCopy(t, dir, tc.edit)
			}
			_, err := newSegmenter().Load(context.Background(), sdk.LoadRequest{ModelDir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// Bad frames are ErrBadFrame and leave the plugin serving; an unknown
// pipeline is named.
func TestBadFramesAreErrBadFrame(t *testing.T) {
	s, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "unet"), `{}`)
	tfplugintest.CheckBadFrames(t, s, testPipeline)
	infer(t, s, randomFrame(32, 32, 1))
}

// Two pipelines on one process get their own options.
func TestPipelinesUseTheirOwnOptions(t *testing.T) {
	s, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "fcn8s"), `{}`)
	if err := s.Configure(context.Background(), map[string]json.RawMessage{
		"all":  json.RawMessage(`{}`),
		"some": json.RawMessage(`{"ignore_classes": ["horse", "motorbike"], "masks": false, "alerts": {"person": 0.0001}}`),
	}); err != nil {
		t.Fatal(err)
	}
	f := randomFrame(120, 80, 3)
	f.Pipeline = "all"
	all, _ := infer(t, s, f)
	f.Pipeline = "some"
	some, _ := infer(t, s, f)
	var want []Class
	for _, c := range all.Classes {
		if c.Label != "horse" && c.Label != "motorbike" {
			c.Mask = nil
			want = append(want, c)
		}
	}
	if len(all.Classes) == len(want) || !slices.Equal(some.Classes, want) {
		t.Fatalf("all %v, some %v", labelsOf(all.Classes), labelsOf(some.Classes))
	}
}

// ---------------------------------------------------------------- options

func TestOptionsAreCheckedAndNamed(t *testing.T) {
	multi := manifest.Manifest{Labels: []string{"background", "water", "boat"}}
	single := manifest.Manifest{Labels: []string{"person"}}
	many := manifest.Manifest{Labels: make([]string, 300)}
	for _, tc := range []struct {
		man           manifest.Manifest
		options, want string
	}{
		{multi, `{"resize": "bicubic"}`, `resize is "bicubic", must be nearest or bilinear`},
		{multi, `{"threshold": 0.5}`, "threshold: the model has 3 labels (one channel each); threshold is for single-channel models"},
		{single, `{"threshold": 1}`, "threshold is 1, must be in (0, 1)"},
		{single, `{"threshold": 0}`, "threshold is 0, must be in (0, 1)"},
		{multi, `{"ignore_classes": ["water", "zebra"]}`, `ignore_classes: "zebra" is not one of the model's labels`},
		{multi, `{"min_area": -1}`, "min_area is -1, must be >= 0 (frame pixels)"},
		{multi, `{"connectivity": 6}`, "connectivity is 6, must be 4 or 8"},
		{multi, `{"connectivity": 0}`, "connectivity is 0, must be 4 or 8"},
		{multi, `{"alerts": {"lava": 0.2}}`, `alerts: "lava" is not one of the model's labels`},
		{multi, `{"alerts": {"water": 0}}`, "alerts: water is 0, must be a share in (0, 1]"},
		{multi, `{"alerts": {"water": 1.5}}`, "alerts: water is 1.5, must be a share in (0, 1]"},
		{multi, `{"alerts": {"water": 0.2}, "ignore_classes": ["water"]}`, `alerts: "water" is in ignore_classes, so never published`},
		{many, `{"mask_png": true}`, "mask_png: the model has 300 labels, a PNG pixel holds class 0..255"},
		{multi, `{"top_k": 3}`, `unknown field "top_k"`},
		{multi, `{"crf": {"iterations": 50}}`, "crf.iterations is 50, must be 1..20"},
		{multi, `{"crf": {"appr_rgb": -1}}`, "crf.appr_rgb is -1"},
		{multi, `{"crf": {"sigma": 1}}`, `unknown field "sigma"`},
		{multi, `{"resize": 1}`, "options: json: cannot unmarshal number"},
	} {
		if _, err := parseOptions(json.RawMessage(tc.options), tc.man); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.options, err, tc.want)
		}
	}
	o, err := parseOptions(nil, single)
	if err != nil || o.Resize != "nearest" || o.threshold != 0.5 || o.Connectivity != 8 || !o.masks || o.MinArea != 0 || o.MaskPNG {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	if o.CRF != nil {
		t.Fatal("crf is on by default")
	}
	o, err = parseOptions(json.RawMessage(`{"crf": {"downsample": 2}}`), multi)
	if err != nil || *o.CRF != (crf.Params{Downsample: 2}).Defaults() {
		t.Fatalf("crf defaults: %+v %v", o.CRF, err)
	}
	o, err = parseOptions(json.RawMessage(`{"alerts": {"boat": 0.5, "background": 1, "water": 0.2}, "masks": false, "threshold": null}`), multi)
	if err != nil || o.masks || len(o.alerts) != 3 || o.alerts[0] != (alertAt{0, 1}) || o.alerts[1] != (alertAt{1, 0.2}) || o.alerts[2] != (alertAt{2, 0.5}) {
		t.Fatalf("alerts: %+v %v", o, err)
	}
}

// Configure with a bad option names the pipeline and leaves the set as it was.
func TestConfigureNamesThePipeline(t *testing.T) {
	s, _ := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "unet"), `{"resize": "bilinear"}`)
	err := s.Configure(context.Background(), map[string]json.RawMessage{"ok": nil, "lake": json.RawMessage(`{"alerts": {"water": 0.2}}`)})
	if err == nil || !strings.Contains(err.Error(), `pipeline lake: alerts: "water" is not one of the model's labels`) {
		t.Fatalf("got %v", err)
	}
	if o, ok := s.Pipelines()[testPipeline]; !ok || o.Resize != "bilinear" || len(s.Pipelines()) != 1 {
		t.Fatalf("pipelines after the refused Configure: %+v", s.Pipelines())
	}
}

// sample.conf's options are valid for the models it names.
func TestSampleConfOptionsAreValid(t *testing.T) {
	tfplugintest.CheckSampleConf(t, map[string]string{
		"selfie": tfplugintest.ModelDir(t, "EDGEINFER_REAL_MODELS", "selfie"),
		"fcn8s":  tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "fcn8s"),
		"unet":   tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "unet"),
	}, func(raw json.RawMessage, man manifest.Manifest) error {
		_, err := parseOptions(raw, man)
		return err
	})
}

// ------------------------------------------------- post-processing by hand

// raw builds a [1, h, w, n] output from rows of pixels of n values.
func raw(rows ...[][]float32) rawOutput {
	r := rawOutput{h: len(rows), w: len(rows[0]), n: len(rows[0][0])}
	for _, row := range rows {
		for _, px := range row {
			r.data = append(r.data, px...)
		}
	}
	return r
}

func mustOptions(t *testing.T, labels []string, js string) options {
	t.Helper()
	o, err := parseOptions(json.RawMessage(js), manifest.Manifest{Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func classMapOf(t *testing.T, r rawOutput, fw, fh int, softmax bool, labels []string, js string) []uint16 {
	t.Helper()
	cls, _ := classMap(r, fw, fh, softmax, mustOptions(t, labels, js), &scratch{})
	return slices.Clone(cls)
}

func TestClassMapByHand(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	ab := []string{"a", "b"}
	abc := []string{"a", "b", "c"}
	// nearest: model 2x2 argmax [[2, 0], [1, 1]] onto 4x3: columns 0 0 1 1, rows 0 1 1
	r := raw([][]float32{{0, 1, 5}, {3, 2, 1}}, [][]float32{{0, 4, 1}, {-1, 0, -2}})
	if got := classMapOf(t, r, 4, 3, true, abc, `{}`); !slices.Equal(got, []uint16{2, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}) {
		t.Errorf("nearest: %v", got)
	}
	// bilinear on the logits: (2, 0) | (0, 1) over 8 columns: class 1 where f > 2/3
	r = raw([][]float32{{2, 0}, {0, 1}})
	if got := classMapOf(t, r, 8, 1, true, ab, `{"resize": "bilinear"}`); !slices.Equal(got, []uint16{0, 0, 0, 0, 0, 1, 1, 1}) {
		t.Errorf("bilinear: %v", got)
	}
	if got := classMapOf(t, r, 8, 1, true, ab, `{}`); !slices.Equal(got, []uint16{0, 0, 0, 0, 1, 1, 1, 1}) {
		t.Errorf("nearest: %v", got)
	}
	// ties: the lowest class
	r = raw([][]float32{{1, 3, 3}, {2, 2, 2}})
	for _, js := range []string{`{}`, `{"resize": "bilinear"}`} {
		if got := classMapOf(t, r, 2, 1, false, abc, js); !slices.Equal(got, []uint16{1, 0}) {
			t.Errorf("ties %s: %v", js, got)
		}
	}
	// NaN is the lowest value; +Inf is the highest (clamped), ties low
	r = raw([][]float32{{nan, -5}, {nan, nan}, {1, inf}, {inf, inf}, {float32(math.Inf(-1)), nan}})
	cls, n := classMap(r, 5, 1, true, mustOptions(t, ab, `{}`), &scratch{})
	if !slices.Equal(cls, []uint16{1, 0, 1, 0, 0}) || n != 4 {
		t.Errorf("NaN: %v, %d NaN", cls, n)
	}
	// bilinear next to NaN stays finite, and NaN's class loses wherever the
	// NaN corner has any weight: pixels (NaN, 0) | (5, 0) over 8 columns, u =
	// -.375 -.125 .125 ... .875 1.125 1.375: only the two clamped to the right
	// pixel are a
	r = raw([][]float32{{nan, 0}, {5, 0}})
	if got := classMapOf(t, r, 8, 1, true, ab, `{"resize": "bilinear"}`); !slices.Equal(got, []uint16{1, 1, 1, 1, 1, 1, 0, 0}) {
		t.Errorf("bilinear NaN: %v", got)
	}
	// single channel: probabilities at or above the threshold; float32(0.7) < 0.7
	one := []string{"person"}
	r = raw([][]float32{{0.2}, {0.75}}, [][]float32{{0.5}, {0.49}})
	if got := classMapOf(t, r, 2, 2, false, one, `{}`); !slices.Equal(got, []uint16{0, 1, 1, 0}) {
		t.Errorf("single: %v", got)
	}
	if got := classMapOf(t, raw([][]float32{{0.7}}), 1, 1, false, one, `{"threshold": 0.7}`); !slices.Equal(got, []uint16{0}) {
		t.Errorf("float32(0.7): %v", got)
	}
	// single channel logits (softmax = true): sigmoid(0) = 0.5 is foreground
	r = raw([][]float32{{-1}, {float32(math.Log(3))}}, [][]float32{{0}, {-0.01}})
	if got := classMapOf(t, r, 2, 2, true, one, `{}`); !slices.Equal(got, []uint16{0, 1, 1, 0}) {
		t.Errorf("single logits: %v", got)
	}
	if got := classMapOf(t, r, 2, 2, true, one, `{"threshold": 0.8}`); !slices.Equal(got, []uint16{0, 0, 0, 0}) {
		t.Errorf("single logits, threshold 0.8: %v", got)
	}
	// single channel bilinear: [0, .25, .75, 1]; NaN drags its neighbourhood down
	r = raw([][]float32{{0}, {1}})
	if got := classMapOf(t, r, 4, 1, false, one, `{"resize": "bilinear", "threshold": 0.8}`); !slices.Equal(got, []uint16{0, 0, 0, 1}) {
		t.Errorf("single bilinear: %v", got)
	}
	r = raw([][]float32{{nan}, {1}})
	if got := classMapOf(t, r, 4, 1, false, one, `{"resize": "bilinear", "threshold": 0.1}`); !slices.Equal(got, []uint16{0, 0, 0, 1}) {
		t.Errorf("single bilinear NaN: %v", got)
	}
	// 1x1 output fills the frame
	r = raw([][]float32{{0, 2, 1}})
	for _, js := range []string{`{}`, `{"resize": "bilinear"}`} {
		if got := classMapOf(t, r, 5, 3, true, abc, js); !slices.Equal(got, slices.Repeat([]uint16{1}, 15)) {
			t.Errorf("1x1 %s: %v", js, got)
		}
	}
}

// oneHot is the logits of a class map (1 for the class, 0 elsewhere).
func oneHot(cls [][]int, n int) rawOutput {
	r := rawOutput{h: len(cls), w: len(cls[0]), n: n}
	for _, row := range cls {
		for _, c := range row {
			px := make([]float32, n)
			px[c] = 1
			r.data = append(r.data, px...)
		}
	}
	return r
}

func TestRegionsByHand(t *testing.T) {
	labels := []string{"bg", "water", "boat"}
	r := oneHot([][]int{
		{0, 0, 1, 1},
		{0, 2, 1, 1},
		{0, 0, 0, 0},
		{2, 0, 0, 2},
	}, 3)
	run := func(js string) output {
		out, _, err := post(r, nil, 4, 4, labels, true, mustOptions(t, labels, js), nil, &scratch{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := run(`{}`)
	if len(out.Classes) != 3 {
		t.Fatalf("%+v", out)
	}
	bg, water, boat := out.Classes[0], out.Classes[1], out.Classes[2]
	if bg.Pixels != 9 || bg.Share != 9.0/16 || bg.Components != 1 || bg.Box != (Box{0, 0, 4, 4}) {
		t.Errorf("bg %+v", bg)
	}
	// water: columns 2-3 of rows 0-1; column-major runs 8 2 2 2 2 -> "82200"
	if water.Pixels != 4 || water.Components != 1 || water.Box != (Box{2, 0, 4, 2}) || water.Mask.Counts != "82200" || water.Mask.Size != [2]int{4, 4} {
		t.Errorf("water %+v %+v", water, water.Mask)
	}
	if boat.Pixels != 3 || boat.Components != 3 || boat.Box != (Box{0, 1, 4, 4}) {
		t.Errorf("boat %+v", boat)
	}
	// min_area is per component: the lone boat pixels go, bg and water stay
	if out := run(`{"min_area": 2}`); !slices.Equal(labelsOf(out.Classes), []string{"bg", "water"}) {
		t.Errorf("min_area 2: %v", labelsOf(out.Classes))
	}
	if out := run(`{"min_area": 5}`); !slices.Equal(labelsOf(out.Classes), []string{"bg"}) {
		t.Errorf("min_area 5: %v", labelsOf(out.Classes))
	}
	// ignore and alerts (at or above the threshold)
	out = run(`{"ignore_classes": ["bg"], "alerts": {"water": 0.25, "boat": 0.2}, "masks": false}`)
	if !slices.Equal(labelsOf(out.Classes), []string{"water", "boat"}) || out.Classes[0].Mask != nil ||
		!slices.Equal(out.Alerts, []Alert{{Label: "water", Share: 0.25, Threshold: 0.25}}) {
		t.Errorf("ignore and alerts: %+v", out)
	}
	b, _ := json.Marshal(out)
	if !strings.Contains(string(b), `"alerts":[{"label":"water","share":0.25,"threshold":0.25}]`) || strings.Contains(string(b), "nan_values") {
		t.Errorf("json %s", b)
	}

	// 4- and 8-connectivity: a diagonal pair and a bar; min_area per component
	r = oneHot([][]int{
		{1, 0, 0, 0},
		{0, 1, 0, 0},
		{0, 0, 0, 1},
	}, 2)
	for _, tc := range []struct {
		js            string
		pixels, comps int
		box           Box
	}{
		{`{"connectivity": 8}`, 3, 2, Box{0, 0, 4, 3}},
		{`{"connectivity": 4}`, 3, 3, Box{0, 0, 4, 3}},
		{`{"connectivity": 8, "min_area": 2}`, 2, 1, Box{0, 0, 2, 2}},
		{`{"connectivity": 4, "min_area": 2}`, 0, 0, Box{}},
	} {
		out, _, _ := post(r, nil, 4, 3, []string{"bg", "x"}, true, mustOptions(t, []string{"bg", "x"}, tc.js), nil, &scratch{})
		var x *Class
		for i := range out.Classes {
			if out.Classes[i].Label == "x" {
				x = &out.Classes[i]
			}
		}
		if tc.pixels == 0 {
			if x != nil {
				t.Errorf("%s: %+v", tc.js, x)
			}
			continue
		}
		if x == nil || x.Pixels != tc.pixels || x.Components != tc.comps || x.Box != tc.box {
			t.Errorf("%s: %+v", tc.js, x)
		}
	}

	// single channel: the foreground under the one label, as class 0
	r = raw([][]float32{{0.9}, {0.1}}, [][]float32{{0.1}, {0.8}})
	out, cls, _ := post(r, nil, 2, 2, []string{"person"}, false, mustOptions(t, []string{"person"}, `{"connectivity": 4, "alerts": {"person": 0.5}}`), nil, &scratch{})
	if len(out.Classes) != 1 || out.Classes[0].Label != "person" || out.Classes[0].Class != 0 || out.Classes[0].Pixels != 2 || out.Classes[0].Components != 2 ||
		len(out.Alerts) != 1 || !slices.Equal(cls, []uint16{1, 0, 0, 1}) {
		t.Errorf("single: %+v %v", out, cls)
	}
	out, _, _ = post(r, nil, 2, 2, []string{"person"}, false, mustOptions(t, []string{"person"}, `{"threshold": 0.95}`), nil, &scratch{})
	if len(out.Classes) != 0 || out.Classes == nil || out.Alerts == nil {
		t.Errorf("nothing found: %+v", out)
	}
}

// A scratch reused across frames of different sizes and models gives what
// a fresh one gives.
func TestScratchReuse(t *testing.T) {
	sc := &scratch{}
	rng := rand.New(rand.NewPCG(5, 5))
	labels := []string{"a", "b", "c", "d"}
	for i := range 30 {
		n := 1 + 3*(i%2)
		h, w := 1+rng.IntN(20), 1+rng.IntN(20)
		r := rawOutput{h: h, w: w, n: n, data: make([]float32, h*w*n)}
		for j := range r.data {
			r.data[j] = float32(rng.NormFloat64())
		}
		l := labels[:n]
		js := []string{`{"resize": "bilinear", "min_area": 3}`, `{"connectivity": 4}`}[i%2]
		if n == 1 {
			js = `{"threshold": 0.1, "resize": "bilinear"}`
		}
		o := mustOptions(t, l, js)
		fw, fh := 1+rng.IntN(60), 1+rng.IntN(60)
		a, ca, _ := post(r, nil, fw, fh, l, true, o, nil, sc)
		b, cb, _ := post(r, nil, fw, fh, l, true, o, nil, &scratch{})
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if !bytes.Equal(ja, jb) || !slices.Equal(ca, cb) {
			t.Fatalf("frame %d: reused scratch %s, fresh %s", i, ja, jb)
		}
	}
}

// The refinement hook (refine.go): a refiner gets the frame-size
// probabilities (softmax of the bilinear logits, pixel-major) and the class
// map is taken from what it returns.
func TestRefineHook(t *testing.T) {
	labels := []string{"a", "b", "c"}
	rng := rand.New(rand.NewPCG(9, 9))
	r := rawOutput{h: 6, w: 5, n: 3, data: make([]float32, 90)}
	for i := range r.data {
		r.data[i] = float32(rng.NormFloat64() * 3)
	}
	o := mustOptions(t, labels, `{"resize": "bilinear"}`)
	fw, fh := 17, 11
	rgb := make([]byte, fw*fh*3)
	var seen struct {
		n, w, h int
		sum     float64
		rgb     []byte
	}
	identity := func(prob []float32, n int, rgb []byte, w, h int) ([]float32, error) {
		seen.n, seen.w, seen.h, seen.rgb = n, w, h, rgb
		for i := range w * h {
			s := 0.0
			for _, p := range prob[i*n : (i+1)*n] {
				s += float64(p)
			}
			seen.sum = max(seen.sum, math.Abs(s-1))
		}
		return prob, nil
	}
	plain, plainCls, _ := post(r, rgb, fw, fh, labels, true, o, nil, &scratch{})
	refined, refinedCls, err := post(r, rgb, fw, fh, labels, true, o, identity, &scratch{})
	if err != nil || seen.n != 3 || seen.w != fw || seen.h != fh || &seen.rgb[0] != &rgb[0] || seen.sum > 1e-6 {
		t.Fatalf("refiner saw n %d %dx%d, sums off by %g: %v", seen.n, seen.w, seen.h, seen.sum, err)
	}
	if !slices.Equal(plainCls, refinedCls) || len(plain.Classes) != len(refined.Classes) {
		t.Fatalf("identity refinement changed the class map on %d pixels", countDiff(plainCls, refinedCls))
	}
	allC := func(prob []float32, n int, _ []byte, w, h int) ([]float32, error) {
		out := make([]float32, len(prob))
		for i := range w * h {
			out[i*n+2] = 1
		}
		return out, nil
	}
	out, _, _ := post(r, rgb, fw, fh, labels, true, o, allC, &scratch{})
	if len(out.Classes) != 1 || out.Classes[0].Label != "c" || out.Classes[0].Share != 1 {
		t.Fatalf("refined to all c: %+v", out)
	}
	if _, _, err := post(r, rgb, fw, fh, labels, true, o, func([]float32, int, []byte, int, int) ([]float32, error) {
		return nil, fmt.Errorf("boom")
	}, &scratch{}); err == nil || !strings.Contains(err.Error(), "refine: boom") {
		t.Fatalf("refiner error: %v", err)
	}
	// single channel: two classes, background 1 - p and foreground p
	one := raw([][]float32{{0.2}, {0.9}})
	o1 := mustOptions(t, []string{"person"}, `{}`)
	var got []float32
	_, cls, _ := post(one, make([]byte, 6), 2, 1, []string{"person"}, false, o1, func(prob []float32, n int, _ []byte, w, h int) ([]float32, error) {
		got = slices.Clone(prob)
		return prob, nil
	}, &scratch{})
	if !slices.Equal(got, []float32{0.8, 0.2, float32(1 - float64(float32(0.9))), 0.9}) || !slices.Equal(cls, []uint16{0, 1}) {
		t.Fatalf("single channel probabilities %v, class map %v", got, cls)
	}
}

// BenchmarkPost is the post-processing of a 1280x720 frame from a 64x64
// output of 21 classes (FCN-8s-like logits, smooth regions).
// With crf, the real selfie model's person mask on a real photo is refined
// at the frame size: it stays the same person (IoU >= 0.9 with the plain
// mask), and its edges move to the photo's (some pixels change).
func TestCRFOptionRefinesARealMask(t *testing.T) {
	dir := tfplugintest.ModelDir(t, "EDGEINFER_REAL_MODELS", "selfie")
	in, err := npy.Read(filepath.Join(dir, "golden", "input_input_1.npy"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := in.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	w, h := int(in.Shape[2]), int(in.Shape[1])
	rgb := make([]byte, w*h*3)
	for i := range rgb {
		rgb[i] = byte(math.Round(float64(x[i]) * 255)) // scale 1/255: the photo's pixels
	}
	f := sdk.Frame{Pipeline: testPipeline, Width: w, Height: h, RGB: rgb}
	s, _ := load(t, dir, `{}`)
	person := func(out output) []bool {
		t.Helper()
		if len(out.Classes) != 1 || out.Classes[0].Mask == nil {
			t.Fatalf("want one person mask: %+v", out.Classes)
		}
		m, err := masks.Decode(*out.Classes[0].Mask)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	plainOut, _ := infer(t, s, f)
	plain := person(plainOut)
	configure(t, s, `{"crf": {"downsample": 2}}`)
	refinedOut, _ := infer(t, s, f)
	refined := person(refinedOut)
	inter, union, changed := 0, 0, 0
	for i := range plain {
		if plain[i] && refined[i] {
			inter++
		}
		if plain[i] || refined[i] {
			union++
		}
		if plain[i] != refined[i] {
			changed++
		}
	}
	t.Logf("crf changed %d of %d pixels; IoU with the plain mask %.3f", changed, len(plain), float64(inter)/float64(union))
	if float64(inter) < 0.9*float64(union) || changed == 0 {
		t.Fatalf("refined mask: IoU %d/%d with the plain one, %d pixels changed", inter, union, changed)
	}
}

func BenchmarkPost(b *testing.B) {
	labels := make([]string, 21)
	for i := range labels {
		labels[i] = fmt.Sprint(i)
	}
	r := rawOutput{h: 64, w: 64, n: 21, data: make([]float32, 64*64*21)}
	for y := range 64 {
		for x := range 64 {
			for c := range 21 {
				r.data[(y*64+x)*21+c] = float32(math.Sin(float64(x*(c+1))/40) + math.Cos(float64(y*(c+2))/50))
			}
		}
	}
	for _, js := range []string{`{}`, `{"resize": "bilinear"}`, `{"resize": "bilinear", "masks": false}`} {
		b.Run(js, func(b *testing.B) {
			o, err := parseOptions(json.RawMessage(js), manifest.Manifest{Labels: labels})
			if err != nil {
				b.Fatal(err)
			}
			sc := &scratch{}
			for b.Loop() {
				post(r, nil, 1280, 720, labels, true, o, nil, sc)
			}
		})
	}
}

// floodFill is a plain flood fill labelling of a class map, for checking
// regions: per class value, the sizes of its components.
func floodFill(cls []uint16, w, h int, eight bool) (comp []int, sizes []int) {
	comp = make([]int, len(cls))
	for i := range comp {
		comp[i] = -1
	}
	for p0 := range cls {
		if comp[p0] >= 0 {
			continue
		}
		id := len(sizes)
		comp[p0] = id
		stack, n := []int{p0}, 0
		for len(stack) > 0 {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			n++
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					x, y := p%w+dx, p/w+dy
					if (dx == 0 && dy == 0) || (!eight && dx != 0 && dy != 0) || x < 0 || y < 0 || x >= w || y >= h {
						continue
					}
					if q := y*w + x; comp[q] < 0 && cls[q] == cls[p0] {
						comp[q] = id
						stack = append(stack, q)
					}
				}
			}
		}
		sizes = append(sizes, n)
	}
	return comp, sizes
}

// regions (union-find over runs) finds the components a flood fill finds,
// on random maps of tangled shapes (combs, spirals, checkerboards of
// smoothed noise), at both connectivities and several min_area.
func TestRegionsAgreeWithFloodFill(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	labels := []string{"a", "b", "c", "d", "e"}
	sc := &scratch{}
	for i := range 300 {
		w, h := 1+rng.IntN(70), 1+rng.IntN(50)
		nv := 2 + rng.IntN(4)
		// smoothed noise, quantised into nv values
		f := make([]float64, w*h)
		for j := range f {
			f[j] = rng.Float64()
		}
		for range rng.IntN(4) {
			g := make([]float64, len(f))
			for y := range h {
				for x := range w {
					s, n := 0.0, 0.0
					for dy := -1; dy <= 1; dy++ {
						for dx := -1; dx <= 1; dx++ {
							if xx, yy := x+dx, y+dy; xx >= 0 && yy >= 0 && xx < w && yy < h {
								s, n = s+f[yy*w+xx], n+1
							}
						}
					}
					g[y*w+x] = s / n
				}
			}
			f = g
		}
		lo, hi := slices.Min(f), slices.Max(f)
		cls := make([]uint16, w*h)
		for j, v := range f {
			cls[j] = uint16(min(int((v-lo)/(hi-lo+1e-12)*float64(nv)), nv-1))
		}
		eight := i%2 == 0
		js := fmt.Sprintf(`{"connectivity": %d, "min_area": %d}`, map[bool]int{true: 8, false: 4}[eight], []int{0, 1, 2, 5, 20}[i%5])
		o := mustOptions(t, labels[:nv], js)
		got := regions(cls, w, h, labels[:nv], o, sc)

		comp, sizes := floodFill(cls, w, h, eight)
		type want struct {
			pixels, comps  int
			x1, y1, x2, y2 int
			mask           []bool
		}
		ws := make([]want, nv)
		for v := range ws {
			ws[v] = want{x1: w, y1: h, x2: -1, y2: -1, mask: make([]bool, w*h)}
		}
		counted := map[int]bool{}
		for p, id := range comp {
			if float64(sizes[id]) < o.MinArea {
				continue
			}
			a := &ws[cls[p]]
			if !counted[id] {
				counted[id] = true
				a.comps++
			}
			a.pixels++
			x, y := p%w, p/w
			a.x1, a.y1, a.x2, a.y2 = min(a.x1, x), min(a.y1, y), max(a.x2, x+1), max(a.y2, y+1)
			a.mask[p] = true
		}
		k := 0
		for v, a := range ws {
			if a.pixels == 0 {
				continue
			}
			if k >= len(got) {
				t.Fatalf("map %d (%dx%d, %s): class %d missing", i, w, h, js, v)
			}
			g := got[k]
			k++
			m, err := masks.Decode(*g.Mask)
			if err != nil {
				t.Fatal(err)
			}
			if g.Class != v || g.Pixels != a.pixels || g.Components != a.comps || g.Box != (Box{a.x1, a.y1, a.x2, a.y2}) || !slices.Equal(m, a.mask) {
				t.Fatalf("map %d (%dx%d, %s): class %d: %+v; flood fill %d pixels, %d components, box %d %d %d %d, masks differ on %d",
					i, w, h, js, v, g, a.pixels, a.comps, a.x1, a.y1, a.x2, a.y2, countDiff(m, a.mask))
			}
		}
		if k != len(got) {
			t.Fatalf("map %d: %d classes, flood fill %d", i, len(got), k)
		}
	}
}
