package main

import (
	"math"
	"slices"

	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
)

// rawOutput is a model's output for one frame, [1, h, w, n] row-major:
// the value of channel c at model pixel (x, y) is data[(y*w+x)*n+c].
type rawOutput struct {
	data    []float32
	h, w, n int
}

// Box is a region's bounding box in frame pixels; x2 and y2 are exclusive.
type Box struct {
	X1 int `json:"x1"`
	Y1 int `json:"y1"`
	X2 int `json:"x2"`
	Y2 int `json:"y2"`
}

// Class is one class found in the frame.
type Class struct {
	Label      string     `json:"label"`
	Class      int        `json:"class"`      // index in the manifest's labels
	Share      float64    `json:"share"`      // pixels / (width * height)
	Pixels     int        `json:"pixels"`     // frame pixels of the class, without the components under min_area
	Box        Box        `json:"box"`        // of those pixels
	Components int        `json:"components"` // connected components (at the pipeline's connectivity) of at least min_area pixels
	Mask       *masks.RLE `json:"mask,omitempty"`
}

// Alert is a class whose share is at or above its pipeline's alert threshold.
type Alert struct {
	Label     string  `json:"label"`
	Share     float64 `json:"share"`
	Threshold float64 `json:"threshold"`
}

// output is the task's JSON output (README.md).
type output struct {
	Classes   []Class `json:"classes"`
	Alerts    []Alert `json:"alerts"`
	Width     int     `json:"width"`  // of the frame; masks and boxes are in its pixels
	Height    int     `json:"height"` //
	NaNValues int     `json:"nan_values,omitempty"`
}

// scratch holds the buffers post reuses from frame to frame.
type scratch struct {
	cls      []uint16 // the frame's class map
	modelCls []uint16 // argmax per model pixel
	runs     []run    // runs of published values, row by row
	size     []int    // pixels per component, on its root run
	mask     []bool
	vals     []float64 // the raw output sanitized
}

// fltMax is float32's largest value: sanitize clamps every raw value to it.
const fltMax = math.MaxFloat32

// sanitize is a raw value as post computes with it: NaN is the lowest value
// there is (-fltMax, so it never wins an argmax and never passes a
// threshold) and infinities are clamped to +-fltMax, so that bilinear
// interpolation stays finite.
func sanitize(v float32) float64 {
	f := float64(v)
	switch {
	case f != f:
		return -fltMax
	case f > fltMax:
		return fltMax
	case f < -fltMax:
		return -fltMax
	}
	return f
}

// nearestIndex maps each of frame frame pixels along an axis to the model
// pixel whose span holds its centre: floor((i + 0.5) * model / frame),
// computed in integers.
func nearestIndex(frame, model int) []int {
	idx := make([]int, frame)
	for i := range idx {
		idx[i] = min((2*i+1)*model/(2*frame), model-1)
	}
	return idx
}

// tap is where a frame pixel samples an axis of the model's output
// bilinearly: between lo and hi, at frac from lo.
type tap struct {
	lo, hi int
	frac   float64
}

// bilinearTaps is the bilinear sampling of a model axis by frame pixels,
// half-pixel centres (u = (i + 0.5) * model / frame - 0.5), clamped to the
// edges, as tf.image.resize(bilinear) and masks.Paste sample.
func bilinearTaps(frame, model int) []tap {
	t := make([]tap, frame)
	for i := range t {
		u := (float64(i)+0.5)*float64(model)/float64(frame) - 0.5
		f := math.Floor(u)
		lo := int(f)
		t[i] = tap{lo: min(max(lo, 0), model-1), hi: min(max(lo+1, 0), model-1), frac: u - f}
	}
	return t
}

// lerp2 is the bilinear interpolation of four corner values, along x
// first. The float64 conversions round every product (Go may otherwise fuse
// a multiply and an add, as on arm64), so the result is the same on every
// platform.
func lerp2(tl, tr, bl, br, fx, fy float64) float64 {
	top := float64(tl*(1-fx)) + float64(tr*fx)
	bot := float64(bl*(1-fx)) + float64(br*fx)
	return float64(top*(1-fy)) + float64(bot*fy)
}

