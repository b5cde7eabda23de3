package main

import (
	"fmt"
	"math"

	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// rows reads one tensor of decoded detections [1, N, K], its columns named
// by the manifest: a box (xyxy, yxyx or cxcywh; input pixels or
// normalised), a score and a class. CenterNet-style heads emit their top
// K rows unsuppressed (output.nms = true).
type rows struct {
	out    manifest.Output
	labels int
	w, h   float64
}

func (r *rows) outputs() []string { return []string{r.out.Detections} }
func (r *rows) nms() bool         { return r.out.NMS }

func (r *rows) columns() int {
	return max(r.out.BoxColumn+4, r.out.ScoreColumn+1, r.out.ClassColumn+1)
}

func (r *rows) check(shapes [][]int64) error {
	s := shapes[0]
	if len(s) != 3 || (s[2] != -1 && s[2] < int64(r.columns())) {
		return fmt.Errorf("output %q is %v, want [batch, N, >= %d] (box_column, score_column, class_column)", r.out.Detections, s, r.columns())
	}
	return nil
}

// toXYXY converts a box in the given format to (x1, y1, x2, y2).
func toXYXY(format string, a, b, c, d float64) (float64, float64, float64, float64) {
	switch format {
	case "yxyx":
		return b, a, d, c
	case "cxcywh":
		return a - c/2, b - d/2, a + c/2, b + d/2
	}
	return a, b, c, d
}

func (r *rows) decode(outs []tensor, o options) ([]candidate, error) {
	t := outs[0]
	if len(t.shape) != 3 || t.shape[0] != 1 || int(t.shape[2]) < r.columns() {
		return nil, fmt.Errorf("output %q is %v, want [1, N, >= %d]", r.out.Detections, t.shape, r.columns())
	}
	n, k := int(t.shape[1]), int(t.shape[2])
	sx, sy := 1.0, 1.0
	if r.out.BoxUnits == "normalized" {
		sx, sy = r.w, r.h
	}
	var cands []candidate
	for i := range n {
		row := t.data[i*k : (i+1)*k]
		score := float64(row[r.out.ScoreColumn])
		class := int(math.Round(float64(row[r.out.ClassColumn]))) - r.out.LabelOffset
		if !(score >= o.ScoreThreshold) || class < 0 || class >= r.labels {
			continue
		}
		b := row[r.out.BoxColumn:]
		x1, y1, x2, y2 := toXYXY(r.out.BoxFormat, float64(b[0]), float64(b[1]), float64(b[2]), float64(b[3]))
		cands = append(cands, candidate{box: boxes.Box{X1: x1 * sx, Y1: y1 * sy, X2: x2 * sx, Y2: y2 * sy}, class: class, score: score, mask: -1})
	}
	return cands, nil
}
