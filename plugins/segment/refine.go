package main

// The optional CRF step between the model's output and the class map
// (option crf, plugins/common/crf): the frame-size class probabilities the
// refiner takes, and the class map taken from what it returns. Regions,
// alerts and mask_png then read that class map as usual.

import (
	"fmt"
	"math"
)

// refineFunc refines class probabilities at the frame size: prob holds w*h
// pixels of n probabilities each, pixel-major (prob[(y*w+x)*n+c], as TF's
// NHWC), rgb the frame (packed RGB, w*h*3). It returns probabilities in the
// same layout.
type refineFunc func(prob []float32, n int, rgb []byte, w, h int) ([]float32, error)

// frameProbabilities are the class probabilities at every frame pixel: the
// raw output resized bilinearly to the frame (as for resize = "bilinear"),
// then, for multi-class, a softmax over the channels (output.softmax =
// true) or the values as they are, clamped to [0, 1] (false: already
// probabilities); a single-channel model gives two classes, background
// 1 - p and foreground p (p = sigmoid of the value with output.softmax =
// true, else the value clamped to [0, 1]). NaN and Inf were sanitized
// first (post.go), so every probability is finite.
func frameProbabilities(r rawOutput, fw, fh int, softmax bool) ([]float32, int) {
	n := r.n
	if n == 1 {
		n = 2
	}
	prob := make([]float32, fw*fh*n)
	xs, ys := bilinearTaps(fw, r.w), bilinearTaps(fh, r.h)
	v := make([]float64, r.n)
	p := prob
	for _, ty := range ys {
		for _, tx := range xs {
			tl, tr := ty.lo*r.w+tx.lo, ty.lo*r.w+tx.hi
			bl, br := ty.hi*r.w+tx.lo, ty.hi*r.w+tx.hi
			for c := range r.n {
				v[c] = lerp2(sanitize(r.data[tl*r.n+c]), sanitize(r.data[tr*r.n+c]),
					sanitize(r.data[bl*r.n+c]), sanitize(r.data[br*r.n+c]), tx.frac, ty.frac)
			}
			switch {
			case r.n == 1:
				fg := v[0]
				if softmax {
					fg = sigmoid(fg)
				}
				fg = clamp01(fg)
				p[0], p[1] = float32(1-fg), float32(fg)
			case softmax:
				hi := math.Inf(-1)
				for _, x := range v {
					hi = max(hi, x)
				}
				sum := 0.0
				for c, x := range v {
					v[c] = math.Exp(x - hi)
					sum += v[c]
				}
				for c, x := range v {
					p[c] = float32(x / sum)
				}
			default:
				for c, x := range v {
					p[c] = float32(clamp01(x))
				}
			}
			p = p[n:]
		}
	}
	return prob, n
}

func clamp01(x float64) float64 { return min(max(x, 0), 1) }

// refinedClassMap is classMap with refine between the frame-size
// probabilities and the class map: the argmax of the refined probabilities
// (ties: the lowest class), or for a single-channel model foreground where
// the refined foreground probability is at or above the threshold.
func refinedClassMap(r rawOutput, rgb []byte, fw, fh int, softmax bool, o options, refine refineFunc, sc *scratch) ([]uint16, int, error) {
	nan := 0
	for _, v := range r.data {
		if v != v {
			nan++
		}
	}
	prob, n := frameProbabilities(r, fw, fh, softmax)
	refined, err := refine(prob, n, rgb, fw, fh)
	if err != nil {
		return nil, 0, fmt.Errorf("refine: %w", err)
	}
	if len(refined) != len(prob) {
		return nil, 0, fmt.Errorf("refine returned %d probabilities for %d", len(refined), len(prob))
	}
	cls := grow(sc.cls, fw*fh)
	sc.cls = cls
	for i := range cls {
		px := refined[i*n : (i+1)*n]
		if r.n == 1 {
			cls[i] = b2u(float64(px[1]) >= o.threshold)
		} else {
			cls[i] = uint16(argmax(px))
		}
	}
	return cls, nan, nil
}
