package main

import (
	"fmt"
	"math"

	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// odapi reads the TensorFlow Object Detection API's signature:
// detection_boxes [1, N, 4] (ymin, xmin, ymax, xmax, normalised to the
// input), detection_scores [1, N], detection_classes [1, N] (class id +
// label_offset), num_detections [1], and optionally detection_masks
// [1, N, mh, mw]. The model has already suppressed overlaps.
type odapi struct {
	out    manifest.Output
	labels int
	w, h   float64 // input size
}

func (d *odapi) outputs() []string {
	keys := []string{d.out.Boxes, d.out.Scores, d.out.Classes, d.out.NumDetections}
	if d.out.Masks != "" {
		keys = append(keys, d.out.Masks)
	}
	return keys
}

func (d *odapi) nms() bool { return false }

func (d *odapi) check(shapes [][]int64) error {
	want := []struct {
		key  string
		rank int
		last int64
	}{{d.out.Boxes, 3, 4}, {d.out.Scores, 2, -1}, {d.out.Classes, 2, -1}, {d.out.NumDetections, 1, -1}, {d.out.Masks, 4, -1}}
	for i, s := range shapes {
		w := want[i]
		if len(s) != w.rank || (w.last > 0 && s[len(s)-1] != -1 && s[len(s)-1] != w.last) {
			return fmt.Errorf("output %q is %v, the Object Detection API's has rank %d%s", w.key, s, w.rank,
				map[bool]string{true: fmt.Sprintf(" ending in %d", w.last), false: ""}[w.last > 0])
		}
	}
	return nil
}

func (d *odapi) decode(outs []tensor, o options) ([]candidate, error) {
	bx, sc, cl, num := outs[0], outs[1], outs[2], outs[3]
	if len(num.data) != 1 {
		return nil, fmt.Errorf("output %q is %v, want [1]", d.out.NumDetections, num.shape)
	}
	n := int(bx.shape[1])
	if len(bx.data) != n*4 || len(sc.data) != n || len(cl.data) != n {
		return nil, fmt.Errorf("outputs %q %v, %q %v, %q %v do not hold the same detections",
			d.out.Boxes, bx.shape, d.out.Scores, sc.shape, d.out.Classes, cl.shape)
	}
	count := float64(num.data[0])
	if !finite(count) || count < 0 {
		return nil, fmt.Errorf("output %q is %g", d.out.NumDetections, count)
	}
	n = min(n, int(count))
	if len(outs) > 4 {
		m := outs[4]
		if len(m.shape) != 4 || int(m.shape[1]) < n {
			return nil, fmt.Errorf("output %q is %v for %d detections", d.out.Masks, m.shape, n)
		}
	}
	var cands []candidate
	for i := range n {
		score := float64(sc.data[i])
		class := int(math.Round(float64(cl.data[i]))) - d.out.LabelOffset
		if !(score >= o.ScoreThreshold) || class < 0 || class >= d.labels {
			continue
		}
		b := bx.data[4*i:]
		mask := -1
		if len(outs) > 4 {
			mask = i
		}
		cands = append(cands, candidate{
			box:   boxes.Box{X1: float64(b[1]) * d.w, Y1: float64(b[0]) * d.h, X2: float64(b[3]) * d.w, Y2: float64(b[2]) * d.h},
			class: class, score: score, mask: mask,
		})
	}
	return cands, nil
}
