// Package boxes holds what every detector plugin does with boxes: IoU,
// clipping, and non-maximum suppression per class or across classes. It is
// written for many candidates (a YOLO head at 416x416 gives 10,647 before
// the score threshold): suppression compares a candidate only with the
// boxes already kept, found through a grid over the image, so it stays
// near-linear when the kept boxes are many and spread out.
package boxes

import (
	"cmp"
	"math"
	"slices"
)

// Box is an axis-aligned box in pixels: X1 <= X2, Y1 <= Y2, the right and
// bottom edges exclusive (a one-pixel box at (3, 4) is {3, 4, 4, 5}).
type Box struct {
	X1, Y1, X2, Y2 float64
}

// Area is the box's area; 0 for an empty or inverted box.
func (b Box) Area() float64 {
	return max(b.X2-b.X1, 0) * max(b.Y2-b.Y1, 0)
}

// Valid reports whether every coordinate is finite and the box is not
// inverted.
func (b Box) Valid() bool {
	for _, v := range [4]float64{b.X1, b.Y1, b.X2, b.Y2} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return b.X1 <= b.X2 && b.Y1 <= b.Y2
}

// Clip bounds the box to a w x h image.
func (b Box) Clip(w, h float64) Box {
	return Box{
		X1: min(max(b.X1, 0), w), Y1: min(max(b.Y1, 0), h),
		X2: min(max(b.X2, 0), w), Y2: min(max(b.Y2, 0), h),
	}
}

// IoU is the intersection over union of a and b; 0 when both are empty.
func IoU(a, b Box) float64 {
	iw := min(a.X2, b.X2) - max(a.X1, b.X1)
	ih := min(a.Y2, b.Y2) - max(a.Y1, b.Y1)
	if iw <= 0 || ih <= 0 {
		return 0
	}
	inter := iw * ih
	return inter / (a.Area() + b.Area() - inter)
}

// Detection is one scored, classified box.
type Detection struct {
	Box   Box
	Class int
	Score float64
}

// NMS is greedy non-maximum suppression: detections are taken best score
// first (ties: lower class, then earlier in dets), and one is dropped when
// its IoU with a kept detection exceeds iou — of the same class when
// perClass, of any class otherwise. At most maxDet are kept (0: no limit).
// Detections with an invalid box or a NaN score are dropped first. dets is
// not modified; the result is sorted best first.
func NMS(dets []Detection, iou float64, perClass bool, maxDet int) []Detection {
	idx := NMSIndices(dets, iou, perClass, maxDet)
	kept := make([]Detection, len(idx))
	for j, i := range idx {
		kept[j] = dets[i]
	}
	return kept
}

// NMSIndices is NMS returning the indices into dets of the kept
// detections, best first.
func NMSIndices(dets []Detection, iou float64, perClass bool, maxDet int) []int {
	order := make([]int, 0, len(dets))
	for i, d := range dets {
		if d.Box.Valid() && !math.IsNaN(d.Score) {
			order = append(order, i)
		}
	}
	better := func(a, b int) int {
		return cmp.Or(cmp.Compare(dets[b].Score, dets[a].Score), cmp.Compare(dets[a].Class, dets[b].Class), cmp.Compare(a, b))
	}
	slices.SortFunc(order, better)
	if !perClass {
		return suppress(dets, order, iou, maxDet)
	}
	// Classes do not suppress each other: each is suppressed on its own
	// (the best maxDet of a class are enough), then merged in the same order.
	byClass := map[int][]int{}
	for _, i := range order {
		byClass[dets[i].Class] = append(byClass[dets[i].Class], i)
	}
	var kept []int
	for _, idx := range byClass {
		kept = append(kept, suppress(dets, idx, iou, maxDet)...)
	}
	slices.SortFunc(kept, better)
	if maxDet > 0 && len(kept) > maxDet {
		kept = kept[:maxDet]
	}
	return kept
}

