package boxes

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestIoUOfKnownPairs(t *testing.T) {
	for _, tc := range []struct {
		a, b Box
		want float64
	}{
		{Box{0, 0, 10, 10}, Box{0, 0, 10, 10}, 1},
		{Box{0, 0, 10, 10}, Box{5, 0, 15, 10}, 50.0 / 150},
		{Box{0, 0, 10, 10}, Box{10, 0, 20, 10}, 0}, // touching edges
		{Box{0, 0, 10, 10}, Box{2, 2, 4, 4}, 4.0 / 100},
		{Box{0, 0, 0, 0}, Box{0, 0, 0, 0}, 0},
		{Box{5, 5, 1, 1}, Box{0, 0, 10, 10}, 0}, // inverted
	} {
		if got := IoU(tc.a, tc.b); math.Abs(got-tc.want) > 1e-12 || IoU(tc.b, tc.a) != got {
			t.Errorf("IoU(%v, %v) = %g, want %g", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestClipAndValid(t *testing.T) {
	if got := (Box{-5, 3, 120, 90}).Clip(100, 80); got != (Box{0, 3, 100, 80}) {
		t.Errorf("clip: %v", got)
	}
	if got := (Box{150, 90, 200, 95}).Clip(100, 80); got.Area() != 0 {
		t.Errorf("a box outside the image keeps area %g", got.Area())
	}
	for _, b := range []Box{{math.NaN(), 0, 1, 1}, {0, 0, math.Inf(1), 1}, {2, 0, 1, 1}} {
		if b.Valid() {
			t.Errorf("%v is valid", b)
		}
	}
}

// bruteNMS is the textbook algorithm: sort by score, then keep each box
// not yet suppressed and suppress every later one over the threshold.
func bruteNMS(dets []Detection, iou float64, perClass bool, maxDet int) []Detection {
	rest := slices.Clone(dets)
	slices.SortStableFunc(rest, func(a, b Detection) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return a.Class - b.Class
	})
	suppressed := make([]bool, len(rest))
	var kept []Detection
	for i, d := range rest {
		if suppressed[i] {
			continue
		}
		kept = append(kept, d)
		if maxDet > 0 && len(kept) == maxDet {
			break
		}
		for j := i + 1; j < len(rest); j++ {
			if !suppressed[j] && (!perClass || rest[j].Class == d.Class) && IoU(rest[j].Box, d.Box) > iou {
				suppressed[j] = true
			}
		}
	}
	return kept
}

func randomDets(r *rand.Rand, n int, size, maxSide float64, classes int) []Detection {
	dets := make([]Detection, n)
	for i := range dets {
		x, y := r.Float64()*size, r.Float64()*size
		w, h := 1+r.Float64()*maxSide, 1+r.Float64()*maxSide
		dets[i] = Detection{Box: Box{x, y, x + w, y + h}, Class: r.IntN(classes), Score: r.Float64()}
	}
	return dets
}

func TestNMSEqualsTheTextbookAlgorithm(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		n := 1 + r.IntN(300)
		maxSide := []float64{5, 40, 300}[trial%3]
		dets := randomDets(r, n, 200, maxSide, 3)
		if trial%7 == 0 { // exact duplicates and score ties
			dets = append(dets, dets[:n/2]...)
		}
		for _, perClass := range []bool{true, false} {
			for _, thr := range []float64{0.3, 0.5, 0.9} {
				for _, maxDet := range []int{0, 10} {
					got, want := NMS(dets, thr, perClass, maxDet), bruteNMS(dets, thr, perClass, maxDet)
					if !slices.Equal(got, want) {
						t.Fatalf("trial %d (n %d, per class %v, iou %g, max %d): %d kept, textbook %d", trial, len(dets), perClass, thr, maxDet, len(got), len(want))
					}
				}
			}
		}
	}
}

func TestNMSDropsInvalidBoxesAndNaNScores(t *testing.T) {
	dets := []Detection{
		{Box{0, 0, 10, 10}, 0, math.NaN()},
		{Box{math.Inf(-1), 0, 10, 10}, 0, 0.9},
		{Box{0, 0, math.NaN(), 10}, 0, 0.8},
		{Box{0, 0, 10, 10}, 0, 0.5},
	}
	got := NMS(dets, 0.5, true, 0)
	if len(got) != 1 || got[0].Score != 0.5 {
		t.Fatalf("kept %v", got)
	}
	if len(NMS(nil, 0.5, true, 0)) != 0 {
		t.Fatal("NMS of nothing kept something")
	}
}

func TestNMSKeepsTheBestOfEachClusterAndClassesApart(t *testing.T) {
	dets := []Detection{
		{Box{0, 0, 10, 10}, 0, 0.9},
		{Box{1, 1, 11, 11}, 0, 0.8}, // same class, IoU 0.68: dropped
		{Box{1, 1, 11, 11}, 1, 0.7}, // another class: kept per class, dropped across classes
		{Box{50, 50, 60, 60}, 0, 0.6},
	}
	if got := NMS(dets, 0.5, true, 0); len(got) != 3 || got[1].Class != 1 {
		t.Fatalf("per class: %v", got)
	}
	if got := NMS(dets, 0.5, false, 0); len(got) != 2 || got[1].Score != 0.6 {
		t.Fatalf("across classes: %v", got)
	}
	if got := NMS(dets, 0.5, true, 1); len(got) != 1 || got[0].Score != 0.9 {
		t.Fatalf("max 1: %v", got)
	}
}

// BenchmarkNMS10000 is the figure in BENCHMARKS.md: 10,000 candidate boxes
// over a 640x640 image, 80 classes (a detector's raw output over the score
// threshold), per class and across classes.
func BenchmarkNMS10000(b *testing.B) {
	for _, tc := range []struct {
		name     string
		perClass bool
		maxSide  float64
	}{
		{"per-class/small", true, 60}, {"per-class/large", true, 400},
		{"agnostic/small", false, 60}, {"agnostic/large", false, 400},
	} {
		dets := randomDets(rand.New(rand.NewPCG(3, 4)), 10000, 640, tc.maxSide, 80)
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				NMS(dets, 0.45, tc.perClass, 0)
			}
		})
		// The textbook loop on the same boxes, for the ratio.
		b.Run(tc.name+"/textbook", func(b *testing.B) {
			for range b.N {
				bruteNMS(dets, 0.45, tc.perClass, 0)
			}
		})
	}
}
