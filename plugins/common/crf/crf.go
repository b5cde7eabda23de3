// Package crf refines a segmentation model's per-pixel softmax with a
// dense (fully connected) conditional random field, after Krähenbühl &
// Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
// Potentials" (NIPS 2011).
//
// The model. Every pixel i takes a label; its unary energy is
// -log(max(prob_i, 1e-8)) and every pair of pixels i ≠ j pays, when their
// labels differ (Potts compatibility), the sum of two Gaussian kernels:
//
//	appearance  w(1) exp(-|p_i-p_j|²/2θα² - |I_i-I_j|²/2θβ²)
//	smoothness  w(2) exp(-|p_i-p_j|²/2θγ²)
//
// with p a pixel's position and I its RGB colour. Mean-field inference
// updates the per-pixel label distributions Q a few times:
//
//	Q_i(l) ∝ exp(-unary_i(l) - Σ_m w(m) Σ_{l'≠l} Σ_{j≠i} k(m)_ij Q_j(l') / K(m)_i)
//
// where K(m)_i = Σ_j k(m)_ij (j = i included, k_ii = 1) is pixel i's
// kernel mass. The paper's Algorithm 1 leaves the kernels unnormalised;
// the authors' released code divides each kernel by that per-pixel mass
// (its message also keeps j = i, which this package, like the paper,
// leaves out), and so does this package: the pairwise energy of a pixel is
// then at most w(m), whatever the resolution, the kernel widths or the
// downsampling, so the weights compare directly with the unary's
// log-probabilities. The mass includes k_ii so that a pixel whose colour
// no neighbour shares keeps its unary (its message tends to 0, as in the
// paper) instead of being averaged with dissimilar pixels.
//
// The lattice. Σ_j k_ij Q_j over all pixels is a Gaussian filter of Q in
// the kernel's feature space (x/θα, y/θα, R/θβ, G/θβ, B/θβ: d = 5, and
// x/θγ, y/θγ: d = 2). A permutohedral lattice (Adams, Baek & Davis 2010)
// computes it approximately in linear time: splat each pixel onto the d+1
// corners of its lattice simplex, blur the corners along the d+1 lattice
// axes, slice back. Both lattices are built once per frame and reused by
// every iteration. The filter is calibrated to the Gaussian's scale (see
// lattice.scale), and the j = i term taken out is the lattice's mean
// response of a pixel to itself (lattice.self), as the lattice does not
// give each pixel's own. Against the exact O(N²) mean field
// (testdata/reference.py), one iteration on a 10x8 image differs by under
// 0.01 in Q on average and by at most 0.16 at the worst pixel; see
// crf_test.go.
//
// The cost. Per frame of N pixels and n classes: building the lattices
// (hashing N·(d+1) corners, d = 5 and 2, side by side), then per
// iteration about 2·N·(6+3)·n multiply-adds for splat and slice, the
// blurs (cheap: a 640x480 frame touches a few tens of thousands of
// vertices) and an exp per pixel and class. Splat (each CPU its share of
// the pixels into its own buffer, then summed), blur, slice and the update
// run on all CPUs. Params.Downsample f runs all of it on an f×f-averaged
// grid (about f² times cheaper) and upsamples the refined probabilities
// guided by the frame's colours (joint bilateral upsampling), so labels
// still follow the frame's edges. README.md has measured figures.
package crf

import (
	"fmt"
	"math"
	"sync"
)

// probFloor bounds the unary energy: unary = -log(max(prob, probFloor)).
const probFloor = 1e-8

// upsampleFloor is the least colour weight a grid cell gets when
// upsampling, so a pixel unlike all four cells around it still takes
// their bilinear blend.
const upsampleFloor = 1e-3