// sigmoid is the logistic function.
func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// classMap is the fw x fh class map of a raw output (README.md: "From
// output to class map"): multi-class, the argmax of the channels (ties: the
// lowest class) of the model pixel under each frame pixel (nearest) or of
// the channels interpolated there (bilinear); single channel, 1 where the
// foreground probability is at or above the threshold, else 0. It also
// returns the number of NaN values in the raw output.
func classMap(r rawOutput, fw, fh int, softmax bool, o options, sc *scratch) ([]uint16, int) {
	nan := 0
	for _, v := range r.data {
		if v != v {
			nan++
		}
	}
	cls := grow(sc.cls, fw*fh)
	sc.cls = cls
	if r.n == 1 {
		prob := func(v float64) float64 { return v }
		if softmax { // a logit: the softmax of (0, v) is sigmoid(v)
			prob = sigmoid
		}
		if o.Resize == "nearest" {
			fg := grow(sc.modelCls, r.h*r.w)
			sc.modelCls = fg
			for i, v := range r.data {
				fg[i] = b2u(prob(sanitize(v)) >= o.threshold)
			}
			fillNearest(cls, fg, fw, fh, r.w, r.h)
			return cls, nan
		}
		xs, ys := bilinearTaps(fw, r.w), bilinearTaps(fh, r.h)
		vals := sanitized(r, sc)
		for y, ty := range ys {
			row := cls[y*fw : (y+1)*fw]
			top, bot := vals[ty.lo*r.w:(ty.lo+1)*r.w], vals[ty.hi*r.w:(ty.hi+1)*r.w]
			for x, tx := range xs {
				v := lerp2(top[tx.lo], top[tx.hi], bot[tx.lo], bot[tx.hi], tx.frac, ty.frac)
				row[x] = b2u(prob(v) >= o.threshold)
			}
		}
		return cls, nan
	}

	// Multi-class: the argmax of every model pixel first.
	mc := grow(sc.modelCls, r.h*r.w)
	sc.modelCls = mc
	for p := range mc {
		mc[p] = uint16(argmax(r.data[p*r.n : (p+1)*r.n]))
	}
	if o.Resize == "nearest" {
		fillNearest(cls, mc, fw, fh, r.w, r.h)
		return cls, nan
	}
	// Bilinear on the logits, then the argmax. Where the four model pixels
	// around a frame pixel agree on a class, the interpolated logits do
	// too (each logit is the same convex combination of the corners', and
	// the class beat every other at each corner), so only the pixels near
	// a class boundary are interpolated channel by channel.
	xs, ys := bilinearTaps(fw, r.w), bilinearTaps(fh, r.h)
	vals := sanitized(r, sc)
	for y, ty := range ys {
		row := cls[y*fw : (y+1)*fw]
		for x, tx := range xs {
			tl, tr := ty.lo*r.w+tx.lo, ty.lo*r.w+tx.hi
			bl, br := ty.hi*r.w+tx.lo, ty.hi*r.w+tx.hi
			if c := mc[tl]; mc[tr] == c && mc[bl] == c && mc[br] == c {
				row[x] = c
				continue
			}
			best, bestV := 0, math.Inf(-1)
			vtl, vtr := vals[tl*r.n:(tl+1)*r.n], vals[tr*r.n:(tr+1)*r.n]
			vbl, vbr := vals[bl*r.n:(bl+1)*r.n], vals[br*r.n:(br+1)*r.n]
			for c := range r.n {
				v := lerp2(vtl[c], vtr[c], vbl[c], vbr[c], tx.frac, ty.frac)
				if v > bestV {
					best, bestV = c, v
				}
			}
			row[x] = uint16(best)
		}
	}
	return cls, nan
}

// sanitized is every raw value sanitized, in sc's buffer.
func sanitized(r rawOutput, sc *scratch) []float64 {
	vals := grow(sc.vals, len(r.data))
	sc.vals = vals
	for i, v := range r.data {
		vals[i] = sanitize(v)
	}
	return vals
}

// argmax is the index of the largest sanitized value (ties: the lowest).
func argmax(v []float32) int {
	best, bestV := 0, sanitize(v[0])
	for c := 1; c < len(v); c++ {
		if s := sanitize(v[c]); s > bestV {
			best, bestV = c, s
		}
	}
	return best
}

// fillNearest writes the fw x fh map of the mw x mh map m, nearest neighbour.
func fillNearest(dst, m []uint16, fw, fh, mw, mh int) {
	xs, ys := nearestIndex(fw, mw), nearestIndex(fh, mh)
	for y, my := range ys {
		row, src := dst[y*fw:(y+1)*fw], m[my*mw:(my+1)*mw]
		for x, mx := range xs {
			row[x] = src[mx]
		}
	}
}

func b2u(b bool) uint16 {
	if b {
		return 1
	}
	return 0
}

// grow returns s resized to n elements (contents unspecified), reusing its storage.
func grow[T any](s []T, n int) []T {
	return slices.Grow(s[:0], n)[:n]
}

// run is a horizontal run of one class-map value in one row: pixels
// [x0, x1) of row y. parent links it to the component it belongs to
// (union-find over runs).
type run struct {
	y, x0, x1 int32
	v         uint16
	parent    int32
}

// find is the root run of run i's component (with path halving).
func find(runs []run, i int32) int32 {
	for runs[i].parent != i {
		runs[i].parent = runs[runs[i].parent].parent
		i = runs[i].parent
	}
	return i
}

