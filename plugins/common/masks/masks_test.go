package masks

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
)

func randomMask(r *rand.Rand, w, h int, density float64) []bool {
	m := make([]bool, w*h)
	// Blobs, so that runs are long and short.
	for range 1 + r.IntN(5) {
		cx, cy, rad := r.Float64()*float64(w), r.Float64()*float64(h), 1+r.Float64()*float64(w)/3
		for y := range h {
			for x := range w {
				dx, dy := float64(x)-cx, float64(y)-cy
				if dx*dx+dy*dy < rad*rad {
					m[y*w+x] = true
				}
			}
		}
	}
	for i := range m {
		if r.Float64() < density {
			m[i] = !m[i]
		}
	}
	return m
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, sz := range [][2]int{{1, 1}, {7, 3}, {64, 48}, {300, 200}} {
		for _, density := range []float64{0, 0.01, 0.5} {
			m := randomMask(r, sz[0], sz[1], density)
			got, err := Decode(Encode(m, sz[0], sz[1]))
			if err != nil || !slices.Equal(got, m) {
				t.Fatalf("%dx%d density %g: round trip differs (%v)", sz[0], sz[1], density, err)
			}
		}
	}
	empty := Encode(make([]bool, 12), 4, 3)
	if empty.Counts != "<" || empty.Size != [2]int{3, 4} { // one run of 12 zeros
		t.Fatalf("empty mask: %+v", empty)
	}
}

func TestDecodeRefusesBrokenCounts(t *testing.T) {
	for _, r := range []RLE{{Size: [2]int{2, 2}, Counts: "9"}, {Size: [2]int{2, 2}, Counts: "2"}, {Size: [2]int{2, 2}, Counts: "p"}} {
		if _, err := Decode(r); err == nil {
			t.Errorf("%+v decoded", r)
		}
	}
}

// Encode gives pycocotools' own strings, and pycocotools decodes them to
// the same masks: the independent reference.
func TestEncodeMatchesPycocotools(t *testing.T) {
	py := filepath.Join(repoRoot(t), ".venv", "bin", "python")
	r := rand.New(rand.NewPCG(7, 8))
	type sample struct {
		W, H   int
		Pixels []int
		RLE    RLE
	}
	var samples []sample
	for i := range 20 {
		w, h := 1+r.IntN(90), 1+r.IntN(70)
		m := randomMask(r, w, h, []float64{0, 0.02, 0.3}[i%3])
		px := make([]int, len(m))
		for j, v := range m {
			if v {
				px[j] = 1
			}
		}
		samples = append(samples, sample{w, h, px, Encode(m, w, h)})
	}
	in, err := json.Marshal(samples)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-c", `
import json, sys
import numpy as np
from pycocotools import mask
out = []
for s in json.load(sys.stdin):
    m = np.asfortranarray(np.array(s["Pixels"], np.uint8).reshape(s["H"], s["W"]))
    enc = mask.encode(m)
    dec = mask.decode({"size": s["RLE"]["size"], "counts": s["RLE"]["counts"].encode()})
    out.append({"counts": enc["counts"].decode(), "size": list(enc["size"]), "decoded_equal": bool((dec == m).all())})
json.dump(out, sys.stdout)
`)
	cmd.Stdin = bytes.NewReader(in)
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("pycocotools: %v", err)
	}
	var ref []struct {
		Counts       string `json:"counts"`
		Size         [2]int `json:"size"`
		DecodedEqual bool   `json:"decoded_equal"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	for i, s := range samples {
		if ref[i].Counts != s.RLE.Counts || ref[i].Size != s.RLE.Size || !ref[i].DecodedEqual {
			t.Fatalf("sample %d (%dx%d): ours %+v, pycocotools %+v", i, s.W, s.H, s.RLE, ref[i])
		}
	}
}

func TestPasteFillsTheBoxWhereTheMaskIsOn(t *testing.T) {
	// A 2x2 mask, left column on: the left half of the box.
	m := []float32{1, 0, 1, 0}
	got, n := Paste(m, 2, 2, boxes.Box{X1: 2, Y1: 1, X2: 10, Y2: 5}, 12, 8, 0.5)
	want := 0
	for y := range 8 {
		for x := range 12 {
			// Pixel centres x+0.5 in [2, 10); u = (x+0.5-2)/8*2-0.5 <= 0.5 -> value >= 0.5.
			in := y >= 1 && y < 5 && x >= 2 && x < 10
			on := in && (float64(x)+0.5-2)/8*2-0.5 <= 0.5
			if got[y*12+x] != on {
				t.Fatalf("pixel (%d, %d) = %v, want %v", x, y, got[y*12+x], on)
			}
			if on {
				want++
			}
		}
	}
	if n != want || want == 0 {
		t.Fatalf("%d pixels set, want %d", n, want)
	}
	// Outside the frame, inverted or NaN boxes paste nothing and do not panic.
	for _, b := range []boxes.Box{{X1: -50, Y1: -50, X2: -10, Y2: -10}, {X1: 5, Y1: 5, X2: 1, Y2: 1}, {X1: 0, Y1: 0, X2: math.NaN(), Y2: 3}} {
		if _, n := Paste(m, 2, 2, b, 12, 8, 0.5); n != 0 {
			t.Errorf("box %v set %d pixels", b, n)
		}
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = parent
	}
}

// A palette PNG decodes back to its indices, with 0 transparent and every
// other index an opaque colour different from its neighbours'.
func TestPalettePNGKeepsTheIndices(t *testing.T) {
	w, h := 37, 21
	index := make([]uint8, w*h)
	for i := range index {
		index[i] = uint8(i * 7 % 256)
	}
	b, err := PalettePNG(index, w, h)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := img.(*image.Paletted)
	if !ok || p.Bounds().Dx() != w || p.Bounds().Dy() != h {
		t.Fatalf("decoded %T %v", img, img.Bounds())
	}
	for y := range h {
		for x := range w {
			if got := p.ColorIndexAt(x, y); got != index[y*w+x] {
				t.Fatalf("pixel (%d, %d) = %d, want %d", x, y, got, index[y*w+x])
			}
		}
	}
	if _, _, _, a := p.Palette[0].RGBA(); a != 0 {
		t.Fatal("index 0 is not transparent")
	}
	for i := 1; i < 256; i++ {
		if _, _, _, a := p.Palette[i].RGBA(); a != 0xffff || p.Palette[i] == p.Palette[i-1] {
			t.Fatalf("colour %d: %v (previous %v)", i, p.Palette[i], p.Palette[i-1])
		}
	}
	if _, err := PalettePNG(index, w, h+1); err == nil {
		t.Fatal("a short index map was encoded")
	}
}