// Params of the dense CRF. Zero fields take the defaults (Defaults).
// The JSON names are those of a pipeline's options (crf = {...}) and of
// Validate's messages.
type Params struct {
	Iterations int     `json:"iterations"` // mean-field iterations; default 5
	SmoothXY   float64 `json:"smooth_xy"`  // θγ: std of the smoothness kernel, frame pixels; default 3
	SmoothW    float64 `json:"smooth_w"`   // w(2); default 3
	ApprXY     float64 `json:"appr_xy"`    // θα: positional std of the appearance kernel, frame pixels; default 60
	ApprRGB    float64 `json:"appr_rgb"`   // θβ: colour std of the appearance kernel, 0..255 units; default 10
	ApprW      float64 `json:"appr_w"`     // w(1); default 5
	Downsample int     `json:"downsample"` // run on a grid downsampled by this factor, then upsample; default 1 (full resolution)
}

// Defaults returns p with its zero fields set to the defaults.
func (p Params) Defaults() Params {
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setFloat := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	setInt(&p.Iterations, 5)
	setFloat(&p.SmoothXY, 3)
	setFloat(&p.SmoothW, 3)
	setFloat(&p.ApprXY, 60)
	setFloat(&p.ApprRGB, 10)
	setFloat(&p.ApprW, 5)
	setInt(&p.Downsample, 1)
	return p
}

// Validate checks p as it is (call Defaults first to fill zero fields);
// the error names the first bad field.
func (p Params) Validate() error {
	ints := []struct {
		name   string
		v      int
		lo, hi int
	}{
		{"iterations", p.Iterations, 1, 20},
		{"downsample", p.Downsample, 1, 8},
	}
	for _, f := range ints {
		if f.v < f.lo || f.v > f.hi {
			return fmt.Errorf("crf.%s is %d, must be %d..%d", f.name, f.v, f.lo, f.hi)
		}
	}
	floats := []struct {
		name   string
		v      float64
		lo, hi float64
	}{
		{"smooth_xy", p.SmoothXY, 0.1, 10000},
		{"smooth_w", p.SmoothW, 0, 100},
		{"appr_xy", p.ApprXY, 0.1, 10000},
		{"appr_rgb", p.ApprRGB, 0.1, 1000},
		{"appr_w", p.ApprW, 0, 100},
	}
	for _, f := range floats {
		if !(f.v >= f.lo && f.v <= f.hi) { // also catches NaN
			return fmt.Errorf("crf.%s is %g, must be %g..%g", f.name, f.v, f.lo, f.hi)
		}
	}
	return nil
}

// Refine returns the refined per-pixel class probabilities (h*w*n, row-major,
// class fastest) of prob (the model's softmax, same layout), given the frame's
// RGB (h*w*3). Unary = -log(max(prob, 1e-8)).
//
// prob need not be normalised per pixel (it is, after the floor); a NaN
// or infinite value is an error naming the first such pixel. Zero fields
// of p take the defaults.
func Refine(prob []float32, n int, rgb []byte, w, h int, p Params) ([]float32, error) {
	p = p.Defaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	switch {
	case n < 1:
		return nil, fmt.Errorf("crf: %d classes, must be at least 1", n)
	case w < 1 || h < 1:
		return nil, fmt.Errorf("crf: image is %dx%d, must be at least 1x1", w, h)
	case len(prob) != w*h*n:
		return nil, fmt.Errorf("crf: prob has %d values, want w*h*n = %d*%d*%d = %d", len(prob), w, h, n, w*h*n)
	case len(rgb) != w*h*3:
		return nil, fmt.Errorf("crf: rgb has %d values, want w*h*3 = %d", len(rgb), w*h*3)
	}
	for i, v := range prob {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("crf: prob is %v at pixel %d (x %d, y %d), class %d", v, i/n, i/n%w, i/n/w, i%n)
		}
	}
	g := newGrid(prob, n, rgb, w, h, p.Downsample)
	q := g.meanField(p)
	if g.f == 1 {
		return q, nil
	}
	return g.upsample(q, rgb, w, h, p.ApprRGB), nil
}

// grid is the frame, or the frame averaged over f×f cells: what mean
// field runs on.
type grid struct {
	w, h, f, n int
	prob       []float32 // w*h*n: max(prob, probFloor), prob the cell's mean: exp(-unary)
	rgb        []float32 // w*h*3: the cell's mean colour
}