// suppress is greedy suppression over order (best first), whatever the
// classes; it returns the indices into dets kept, best first.
func suppress(dets []Detection, order []int, iou float64, maxDet int) []int {
	var kept []Box
	var idx []int
	g := newGrid(dets, order)
	for _, i := range order {
		b := dets[i].Box
		if g.overlaps(b, iou, kept) {
			continue
		}
		g.add(b, len(kept))
		kept = append(kept, b)
		idx = append(idx, i)
		if maxDet > 0 && len(kept) == maxDet {
			break
		}
	}
	return idx
}

// grid indexes the kept boxes by the cells they cover, so a candidate is
// compared only with kept boxes near it. The cell is sized from the median
// candidate box, and a box covering too many cells is kept in a list
// checked for every candidate.
type grid struct {
	x0, y0, cell float64
	cols, rows   int
	cells        [][]int // kept indices per cell
	big          []int   // kept boxes spanning many cells
	seen         []int   // per kept index: the candidate that last checked it
	stamp        int
}

const maxCellsPerBox = 16

func newGrid(dets []Detection, order []int) *grid {
	g := &grid{}
	if len(order) == 0 {
		return g
	}
	x0, y0, x1, y1 := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
	sides := make([]float64, 0, len(order))
	for _, i := range order {
		b := dets[i].Box
		x0, y0, x1, y1 = min(x0, b.X1), min(y0, b.Y1), max(x1, b.X2), max(y1, b.Y2)
		sides = append(sides, max(b.X2-b.X1, b.Y2-b.Y1))
	}
	slices.Sort(sides)
	cell := sides[len(sides)/2]
	span := max(x1-x0, y1-y0)
	// At most ~256 x 256 cells, and at least one.
	cell = max(cell, span/256)
	if !(cell > 0) {
		cell = 1
	}
	g.x0, g.y0, g.cell = x0, y0, cell
	g.cols = int((x1-x0)/cell) + 1
	g.rows = int((y1-y0)/cell) + 1
	g.cells = make([][]int, g.cols*g.rows)
	return g
}

func (g *grid) span(b Box) (c0, r0, c1, r1 int) {
	c0 = min(max(int((b.X1-g.x0)/g.cell), 0), g.cols-1)
	r0 = min(max(int((b.Y1-g.y0)/g.cell), 0), g.rows-1)
	c1 = min(max(int((b.X2-g.x0)/g.cell), 0), g.cols-1)
	r1 = min(max(int((b.Y2-g.y0)/g.cell), 0), g.rows-1)
	return
}

func (g *grid) add(b Box, k int) {
	g.seen = append(g.seen, -1)
	c0, r0, c1, r1 := g.span(b)
	if (c1-c0+1)*(r1-r0+1) > maxCellsPerBox {
		g.big = append(g.big, k)
		return
	}
	for r := r0; r <= r1; r++ {
		for c := c0; c <= c1; c++ {
			g.cells[r*g.cols+c] = append(g.cells[r*g.cols+c], k)
		}
	}
}

// overlaps reports whether b's IoU with a kept box exceeds iou. Boxes
// that share no cell do not intersect.
func (g *grid) overlaps(b Box, iou float64, kept []Box) bool {
	g.stamp++
	hit := func(k int) bool {
		if g.seen[k] == g.stamp {
			return false
		}
		g.seen[k] = g.stamp
		return IoU(kept[k], b) > iou
	}
	c0, r0, c1, r1 := g.span(b)
	if (c1-c0+1)*(r1-r0+1) > maxCellsPerBox {
		// A large candidate: every kept box, rather than many cells.
		for k := range kept {
			if hit(k) {
				return true
			}
		}
		return false
	}
	for _, k := range g.big {
		if hit(k) {
			return true
		}
	}
	for r := r0; r <= r1; r++ {
		for c := c0; c <= c1; c++ {
			for _, k := range g.cells[r*g.cols+c] {
				if hit(k) {
					return true
				}
			}
		}
	}
	return false
}
