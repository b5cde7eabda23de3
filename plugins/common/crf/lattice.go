package crf

import (
	"math"
	"runtime"
	"slices"
	"sync"
)

// lattice is a permutohedral lattice (Adams, Baek & Davis, "Fast
// High-Dimensional Filtering Using the Permutohedral Lattice", 2010) over
// a fixed set of points in a d-dimensional feature space, each feature
// already divided by its kernel's standard deviation. filter then gives,
// for every point i and every channel, approximately
// Σ_j exp(-|f_i-f_j|²/2) v_j (self included), in O(points·(d+1)) per
// channel instead of O(points²).
//
// Every point lies in one simplex of the lattice (the d-dimensional
// hyperplane x_0+…+x_d = 0 tiled by simplices); only the simplices' corners
// that some point touches exist. filter splats each point's values onto
// its d+1 corners with barycentric weights, blurs the corners with the
// kernel [1/2 1 1/2] along each of the d+1 lattice axes, and slices, reading
// each point's value back from its corners with the same weights.
type lattice struct {
	d      int
	points int
	verts  int
	// corner and bary: for point p, its simplex's corners (vertex index + 1,
	// row 0 of the value buffers being an always-zero row) and barycentric
	// weights, at [p*(d+1) : (p+1)*(d+1)].
	corner []int32
	bary   []float32
	// nbr[(axis*verts+v)*2 + {0,1}]: v's two neighbours along the axis,
	// vertex index + 1, or 0 where the lattice has no such vertex.
	nbr []int32
	// filter's value buffers, (verts+1)*channels each, kept between
	// calls: one per part of the points splatting in parallel, and one
	// more for the blur to write into.
	bufs [][]float32
}

// newLattice builds the lattice of points whose features are
// feat[p*d : (p+1)*d], following Adams et al. 2010 (elevation onto the
// hyperplane, the nearest zero-remainder point, the enclosing simplex
// from the ranks of the remainders, barycentric weights).
func newLattice(feat []float32, d int) *lattice {
	n := len(feat) / d
	d1 := d + 1
	l := &lattice{d: d, points: n, corner: make([]int32, n*d1), bary: make([]float32, n*d1)}

	// Per point, independently: the simplex's zero corner (rem0) and the
	// ranks that order its other corners, and the barycentric weights.
	rem0 := make([]int32, n*d1)
	rank := make([]int8, n*d1)
	scale := make([]float64, d)
	invStd := math.Sqrt(2.0/3.0) * float64(d1) // the blur's std is sqrt(2/3)(d+1) lattice units
	for i := range scale {
		scale[i] = invStd / math.Sqrt(float64((i+1)*(i+2)))
	}
	fd1, inv := float64(d1), 1/float64(d1)
	parallel(n, func(_, lo, hi int) {
		el := make([]float64, d1)
		b := make([]float64, d+2)
		for p := lo; p < hi; p++ {
			f := feat[p*d : (p+1)*d]
			r0 := rem0[p*d1 : (p+1)*d1]
			rk := rank[p*d1 : (p+1)*d1]
			// Elevate: el = E f, on the hyperplane Σ el = 0.
			sm := 0.0
			for j := d; j > 0; j-- {
				cf := float64(f[j-1]) * scale[j-1]
				el[j] = sm - float64(j)*cf
				sm += cf
			}
			el[0] = sm
			// Nearest point whose coordinates are multiples of d+1; el
			// keeps the remainders.
			sum := 0
			for i := range d1 {
				down := math.Floor(el[i]*inv) * fd1
				if down+fd1-el[i] < el[i]-down {
					down += fd1
				}
				r0[i] = int32(down)
				el[i] -= down
				sum += int(r0[i]) / d1
			}
			// Rank the remainders; bring the point back onto the plane.
			clear(rk)
			for i := range d {
				for j := i + 1; j <= d; j++ {
					if el[i] < el[j] {
						rk[i]++
					} else {
						rk[j]++
					}
				}
			}
			for i := range d1 {
				r := int(rk[i]) + sum
				switch {
				case r < 0:
					r += d1
					r0[i] += int32(d1)
					el[i] -= fd1
				case r > d:
					r -= d1
					r0[i] -= int32(d1)
					el[i] += fd1
				}
				rk[i] = int8(r)
			}
			// Barycentric weights of the d+1 corners.
			clear(b)
			for i := range d1 {
				v := el[i] * inv
				b[d-int(rk[i])] += v
				b[d-int(rk[i])+1] -= v
			}
			b[0] += 1 + b[d+1]
			for r := range d1 {
				l.bary[p*d1+r] = float32(b[r])
			}
		}
	})

	// Corner r of a point's simplex: rem0 + the canonical simplex's
	// corner r permuted by the ranks (Adams et al., p. 5). The hash table
	// names the vertices in the order points first touch them.
	ht := newHashTable(d)
	key := make([]int32, d)
	for p := range n {
		r0 := rem0[p*d1 : (p+1)*d1]
		rk := rank[p*d1 : (p+1)*d1]
		if p > 0 && slices.Equal(r0, rem0[(p-1)*d1:p*d1]) && slices.Equal(rk, rank[(p-1)*d1:p*d1]) {
			// The previous pixel's simplex, as neighbours' often is.
			copy(l.corner[p*d1:(p+1)*d1], l.corner[(p-1)*d1:p*d1])
			continue
		}
		for r := range d1 {
			for i := range d {
				c := int32(r)
				if int(rk[i]) > d-r {
					c -= int32(d1)
				}
				key[i] = r0[i] + c
			}
			l.corner[p*d1+r] = ht.insert(key) + 1
		}
	}
	l.verts = ht.filled

	// Neighbours along each axis j: key ± (1,…,1) with coordinate j
	// moved by ∓d instead (the d+1-th coordinate is implied).
	m := l.verts
	l.nbr = make([]int32, d1*m*2)
	parallel(m, func(_, lo, hi int) {
		n1, n2 := make([]int32, d), make([]int32, d)
		for v := lo; v < hi; v++ {
			k := ht.keys[v*d : (v+1)*d]
			for j := range d1 {
				for i := range d {
					n1[i], n2[i] = k[i]-1, k[i]+1
				}
				if j < d {
					n1[j], n2[j] = k[j]+int32(d), k[j]-int32(d)
				}
				l.nbr[(j*m+v)*2] = ht.find(n1) + 1
				l.nbr[(j*m+v)*2+1] = ht.find(n2) + 1
			}
		}
	})

	return l
}

