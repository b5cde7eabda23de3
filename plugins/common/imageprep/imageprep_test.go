package imageprep

import (
	"math"
	"testing"

	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// The resize against TensorFlow's own tf.image.resize is tested with the
// classify plugin (plugins/classify: TestResizeMatchesTensorFlow), which has
// the Python reference; these are the cases that need none.

func TestResizeToTheSameSizeIsThePixelsThemselves(t *testing.T) {
	rgb := []byte{0, 1, 2, 253, 254, 255, 7, 8, 9, 100, 110, 120}
	got := Resize(nil, rgb, 2, 2, 2, 2)
	for i, v := range rgb {
		if got[i] != float32(v) {
			t.Fatalf("value %d: %v, want %d", i, got[i], v)
		}
	}
}

func TestResizeOfAUniformFrameIsUniform(t *testing.T) {
	rgb := make([]byte, 7*5*3)
	for i := range rgb {
		rgb[i] = []byte{10, 20, 30}[i%3]
	}
	got := Resize(make([]float32, 1), rgb, 7, 5, 3, 11) // dst is grown
	if len(got) != 3*11*3 {
		t.Fatalf("%d values", len(got))
	}
	for i, v := range got {
		if want := float32([]byte{10, 20, 30}[i%3]); v != want {
			t.Fatalf("value %d: %v, want %v", i, v, want)
		}
	}
}

// Gray is luma, and exact for a gray pixel.
func TestNormalizeGrayIsLuma(t *testing.T) {
	in := manifest.Input{Channels: 1, Scale: 1, Mean: []float64{0}, Std: []float64{1}}
	x := make([]float32, 2)
	Normalize(x, []float32{200, 100, 50, 77.25, 77.25, 77.25}, in)
	if want := float32(0.299*200 + 0.587*100 + 0.114*50); math.Abs(float64(x[0]-want)) > 1e-4 {
		t.Errorf("luma of (200, 100, 50) = %v, want %v", x[0], want)
	}
	if x[1] != 77.25 {
		t.Errorf("luma of gray 77.25 = %v, want it exactly", x[1])
	}
	in = manifest.Input{Channels: 3, Scale: 0.5, Mean: []float64{1, 2, 3}, Std: []float64{2, 4, 8}}
	x = make([]float32, 3)
	Normalize(x, []float32{10, 20, 30}, in)
	if x[0] != 2 || x[1] != 2 || x[2] != 1.5 {
		t.Errorf("RGB (10, 20, 30) normalised to %v, want [2 2 1.5]", x)
	}
}

func TestLetterboxKeepsTheAspectRatioPadsGreyAndMapsBack(t *testing.T) {
	w, h := 64, 32 // wide: padded above and below
	rgb := make([]byte, w*h*3)
	for i := range rgb {
		rgb[i] = byte(i % 251)
	}
	dst, _, tr := Letterbox(nil, nil, rgb, w, h, 48, 48)
	nw, nh, px, py := LetterboxSize(w, h, 48, 48)
	if nw != 48 || nh != 24 || px != 0 || py != 12 {
		t.Fatalf("size %dx%d at (%d, %d), want 48x24 at (0, 12)", nw, nh, px, py)
	}
	inner := Resize(nil, rgb, w, h, nw, nh)
	for y := range 48 {
		for x := range 48 {
			for c := range 3 {
				got := dst[(y*48+x)*3+c]
				want := float32(LetterboxPad)
				if y >= py && y < py+nh {
					want = inner[((y-py)*nw+x)*3+c]
				}
				if got != want {
					t.Fatalf("(%d, %d, %d) = %g, want %g", x, y, c, got, want)
				}
			}
		}
	}
	// The input's corners of the frame rectangle are the frame's corners.
	for _, p := range [][4]float64{{0, 12, 0, 0}, {48, 36, 64, 32}, {24, 24, 32, 16}} {
		if x, y := tr.ToSource(p[0], p[1]); math.Abs(x-p[2]) > 1e-9 || math.Abs(y-p[3]) > 1e-9 {
			t.Errorf("input (%g, %g) -> (%g, %g), want (%g, %g)", p[0], p[1], x, y, p[2], p[3])
		}
	}
	// A tall frame is padded left and right, the odd pixel on the right.
	if nw, nh, px, py := LetterboxSize(10, 31, 32, 32); nw != 10 || nh != 32 || px != 11 || py != 0 {
		t.Errorf("tall: %dx%d at (%d, %d)", nw, nh, px, py)
	}
	if tr := Stretch(64, 32, 32, 32); tr.ScaleX != 0.5 || tr.ScaleY != 1 {
		t.Errorf("stretch: %+v", tr)
	}
}
