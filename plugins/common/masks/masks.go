// Package masks holds what plugins do with per-pixel masks: pasting a
// detector's fixed-size mask (Mask R-CNN's 28x28) into its box in the
// source frame, and COCO run-length encoding, the compact form results
// carry (pycocotools decodes it: mask.decode(rle)), and the paletted PNG
// of an index map that dashboards show.
package masks

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"

	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
)

// Paste returns the w x h frame mask (row-major) of m, an mw x mh mask
// (row-major, values 0..1) that spans box. A frame pixel is set when its
// centre lies inside the box and m, sampled there bilinearly (half-pixel
// centres, clamped to m's edges), is >= thr. It also returns the number of
// pixels set.
func Paste(m []float32, mw, mh int, box boxes.Box, w, h int, thr float64) ([]bool, int) {
	out := make([]bool, w*h)
	bw, bh := box.X2-box.X1, box.Y2-box.Y1
	if mw <= 0 || mh <= 0 || len(m) < mw*mh || !box.Valid() || bw <= 0 || bh <= 0 {
		return out, 0
	}
	x0 := max(int(math.Floor(box.X1-0.5))+1, 0) // first pixel whose centre is >= X1
	x1 := min(int(math.Ceil(box.X2-0.5)), w)    // pixels with centre < X2
	y0 := max(int(math.Floor(box.Y1-0.5))+1, 0)
	y1 := min(int(math.Ceil(box.Y2-0.5)), h)
	set := 0
	for y := y0; y < y1; y++ {
		v := (float64(y)+0.5-box.Y1)/bh*float64(mh) - 0.5
		vl, vh, vf := sample(v, mh)
		for x := x0; x < x1; x++ {
			u := (float64(x)+0.5-box.X1)/bw*float64(mw) - 0.5
			ul, uh, uf := sample(u, mw)
			top := float64(m[vl*mw+ul]) + (float64(m[vl*mw+uh])-float64(m[vl*mw+ul]))*uf
			bot := float64(m[vh*mw+ul]) + (float64(m[vh*mw+uh])-float64(m[vh*mw+ul]))*uf
			if top+(bot-top)*vf >= thr {
				out[y*w+x] = true
				set++
			}
		}
	}
	return out, set
}

// sample is where position p samples an axis of n values: the two
// neighbours and the fraction between them, clamped to the edges.
func sample(p float64, n int) (lo, hi int, frac float64) {
	f := math.Floor(p)
	lo, frac = int(f), p-f
	hi = lo + 1
	if lo < 0 {
		lo, hi, frac = 0, 0, 0
	}
	if hi >= n {
		hi = n - 1
		if lo >= n-1 {
			lo, frac = n-1, 0
		}
	}
	return lo, hi, frac
}

// RLE is a mask in COCO's compressed run-length form: runs over the
// column-major pixels, starting with a run of zeros, written as
// pycocotools' string. Size is [height, width].
type RLE struct {
	Size   [2]int `json:"size"`
	Counts string `json:"counts"`
}

// Encode run-length encodes the w x h row-major mask.
func Encode(mask []bool, w, h int) RLE {
	var runs []int
	cur, n := false, 0
	for x := range w {
		for y := range h {
			if mask[y*w+x] != cur {
				runs = append(runs, n)
				cur, n = !cur, 0
			}
			n++
		}
	}
	runs = append(runs, n)
	return RLE{Size: [2]int{h, w}, Counts: countsString(runs)}
}

// countsString is pycocotools' rleToString: each run (less the run two
// before it, from the third on) as little-endian 5-bit groups, offset by 48.
func countsString(runs []int) string {
	var b []byte
	for i, r := range runs {
		x := int64(r)
		if i > 2 {
			x -= int64(runs[i-2])
		}
		for more := true; more; {
			c := x & 0x1f
			x >>= 5
			if c&0x10 != 0 {
				more = x != -1
			} else {
				more = x != 0
			}
			if more {
				c |= 0x20
			}
			b = append(b, byte(c+48))
		}
	}
	return string(b)
}

// Decode is the inverse of Encode: the row-major mask of r.
func Decode(r RLE) ([]bool, error) {
	h, w := r.Size[0], r.Size[1]
	if h < 0 || w < 0 {
		return nil, fmt.Errorf("rle size %v", r.Size)
	}
	var runs []int
	s := r.Counts
	for p := 0; p < len(s); {
		var x int64
		k := 0
		for more := true; more; k++ {
			if p >= len(s) {
				return nil, errors.New("rle counts end inside a number")
			}
			c := int64(s[p]) - 48
			p++
			x |= (c & 0x1f) << (5 * k)
			more = c&0x20 != 0
			if !more && c&0x10 != 0 {
				x |= -1 << (5 * (k + 1))
			}
		}
		if len(runs) > 2 {
			x += int64(runs[len(runs)-2])
		}
		runs = append(runs, int(x))
	}
	mask := make([]bool, w*h)
	i, val := 0, false
	for _, n := range runs {
		if n < 0 || i+n > w*h {
			return nil, fmt.Errorf("rle runs cover more than %d pixels", w*h)
		}
		for j := i; j < i+n; j++ {
			mask[(j%h)*w+j/h] = val
		}
		i += n
		val = !val
	}
	if i != w*h {
		return nil, fmt.Errorf("rle runs cover %d of %d pixels", i, w*h)
	}
	return mask, nil
}

// PalettePNG encodes a w x h map of indices (row-major) as a paletted PNG
// for dashboards: index 0 is transparent, and each other index has its own
// opaque colour (hues spread by the golden angle, so neighbours differ).
// The pixel values read back are the indices.
func PalettePNG(index []uint8, w, h int) ([]byte, error) {
	if w <= 0 || h <= 0 || len(index) != w*h {
		return nil, fmt.Errorf("palette png: %d indices for %dx%d", len(index), w, h)
	}
	img := image.NewPaletted(image.Rect(0, 0, w, h), palette)
	copy(img.Pix, index)
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// palette is PalettePNG's: transparent, then 255 colours.
var palette = func() color.Palette {
	p := make(color.Palette, 256)
	p[0] = color.NRGBA{}
	for i := 1; i < 256; i++ {
		h := math.Mod(float64(i-1)*137.508, 360) / 60 // golden angle, in sixths of the circle
		x := 1 - math.Abs(math.Mod(h, 2)-1)
		var r, g, b float64
		switch int(h) {
		case 0:
			r, g = 1, x
		case 1:
			r, g = x, 1
		case 2:
			g, b = 1, x
		case 3:
			g, b = x, 1
		case 4:
			r, b = x, 1
		default:
			r, b = 1, x
		}
		v := 0.55 + 0.45*float64(i%2) // alternate bright and darker shades
		p[i] = color.NRGBA{uint8(255 * r * v), uint8(255 * g * v), uint8(255 * b * v), 255}
	}
	return p
}()

// MaskImage is a frame's mask PNG as a task result carries it beside its
// output: PalettePNG(index) under the name "mask", which the daemon
// publishes on <prefix>/<pipeline>/mask.
func MaskImage(index []uint8, w, h int) (map[string][]byte, error) {
	png, err := PalettePNG(index, w, h)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{"mask": png}, nil
}
