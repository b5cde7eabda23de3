// Package imageprep turns a packed RGB frame into a model's input values:
// a bilinear resize computed exactly as TensorFlow's tf.image.resize does
// (so a model sees what it saw in Python), and normalisation per the
// model's edgeinfer.toml. Task plugins share it; bench/e2e uses it for its
// in-process limit.
package imageprep

import (
	"math"
	"slices"

	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// span is where one output row or column samples the source: between
// positions lo and hi, at fraction frac from lo.
type span struct {
	lo, hi int
	frac   float32
}

// bilinearSpans maps each of out positions to the source, as TensorFlow's
// bilinear resize does without antialiasing (tf.image.resize's default):
// half-pixel centres, source = (i + 0.5) * in / out - 0.5, clamped to the
// edges, in float32.
func bilinearSpans(in, out int) []span {
	scale := float32(in) / float32(out)
	s := make([]span, out)
	for i := range s {
		src := (float32(i)+0.5)*scale - 0.5
		lo := int(math.Floor(float64(src)))
		s[i] = span{lo: max(lo, 0), hi: min(lo+1, in-1), frac: src - float32(lo)}
	}
	return s
}

// Resize returns the packed RGB frame (w x h) as float32 RGB values at
// dw x dh, bilinearly interpolated like tf.image.resize(method="bilinear",
// antialias=False). When the sizes match the values are the pixels
// themselves. dst is reused when it is large enough.
func Resize(dst []float32, rgb []byte, w, h, dw, dh int) []float32 {
	n := dw * dh * 3
	dst = slices.Grow(dst[:0], n)[:n]
	if w == dw && h == dh {
		for i, p := range rgb {
			dst[i] = float32(p)
		}
		return dst
	}
	xs, ys := bilinearSpans(w, dw), bilinearSpans(h, dh)
	out := dst
	for _, y := range ys {
		top, bottom := rgb[y.lo*w*3:], rgb[y.hi*w*3:]
		for _, x := range xs {
			for c := range 3 {
				tl, tr := float32(top[x.lo*3+c]), float32(top[x.hi*3+c])
				bl, br := float32(bottom[x.lo*3+c]), float32(bottom[x.hi*3+c])
				t := tl + (tr-tl)*x.frac
				b := bl + (br-bl)*x.frac
				out[c] = t + (b-t)*y.frac
			}
			out = out[3:]
		}
	}
	return dst
}

// Normalize writes the model input (NHWC, batch 1) from RGB values: gray
// (luma) for one channel, RGB for three, then (v * scale - mean[c]) / std[c].
func Normalize(x, rgb []float32, in manifest.Input) {
	norm := func(v float32, c int) float32 {
		return float32((float64(v)*in.Scale - in.Mean[c]) / in.Std[c])
	}
	for i := range len(rgb) / 3 {
		r, g, b := rgb[3*i], rgb[3*i+1], rgb[3*i+2]
		if in.Channels == 1 {
			x[i] = norm(luma(r, g, b), 0)
			continue
		}
		x[3*i], x[3*i+1], x[3*i+2] = norm(r, 0), norm(g, 1), norm(b, 2)
	}
}

// luma is ITU-R BT.601 luma, 0.299 R + 0.587 G + 0.114 B. It is computed in
// float64 and rounded once, so a gray pixel (R = G = B) gives exactly its value.
func luma(r, g, b float32) float32 {
	return float32(0.299*float64(r) + 0.587*float64(g) + 0.114*float64(b))
}

// Transform maps model-input pixels back to source-frame pixels: a source
// point (x, y) is at (x*ScaleX + PadX, y*ScaleY + PadY) in the input.
type Transform struct {
	ScaleX, ScaleY float64
	PadX, PadY     float64
}

// ToSource maps an input-pixel coordinate back to the source frame.
func (t Transform) ToSource(x, y float64) (float64, float64) {
	return (x - t.PadX) / t.ScaleX, (y - t.PadY) / t.ScaleY
}

// Stretch is the Transform of Resize: each axis scaled on its own.
func Stretch(w, h, dw, dh int) Transform {
	return Transform{ScaleX: float64(dw) / float64(w), ScaleY: float64(dh) / float64(h)}
}

// LetterboxPad is the value of the padding, in pixel units: mid grey, as
// darknet and most YOLO exports pad.
const LetterboxPad = 127.5

// LetterboxSize is where the frame goes in a letterboxed dw x dh input: it
// keeps its aspect ratio, scaled by min(dw/w, dh/h) and rounded to whole
// pixels (nw x nh), centred with the odd pixel of padding on the right and
// bottom.
func LetterboxSize(w, h, dw, dh int) (nw, nh, padX, padY int) {
	s := min(float64(dw)/float64(w), float64(dh)/float64(h))
	nw = min(max(int(math.Round(float64(w)*s)), 1), dw)
	nh = min(max(int(math.Round(float64(h)*s)), 1), dh)
	return nw, nh, (dw - nw) / 2, (dh - nh) / 2
}

// Letterbox returns the packed RGB frame (w x h) as float32 RGB values at
// dw x dh: resized like Resize into the LetterboxSize rectangle, the rest
// LetterboxPad. The Transform maps input pixels back to the frame. inner
// is scratch for the resized frame; both slices are returned for reuse.
func Letterbox(dst, inner []float32, rgb []byte, w, h, dw, dh int) ([]float32, []float32, Transform) {
	nw, nh, px, py := LetterboxSize(w, h, dw, dh)
	inner = Resize(inner, rgb, w, h, nw, nh)
	n := dw * dh * 3
	dst = slices.Grow(dst[:0], n)[:n]
	for i := range dst {
		dst[i] = LetterboxPad
	}
	for y := range nh {
		copy(dst[((py+y)*dw+px)*3:], inner[y*nw*3:(y+1)*nw*3])
	}
	return dst, inner, LetterboxTransform(w, h, dw, dh)
}

// LetterboxTransform is the Transform of Letterbox.
func LetterboxTransform(w, h, dw, dh int) Transform {
	nw, nh, px, py := LetterboxSize(w, h, dw, dh)
	return Transform{ScaleX: float64(nw) / float64(w), ScaleY: float64(nh) / float64(h), PadX: float64(px), PadY: float64(py)}
}
