package main

import (
	"fmt"
	"math"

	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// yolo decodes YOLOv3's raw grids (Redmon & Farhadi 2018): per cell
// (cx, cy) and anchor (pw, ph) of a grid with stride s, the channels
// (tx, ty, tw, th, to, c0..cC-1) give the box centre
// ((sigmoid(tx) + cx) s, (sigmoid(ty) + cy) s), its size (pw e^tw, ph e^th),
// the objectness sigmoid(to) and independent class probabilities
// sigmoid(ck). A class scores objectness x probability; scores under the
// threshold count as 0, and the box takes its best class or is dropped.
type yolo struct {
	grids   []string
	strides []int
	anchors [][][2]float64 // per grid, its anchors (w, h) in input pixels
	labels  int
}

func newYOLO(man manifest.Manifest) (*yolo, error) {
	out := man.Output
	y := &yolo{grids: out.Grids, strides: out.Strides, labels: len(man.Labels)}
	per := len(out.AnchorMasks) / len(out.Grids)
	for g := range out.Grids {
		var as [][2]float64
		for _, a := range out.AnchorMasks[g*per : (g+1)*per] {
			as = append(as, [2]float64{out.Anchors[2*a], out.Anchors[2*a+1]})
		}
		y.anchors = append(y.anchors, as)
	}
	return y, nil
}

func (y *yolo) outputs() []string { return y.grids }
func (y *yolo) nms() bool         { return true }

func (y *yolo) check(shapes [][]int64) error {
	for g, s := range shapes {
		want := int64(len(y.anchors[g]) * (5 + y.labels))
		if len(s) != 4 || (s[3] != -1 && s[3] != want) {
			return fmt.Errorf("output %q is %v, want [batch, rows, cols, %d] (%d anchors x (5 + %d labels))",
				y.grids[g], s, want, len(y.anchors[g]), y.labels)
		}
	}
	return nil
}

func (y *yolo) decode(outs []tensor, o options) ([]candidate, error) {
	var cands []candidate
	for g, t := range outs {
		if len(t.shape) != 4 || t.shape[0] != 1 {
			return nil, fmt.Errorf("output %q is %v, want [1, rows, cols, channels]", y.grids[g], t.shape)
		}
		rows, cols, ch := int(t.shape[1]), int(t.shape[2]), int(t.shape[3])
		per := 5 + y.labels
		if ch != len(y.anchors[g])*per {
			return nil, fmt.Errorf("output %q has %d channels, want %d", y.grids[g], ch, len(y.anchors[g])*per)
		}
		s := float64(y.strides[g])
		for cy := range rows {
			for cx := range cols {
				cell := t.data[(cy*cols+cx)*ch:]
				for b, a := range y.anchors[g] {
					v := cell[b*per : (b+1)*per]
					obj := sigmoid(float64(v[4]))
					best, class, nan := 0.0, -1, false
					for k := range y.labels {
						sc := obj * sigmoid(float64(v[5+k]))
						nan = nan || math.IsNaN(sc)
						if sc >= o.ScoreThreshold && sc > best {
							best, class = sc, k
						}
					}
					if class < 0 || nan { // a NaN score is the best of none
						continue
					}
					bx := (sigmoid(float64(v[0])) + float64(cx)) * s
					by := (sigmoid(float64(v[1])) + float64(cy)) * s
					bw := a[0] * math.Exp(float64(v[2]))
					bh := a[1] * math.Exp(float64(v[3]))
					cands = append(cands, candidate{
						box:   boxes.Box{X1: bx - bw/2, Y1: by - bh/2, X2: bx + bw/2, Y2: by + bh/2},
						class: class, score: best, mask: -1,
					})
				}
			}
		}
	}
	return cands, nil
}