func newGrid(prob []float32, n int, rgb []byte, w, h, f int) *grid {
	g := &grid{w: (w + f - 1) / f, h: (h + f - 1) / f, f: f, n: n}
	g.prob = make([]float32, g.w*g.h*n)
	g.rgb = make([]float32, g.w*g.h*3)
	parallel(g.h, func(_, lo, hi int) {
		sum := make([]float64, n+3)
		for gy := lo; gy < hi; gy++ {
			for gx := range g.w {
				clear(sum)
				cnt := 0
				for y := gy * f; y < min((gy+1)*f, h); y++ {
					for x := gx * f; x < min((gx+1)*f, w); x++ {
						i := y*w + x
						for k := range n {
							sum[k] += float64(prob[i*n+k])
						}
						for c := range 3 {
							sum[n+c] += float64(rgb[i*3+c])
						}
						cnt++
					}
				}
				gi := gy*g.w + gx
				for k := range n {
					g.prob[gi*n+k] = float32(max(sum[k]/float64(cnt), probFloor))
				}
				for c := range 3 {
					g.rgb[gi*3+c] = float32(sum[n+c] / float64(cnt))
				}
			}
		}
	})
	return g
}

// kernel is one Gaussian pairwise term on a grid: its lattice, the
// lattice's mean response of a point to itself, and per point w(m)/K(m)_i.
//
// A point's own response varies with where it lies in its simplex, so
// subtracting the mean leaves a little of Q_i in (or takes a little too
// much out, then the message is clamped at 0). It matters only where the
// kernel mass is near 1: a pixel no other pixel resembles (or a 1x1
// image) gets a message of up to about 0.4·Q_i from itself for the
// appearance kernel, a mild sharpening of its own distribution, where the
// exact model gives 0.
type kernel struct {
	lat   *lattice
	self  float32
	scale []float32
	msg   []float32 // the filtered Q, points*n
}

func newKernel(feat []float32, d int, weight float64, n int) *kernel {
	lat := newLattice(feat, d)
	mass := make([]float32, lat.points)
	ones := make([]float32, lat.points)
	for i := range ones {
		ones[i] = 1
	}
	lat.filter(mass, ones, 1)
	self := lat.self()
	for i, m := range mass {
		// K_i = 1 + Σ_{j≠i} k_ij; the lattice's Σ_j minus its self
		// response can dip below 0 for an isolated point.
		mass[i] = float32(weight / (1 + max(float64(m)-self, 0)))
	}
	return &kernel{lat: lat, self: float32(self), scale: mass, msg: make([]float32, lat.points*n)}
}

// meanField runs p.Iterations mean-field updates on the grid and returns
// Q (points*n).
func (g *grid) meanField(p Params) []float32 {
	pts, n := g.w*g.h, g.n
	f := float64(g.f)
	sxy := float32(f / p.SmoothXY) // grid units to std units
	axy := float32(f / p.ApprXY)
	argb := float32(1 / p.ApprRGB)
	fs := make([]float32, pts*2)
	fa := make([]float32, pts*5)
	for y := range g.h {
		for x := range g.w {
			i := y*g.w + x
			fs[i*2], fs[i*2+1] = float32(x)*sxy, float32(y)*sxy
			fa[i*5], fa[i*5+1] = float32(x)*axy, float32(y)*axy
			for c := range 3 {
				fa[i*5+2+c] = g.rgb[i*3+c] * argb
			}
		}
	}
	// The two lattices are independent: build them side by side (most of
	// the building, hashing the corners, runs on one CPU).
	var smooth *kernel
	var wg sync.WaitGroup
	wg.Go(func() { smooth = newKernel(fs, 2, p.SmoothW, n) })
	appr := newKernel(fa, 5, p.ApprW, n)
	wg.Wait()

	q := make([]float32, pts*n)
	copy(q, g.prob)
	parallel(pts, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			normalise(q[i*n : (i+1)*n])
		}
	})
	selfA, selfS := appr.self, smooth.self
	for range p.Iterations {
		appr.lat.filter(appr.msg, q, n)
		smooth.lat.filter(smooth.msg, q, n)
		parallel(pts, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				qi := q[i*n : (i+1)*n]
				pr := g.prob[i*n : (i+1)*n][:len(qi)]
				ma := appr.msg[i*n : (i+1)*n][:len(qi)]
				ms := smooth.msg[i*n : (i+1)*n][:len(qi)]
				sa, ss := appr.scale[i], smooth.scale[i]
				// Potts: label l's pairwise energy is -Σ_m w(m)·(message
				// of l), plus the same total for every label, which the
				// normalisation drops. The filters include j = i: take
				// Q_i away. The exact message is >= 0; the lattice's can
				// dip below. Q_i(l) ∝ exp(-unary - pairwise) = prob·
				// exp(-pairwise), shifted by the largest gain.
				top := float32(0)
				for l, v := range qi {
					qi[l] = sa*max(ma[l]-selfA*v, 0) + ss*max(ms[l]-selfS*v, 0)
					top = max(top, qi[l])
				}
				for l, e := range qi {
					qi[l] = pr[l] * expf(e-top)
				}
				normalise(qi)
			}
		})
	}
	return q
}

