package main

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// feature is one frame's feature vector as a stream keeps it.
type feature struct {
	seq   uint64
	time  time.Time
	vec   []float32
	scene int // the scene the frame belongs to (scene cuts are counted per stream)
}

// ring keeps the newest features of a stream, at most cap(items), oldest
// first. A full ring reuses the evicted entry's vector, so a stream
// allocates its buffer once.
type ring struct {
	items []feature
	start int // index of the oldest entry once the ring is full
}

func newRing(size int) ring { return ring{items: make([]feature, 0, size)} }

// push appends f (its vector copied), evicting the oldest when full.
func (r *ring) push(f feature) {
	if len(r.items) < cap(r.items) {
		f.vec = append([]float32(nil), f.vec...)
		r.items = append(r.items, f)
		return
	}
	old := &r.items[r.start]
	vec := append(old.vec[:0], f.vec...)
	*old = f
	old.vec = vec
	r.start = (r.start + 1) % len(r.items)
}

// len is the number of features held.
func (r *ring) len() int { return len(r.items) }

// at is the i-th feature, 0 the oldest.
func (r *ring) at(i int) *feature { return &r.items[(r.start+i)%len(r.items)] }

// evenly picks n of the indices 0..m-1, spread evenly and including both
// ends (round(k (m-1) / (n-1)), as the model was trained); all m when m <= n.
func evenly(m, n int) []int {
	if m <= n {
		idx := make([]int, m)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	idx := make([]int, n)
	for k := range idx {
		if n > 1 {
			idx[k] = int(math.Round(float64(k) * float64(m-1) / float64(n-1)))
		} else {
			idx[k] = m - 1
		}
	}
	return idx
}

// sampleEven is N evenly from the newest window features of r (ring indices).
func sampleEven(r *ring, window, n int) []int {
	m := min(window, r.len())
	first := r.len() - m
	idx := evenly(m, n)
	for i := range idx {
		idx[i] += first
	}
	return idx
}

// samplePerSecond is up to n features at fps per second by capture time,
// ending at the newest: for k = n-1..0 the feature captured nearest to
// newest - k/fps among those of its window, the half-open half period
// around it [target - period/2, target + period/2); a feature is taken once
// (a source slower than fps gives fewer, a gap none). The windows tile the
// time line, so a feature exactly half a period from two targets belongs
// to the later one only: a source at exactly 2 fps sampled at 1 per second
// gives every 2nd frame, never two neighbours. Capture times within
// windowEdge of an edge count as on it (computed clocks round to the
// nanosecond). Ring indices, oldest first.
func samplePerSecond(r *ring, fps float64, n int) []int {
	if r.len() == 0 {
		return nil
	}
	newest := r.at(r.len() - 1).time
	period := time.Duration(float64(time.Second) / fps)
	half := period / 2
	var idx []int
	for k := n - 1; k >= 0; k-- {
		target := newest.Add(-time.Duration(k) * period)
		best, bestD := -1, time.Duration(0)
		for i := range r.len() {
			d := r.at(i).time.Sub(target)
			if d < -half-windowEdge || d >= half-windowEdge {
				continue
			}
			if best < 0 || d.Abs() < bestD {
				best, bestD = i, d.Abs()
			}
		}
		if best >= 0 && (len(idx) == 0 || best > idx[len(idx)-1]) {
			idx = append(idx, best)
		}
	}
	return idx
}

// windowEdge is how near a window's edge a capture time counts as on it.
const windowEdge = time.Microsecond

// sampleScene is N evenly from the features of the newest feature's scene
// still in r.
func sampleScene(r *ring, n int) []int {
	if r.len() == 0 {
		return nil
	}
	scene := r.at(r.len() - 1).scene
	first := r.len() - 1
	for first > 0 && r.at(first-1).scene == scene {
		first--
	}
	return sampleEven(r, r.len()-first, n)
}

// cosineDistance is 1 - cos(a, b), in [0, 2]; 1 when either is all zeros.
func cosineDistance(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		dot += x * y
		na += x * x
		nb += y * y
	}
	if na == 0 || nb == 0 {
		return 1
	}
	return 1 - dot/math.Sqrt(na*nb)
}

// fileFeatures are the features of the frames of one source (a file) seen
// so far, bounded: every step-th frame is kept, and when more than limit
// are, every other one is dropped and step doubles, so what is kept stays
// evenly spread over the whole file. The newest frame is kept aside too,
// so a clip over the file always ends at it.
type fileFeatures struct {
	source string // the file: the frames' Source without "#<n>"
	n      int64  // the newest frame's number in the file (-1: none)
	seen   uint64 // frames of the source seen
	step   uint64
	limit  int
	kept   []feature
	last   feature
	// lastKept: last is also the newest of kept
	lastKept bool
}

// sourceFile splits a frame's Source into the file it came from and the
// frame's number in it. The sensors name a video's frames "<path>#<n>" (n
// from 0 in each play of the file: the ffmpeg and file kinds) and an MQTT
// topic's "<topic>#<seq>"; a source without a "#<digits>" ending (an image
// file) is its own file, with no number (-1).
func sourceFile(source string) (file string, n int64) {
	i := strings.LastIndexByte(source, '#')
	if i < 0 || i == len(source)-1 {
		return source, -1
	}
	n, err := strconv.ParseInt(source[i+1:], 10, 64)
	if err != nil || n < 0 || source[i+1] == '+' {
		return source, -1
	}
	return source[:i], n
}

// add records f of source (a frame's Source), starting over when the file
// changes or plays again: its frame number is not past the previous one's.
func (ff *fileFeatures) add(source string, f feature, limit int) {
	file, n := sourceFile(source)
	if file != ff.source || ff.step == 0 || limit != ff.limit || (n >= 0 && ff.n >= 0 && n <= ff.n) {
		*ff = fileFeatures{source: file, step: 1, limit: limit}
	}
	ff.n = n
	ff.last = feature{seq: f.seq, time: f.time, vec: append(ff.last.vec[:0], f.vec...)}
	ff.lastKept = ff.seen%ff.step == 0
	if ff.lastKept {
		f.vec = append([]float32(nil), f.vec...)
		ff.kept = append(ff.kept, f)
		if len(ff.kept) > ff.limit {
			ff.lastKept = (len(ff.kept)-1)%2 == 0
			n := 0
			for i := 0; i < len(ff.kept); i += 2 {
				ff.kept[n] = ff.kept[i]
				n++
			}
			clear(ff.kept[n:])
			ff.kept = ff.kept[:n]
			ff.step *= 2
		}
	}
	ff.seen++
}

// sample is N features spread evenly over the file: over what is kept,
// with the newest frame last when it was not kept.
func (ff *fileFeatures) sample(n int) []*feature {
	all := make([]*feature, 0, len(ff.kept)+1)
	for i := range ff.kept {
		all = append(all, &ff.kept[i])
	}
	if !ff.lastKept {
		all = append(all, &ff.last)
	}
	var out []*feature
	for _, i := range evenly(len(all), n) {
		out = append(out, all[i])
	}
	return out
}