// filter sets out (points*c, point-major) to the lattice's Gaussian
// filtering of in (same layout): splat, blur along the d+1 axes, slice.
func (l *lattice) filter(out, in []float32, c int) {
	d1, m := l.d+1, l.verts
	size := (m + 1) * c
	parts := workers(l.points)
	if len(l.bufs) != parts+1 || len(l.bufs[0]) != size {
		l.bufs = make([][]float32, parts+1)
		for i := range l.bufs {
			l.bufs[i] = make([]float32, size)
		}
	}

	// Splat: each part of the points into its own buffer, then the sum.
	parallel(l.points, func(part, lo, hi int) {
		val := l.bufs[part]
		clear(val)
		for p := lo; p < hi; p++ {
			src := in[p*c : (p+1)*c]
			for r := range d1 {
				o := int(l.corner[p*d1+r]) * c
				w := l.bary[p*d1+r]
				dst := val[o : o+c]
				for k, v := range src {
					dst[k] += w * v
				}
			}
		}
	})
	val, nv := l.bufs[0], l.bufs[parts]
	parallel(size, func(_, lo, hi int) {
		for _, b := range l.bufs[1:parts] {
			for i := lo; i < hi; i++ {
				val[i] += b[i]
			}
		}
	})

	clear(nv[:c]) // row 0, the absent neighbour, stays zero in both
	for j := range d1 {
		nb := l.nbr[j*m*2 : (j+1)*m*2]
		parallel(m, func(_, lo, hi int) {
			for v := lo; v < hi; v++ {
				o := (v + 1) * c
				a, b := int(nb[2*v])*c, int(nb[2*v+1])*c
				old, dst := val[o:o+c], nv[o:o+c]
				na, nb := val[a:a+c], val[b:b+c]
				for k := range dst {
					dst[k] = old[k] + 0.5*(na[k]+nb[k])
				}
			}
		})
		val, nv = nv, val
	}

	scale := float32(l.scale())
	parallel(l.points, func(_, lo, hi int) {
		for p := lo; p < hi; p++ {
			dst := out[p*c : (p+1)*c]
			clear(dst)
			for r := range d1 {
				o := int(l.corner[p*d1+r]) * c
				w := scale * l.bary[p*d1+r]
				for k, v := range val[o : o+c] {
					dst[k] += w * v
				}
			}
		}
	})
}

