package main

import (
	"fmt"
	"math"

	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// anchorFree reads the head of the newer YOLO generations: per prediction
// a box (cx, cy, w, h) and one score per class, laid out [1, 4+C, N]
// (channels_first, as YOLOv8 exports) or [1, N, 4+C]. The box takes its
// best class; overlaps are suppressed afterwards.
type anchorFree struct {
	out    manifest.Output
	labels int
	w, h   float64
}

func (a *anchorFree) outputs() []string { return []string{a.out.Predictions} }
func (a *anchorFree) nms() bool         { return true }

func (a *anchorFree) check(shapes [][]int64) error {
	s := shapes[0]
	ch := int64(4 + a.labels)
	dim := 1
	if a.out.Layout == "channels_last" {
		dim = 2
	}
	if len(s) != 3 || (s[dim] != -1 && s[dim] != ch) {
		return fmt.Errorf("output %q is %v, want %s with %d = 4 + %d labels (output.layout %s)",
			a.out.Predictions, s, map[int]string{1: "[batch, 4+C, N]", 2: "[batch, N, 4+C]"}[dim], ch, a.labels, a.out.Layout)
	}
	return nil
}

func (a *anchorFree) decode(outs []tensor, o options) ([]candidate, error) {
	t := outs[0]
	ch := 4 + a.labels
	if len(t.shape) != 3 || t.shape[0] != 1 {
		return nil, fmt.Errorf("output %q is %v, want rank 3 with batch 1", a.out.Predictions, t.shape)
	}
	var n int
	// at(i, c): value c of prediction i.
	var at func(i, c int) float64
	if a.out.Layout == "channels_last" {
		if int(t.shape[2]) != ch {
			return nil, fmt.Errorf("output %q is %v, want [1, N, %d]", a.out.Predictions, t.shape, ch)
		}
		n = int(t.shape[1])
		at = func(i, c int) float64 { return float64(t.data[i*ch+c]) }
	} else {
		if int(t.shape[1]) != ch {
			return nil, fmt.Errorf("output %q is %v, want [1, %d, N]", a.out.Predictions, t.shape, ch)
		}
		n = int(t.shape[2])
		at = func(i, c int) float64 { return float64(t.data[c*n+i]) }
	}
	sx, sy := 1.0, 1.0
	if a.out.BoxUnits == "normalized" {
		sx, sy = a.w, a.h
	}
	var cands []candidate
	for i := range n {
		best, class, nan := 0.0, -1, false
		for k := range a.labels {
			s := at(i, 4+k)
			nan = nan || math.IsNaN(s)
			if class < 0 || s > best {
				best, class = s, k
			}
		}
		if nan || !(best >= o.ScoreThreshold) {
			continue
		}
		x1, y1, x2, y2 := toXYXY("cxcywh", at(i, 0), at(i, 1), at(i, 2), at(i, 3))
		cands = append(cands, candidate{box: boxes.Box{X1: x1 * sx, Y1: y1 * sy, X2: x2 * sx, Y2: y2 * sy}, class: class, score: best, mask: -1})
	}
	return cands, nil
}