// regions publishes the classes of a fw x fh class map (README.md:
// "Regions"): each published class's connected components (4- or
// 8-connectivity), without those under min_area; its pixels, share, box,
// component count and mask. For a single-channel model the class map's 1
// is the foreground, published as class 0 under the one label.
//
// Components are found on runs: each row's runs of a published value are
// joined (union-find) to the runs of the same value they touch in the row
// above: overlapping columns for 4-connectivity, also diagonally adjacent
// ones for 8.
func regions(cls []uint16, fw, fh int, labels []string, o options, sc *scratch) []Class {
	single := len(labels) == 1
	// published is whether pixels of class-map value v are published.
	published := func(v uint16) bool {
		if single {
			return v == 1 && !o.ignore[0]
		}
		return !o.ignore[v]
	}
	touch := int32(0) // how far apart runs in adjacent rows may be and still touch
	if o.Connectivity == 8 {
		touch = 1
	}
	runs := sc.runs[:0]
	prev := 0 // first run of the row above
	for y := range fh {
		row := cls[y*fw : (y+1)*fw]
		cur := len(runs)
		for x := 0; x < fw; {
			v := row[x]
			x0 := x
			for x < fw && row[x] == v {
				x++
			}
			if !published(v) {
				continue
			}
			id := int32(len(runs))
			r := run{y: int32(y), x0: int32(x0), x1: int32(x), v: v, parent: id}
			runs = append(runs, r)
			// runs of the row above that touch [x0 - touch, x1 + touch)
			for ; prev < cur && runs[prev].x1+touch <= r.x0; prev++ {
			}
			for k := prev; k < cur && runs[k].x0 < r.x1+touch; k++ {
				if runs[k].v == v {
					a, b := find(runs, int32(k)), find(runs, id)
					if a != b {
						runs[max(a, b)].parent = min(a, b)
					}
				}
			}
		}
		prev = cur
	}
	sc.runs = runs

	// Every run's parent made its root: a union links the later root to the
	// earlier one, so a parent comes before its children, and in index
	// order a parent's parent is already its root. Then component sizes, on
	// each root run.
	size := grow(sc.size, len(runs))
	sc.size = size
	clear(size)
	for i := range runs {
		runs[i].parent = runs[runs[i].parent].parent
		size[runs[i].parent] += int(runs[i].x1 - runs[i].x0)
	}
	type acc struct {
		pixels, comps  int
		x1, y1, x2, y2 int32 // x2, y2 exclusive
	}
	nv := len(labels)
	if single {
		nv = 2
	}
	accs := make([]acc, nv)
	for i := range accs {
		accs[i] = acc{x1: int32(fw), y1: int32(fh), x2: -1, y2: -1}
	}
	kept := func(i int) bool { return float64(size[runs[i].parent]) >= o.MinArea }
	for i, r := range runs {
		if !kept(i) {
			continue
		}
		a := &accs[r.v]
		if int32(i) == r.parent {
			a.comps++
		}
		a.pixels += int(r.x1 - r.x0)
		a.x1, a.x2 = min(a.x1, r.x0), max(a.x2, r.x1)
		a.y1, a.y2 = min(a.y1, r.y), max(a.y2, r.y+1)
	}

	var out []Class
	var mask []bool
	if o.masks {
		mask = grow(sc.mask, fw*fh)
		clear(mask)
		sc.mask = mask
	}
	for v, a := range accs {
		if a.pixels == 0 {
			continue
		}
		c := Class{
			Class: v, Share: float64(a.pixels) / float64(fw*fh), Pixels: a.pixels,
			Box: Box{X1: int(a.x1), Y1: int(a.y1), X2: int(a.x2), Y2: int(a.y2)}, Components: a.comps,
		}
		if single {
			c.Class = 0
		}
		c.Label = labels[c.Class]
		if o.masks {
			set := func(on bool) {
				for i, r := range runs {
					if int(r.v) == v && kept(i) {
						row := mask[int(r.y)*fw:]
						for x := r.x0; x < r.x1; x++ {
							row[x] = on
						}
					}
				}
			}
			set(true)
			rle := masks.Encode(mask, fw, fh)
			c.Mask = &rle
			set(false)
		}
		out = append(out, c)
	}
	return out
}

// alerts are the published classes whose share is at or above their
// pipeline's alert threshold, in class order.
func alerts(classes []Class, o options) []Alert {
	out := []Alert{}
	for _, a := range o.alerts {
		i := slices.IndexFunc(classes, func(c Class) bool { return c.Class == a.class })
		if i >= 0 && classes[i].Share >= a.threshold {
			out = append(out, Alert{Label: classes[i].Label, Share: classes[i].Share, Threshold: a.threshold})
		}
	}
	return out
}

// post turns one frame's raw output into the task's output and the class
// map (for mask_png). rgb is the frame (fw x fh packed RGB), for refine;
// refine nil: no refinement.
func post(r rawOutput, rgb []byte, fw, fh int, labels []string, softmax bool, o options, refine refineFunc, sc *scratch) (output, []uint16, error) {
	var cls []uint16
	var nan int
	if refine != nil {
		var err error
		if cls, nan, err = refinedClassMap(r, rgb, fw, fh, softmax, o, refine, sc); err != nil {
			return output{}, nil, err
		}
	} else {
		cls, nan = classMap(r, fw, fh, softmax, o, sc)
	}
	classes := regions(cls, fw, fh, labels, o, sc)
	if classes == nil {
		classes = []Class{}
	}
	return output{Classes: classes, Alerts: alerts(classes, o), Width: fw, Height: fh, NaNValues: nan}, cls, nil
}