// normalise scales v to sum to 1.
func normalise(v []float32) {
	sum := float32(0)
	for _, x := range v {
		sum += x
	}
	inv := 1 / sum
	for i := range v {
		v[i] *= inv
	}
}

// expf is e^x for x <= 0 in float32, as Cephes' expf computes it
// (x = n·ln2 + r, |r| <= ln2/2, e^r by a degree-7 polynomial; relative
// error below 3e-7), several times cheaper than math.Exp.
func expf(x float32) float32 {
	if x < -87 {
		return 0 // below float32's normal range
	}
	n := int32(x*math.Log2E - 0.5) // round(x·log2 e), x <= 0
	r := x - float32(n)*0.693359375 + float32(n)*2.12194440e-4
	p := ((((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+
		4.1665795894e-2)*r+1.6666665459e-1)*r+5.0000001201e-1)*r*r + r + 1)
	return p * math.Float32frombits(uint32(n+127)<<23)
}

// upsample returns the frame's probabilities (w*h*n) from the grid's q:
// each pixel blends the four grid cells around it, bilinearly, each
// weighted also by exp(-|I - I_cell|²/2θβ²) (joint bilateral
// upsampling), so a pixel takes after the cells of its own colour.
func (g *grid) upsample(q []float32, rgb []byte, w, h int, rgbStd float64) []float32 {
	n := g.n
	out := make([]float32, w*h*n)
	inv := float32(1 / (2 * rgbStd * rgbStd))
	parallel(h, func(_, lo, hi int) {
		acc := make([]float32, n)
		for y := lo; y < hi; y++ {
			y0, y1, fy := g.taps(y, g.h)
			for x := range w {
				x0, x1, fx := g.taps(x, g.w)
				cells := [4]struct {
					i int
					w float32
				}{
					{y0*g.w + x0, (1 - fy) * (1 - fx)}, {y0*g.w + x1, (1 - fy) * fx},
					{y1*g.w + x0, fy * (1 - fx)}, {y1*g.w + x1, fy * fx},
				}
				clear(acc)
				sum := float32(0)
				px := rgb[(y*w+x)*3 : (y*w+x)*3+3]
				for _, c := range cells {
					d2 := float32(0)
					for k := range 3 {
						dc := float32(px[k]) - g.rgb[c.i*3+k]
						d2 += dc * dc
					}
					wt := c.w * (expf(-d2*inv) + upsampleFloor)
					for k, v := range q[c.i*n : (c.i+1)*n] {
						acc[k] += wt * v
					}
					sum += wt
				}
				dst := out[(y*w+x)*n : (y*w+x+1)*n]
				for k := range dst {
					dst[k] = acc[k] / sum
				}
			}
		}
	})
	return out
}

// taps gives, for frame coordinate x, the two grid cells (of size cells
// along that axis) whose centres surround the pixel's centre and the
// weight of the second.
func (g *grid) taps(x, size int) (lo, hi int, frac float32) {
	u := (float32(x)+0.5)/float32(g.f) - 0.5
	lo = int(math.Floor(float64(u)))
	frac = u - float32(lo)
	switch {
	case lo < 0:
		return 0, 0, 0
	case lo >= size-1:
		return size - 1, size - 1, 0
	}
	return lo, lo + 1, frac
}
