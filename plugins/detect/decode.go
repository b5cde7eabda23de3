package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
	"github.com/edgeinfer/edgeinfer/plugins/common/imageprep"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// tensor is one raw output: its values (float32, row-major) and shape.
type tensor struct {
	data  []float32
	shape []int64
}

// candidate is a decoded box before post-processing: in input pixels,
// with its class (0-based) and score, and the row of its mask (-1: none).
type candidate struct {
	box   boxes.Box
	class int
	score float64
	mask  int
}

// decoder turns a model's raw outputs (in the order of its outputs())
// into candidates, in the order the model produced them.
type decoder interface {
	// outputs names the signature outputs to fetch.
	outputs() []string
	// check checks the outputs' shapes (-1: any) at load.
	check(shapes [][]int64) error
	decode(outs []tensor, o options) ([]candidate, error)
	// nms reports whether the candidates still need suppression.
	nms() bool
}

func newDecoder(man manifest.Manifest, inW, inH int) (decoder, error) {
	switch man.Task {
	case manifest.TaskDetectYOLO:
		return newYOLO(man)
	case manifest.TaskDetectRCNN:
		return &odapi{out: man.Output, labels: len(man.Labels), w: float64(inW), h: float64(inH)}, nil
	case manifest.TaskDetectRows:
		return &rows{out: man.Output, labels: len(man.Labels), w: float64(inW), h: float64(inH)}, nil
	case manifest.TaskDetectAnchorFree:
		return &anchorFree{out: man.Output, labels: len(man.Labels), w: float64(inW), h: float64(inH)}, nil
	}
	return nil, fmt.Errorf("task %q is not a detection task", man.Task)
}

// finite reports whether every value is a number.
func finite(v ...float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

// detection is a kept candidate in source pixels.
type detection struct {
	boxes.Detection
	unclipped boxes.Box // the box before clipping: where a mask is pasted
	mask      int
}

// postprocess maps candidates to the source frame and filters them, in
// this order: drop non-finite or inverted boxes, map to the source and
// clip, the class filter, empty boxes (nothing inside the frame) and
// min_area, NMS (per class when the decoder needs it; across classes with
// class_agnostic, also on top of a model's own suppression), then
// the best max_detections. Ties are broken by class, then by the order the
// model gave the candidates.
func postprocess(cands []candidate, tr imageprep.Transform, w, h int, o options, nms bool) []detection {
	var ds []detection
	for _, c := range cands {
		b := c.box
		if !finite(b.X1, b.Y1, b.X2, b.Y2, c.score) || b.X2 < b.X1 || b.Y2 < b.Y1 {
			continue
		}
		x1, y1 := tr.ToSource(b.X1, b.Y1)
		x2, y2 := tr.ToSource(b.X2, b.Y2)
		src := boxes.Box{X1: x1, Y1: y1, X2: x2, Y2: y2}
		clipped := src.Clip(float64(w), float64(h))
		if o.classSet != nil && !o.classSet[c.class] {
			continue
		}
		if a := clipped.Area(); a <= 0 || a < o.MinArea { // nothing of it in the frame, or too small
			continue
		}
		ds = append(ds, detection{Detection: boxes.Detection{Box: clipped, Class: c.class, Score: c.score}, unclipped: src, mask: c.mask})
	}
	order := make([]int, len(ds))
	for i := range order {
		order[i] = i
	}
	if nms || o.ClassAgnostic {
		dets := make([]boxes.Detection, len(ds))
		for i, d := range ds {
			dets[i] = d.Detection
		}
		kept := boxes.NMSIndices(dets, o.NMSThreshold, !o.ClassAgnostic, o.MaxDetections)
		out := make([]detection, len(kept))
		for j, i := range kept {
			out[j] = ds[i]
		}
		return out
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(ds[b].Score, ds[a].Score), cmp.Compare(ds[a].Class, ds[b].Class), cmp.Compare(a, b))
	})
	if o.MaxDetections > 0 && len(order) > o.MaxDetections {
		order = order[:o.MaxDetections]
	}
	out := make([]detection, len(order))
	for j, i := range order {
		out[j] = ds[i]
	}
	return out
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