// scale calibrates filter to the Gaussian's units. Splat and slice keep
// a value's total and each axis's blur [1/2 1 1/2] doubles it, so a
// point's value spreads with total 2^(d+1) over vertices that each stand
// for (3/2)^(d/2)/sqrt(d+1) of feature volume ((d+1)·A*_d has covolume
// (d+1)^(d-1/2) on the hyperplane, the features are scaled by
// sqrt(2/3)(d+1)), whereas ∫exp(-|x|²/2)dx = (2π)^(d/2). On dense random
// points the calibrated mass matches the Gaussian's within 1%.
func (l *lattice) scale() float64 {
	d := float64(l.d)
	return math.Sqrt(d+1) * math.Pow(4*math.Pi/3, d/2) / math.Pow(2, d+1)
}

// self is filter's mean response of a point to its own value, where the
// Gaussian has exp(0) = 1: 0.91 for d = 2, 0.79 for d = 5. It is
// scale·E[Σ_rq b_r b_q B_rq] over points uniform in their simplex
// (barycentric weights b Dirichlet(1,…,1): E b_r² = 2/((d+1)(d+2)),
// E b_r b_q = 1/((d+1)(d+2))), where B_rr = 1 + 2^-d (one step along each
// of the d+1 axes, which sum to zero, returns home) and, for corners k
// axis steps apart, B = 2^-k + 2^-(d+1-k) (those k axes forward or the
// other d+1-k back).
func (l *lattice) self() float64 {
	d := l.d
	sum := 2 * float64(d+1) * (1 + math.Pow(2, -float64(d)))
	for k := 1; k <= d; k++ {
		sum += 2 * float64(d+1-k) * (math.Pow(2, -float64(k)) + math.Pow(2, -float64(d+1-k)))
	}
	return l.scale() * sum / float64((d+1)*(d+2))
}

// hashTable maps lattice keys (d int32 coordinates) to vertex indices
// 0, 1, … in insertion order: open addressing, linear probing, a power of
// two slots kept at most half full.
type hashTable struct {
	d      int
	keys   []int32 // filled*d
	slot   []int32 // vertex index, or -1
	filled int
}

// newHashTable starts small: a frame's points touch far fewer vertices
// than there are points (tens of thousands for 640x480), and a compact
// table stays in cache.
func newHashTable(d int) *hashTable {
	t := &hashTable{d: d, slot: make([]int32, 1<<12)}
	for i := range t.slot {
		t.slot[i] = -1
	}
	return t
}

func (t *hashTable) hash(k []int32) int {
	h := uint64(0)
	for _, c := range k {
		h = (h + uint64(uint32(c))) * 1664525
	}
	h *= 0x9e3779b97f4a7c15
	return int(h>>32) & (len(t.slot) - 1)
}

// lookup returns key's slot and vertex index (-1 and the empty slot where
// it would go when absent).
func (t *hashTable) lookup(k []int32) (slot int, vert int32) {
	mask := len(t.slot) - 1
	for s := t.hash(k); ; s = (s + 1) & mask {
		v := t.slot[s]
		if v < 0 {
			return s, -1
		}
		if slices.Equal(t.keys[int(v)*t.d:int(v+1)*t.d], k) {
			return s, v
		}
	}
}

func (t *hashTable) find(k []int32) int32 {
	_, v := t.lookup(k)
	return v
}

// insert returns key's vertex index, adding it when absent.
func (t *hashTable) insert(k []int32) int32 {
	s, v := t.lookup(k)
	if v >= 0 {
		return v
	}
	v = int32(t.filled)
	t.slot[s] = v
	t.keys = append(t.keys, k...)
	t.filled++
	if 2*t.filled > len(t.slot) {
		t.grow()
	}
	return v
}

func (t *hashTable) grow() {
	t.slot = make([]int32, 2*len(t.slot))
	for i := range t.slot {
		t.slot[i] = -1
	}
	mask := len(t.slot) - 1
	for v := range t.filled {
		s := t.hash(t.keys[v*t.d : (v+1)*t.d])
		for t.slot[s] >= 0 {
			s = (s + 1) & mask
		}
		t.slot[s] = int32(v)
	}
}

// workers is how many parts parallel splits n items into: one per CPU,
// at most n.
func workers(n int) int {
	return max(min(runtime.GOMAXPROCS(0), n), 1)
}

// parallel runs fn over [0, n) split into workers(n) contiguous parts
// (part 0, 1, …), each on its own goroutine.
func parallel(n int, fn func(part, lo, hi int)) {
	parts := workers(n)
	if parts == 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range parts {
		wg.Go(func() { fn(w, n*w/parts, n*(w+1)/parts) })
	}
	wg.Wait()
}
