package topk

import (
	"math"
	"testing"
)

// Top sorts by score with ties by index, drops what scores below
// min_score, and its softmax does not overflow on huge logits.
func TestTopK(t *testing.T) {
	labels := []string{"a", "b", "c", "d"}
	got := Top([]float64{0.1, 0.4, 0.1, 0.4}, labels, false, 3, 0)
	want := []Entry{{"b", 1, 0.4}, {"d", 3, 0.4}, {"a", 0, 0.1}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v (ties by index)", i, got[i], want[i])
		}
	}
	if got := Top([]float64{0.1, 0.4, 0.1, 0.4}, labels, false, 4, 0.2); len(got) != 2 {
		t.Errorf("min_score 0.2 kept %+v", got)
	}
	// Huge logits do not overflow the softmax.
	got = Top([]float64{1000, 999, -1000, 1000}, labels, true, 4, 0)
	e := math.Exp(-1)
	for _, w := range []struct {
		i int
		p float64
	}{{0, 1 / (2 + e)}, {3, 1 / (2 + e)}, {1, e / (2 + e)}, {2, 0}} {
		var s float32 = -1
		for _, g := range got {
			if g.Index == w.i {
				s = g.Score
			}
		}
		if math.Abs(float64(s)-w.p) > 1e-7 {
			t.Errorf("softmax of label %d = %v, want %v", w.i, s, w.p)
		}
	}
}
