// Package topk turns one score per label into the best labels: a
// numerically stable softmax and the k best entries by score. The classify
// and video plugins share it.
package topk

import (
	"cmp"
	"math"
	"slices"
)

// Entry is one label of a result.
type Entry struct {
	Label string  `json:"label"`
	Index int     `json:"index"`
	Score float32 `json:"score"`
}

// Top turns scores into the k best labels, sorted by score (ties by index),
// without those scoring below minScore. With softmax the scores are logits
// and become probabilities first.
func Top(scores []float64, labels []string, softmax bool, k int, minScore float64) []Entry {
	if softmax {
		scores = Softmax(scores)
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		return cmp.Or(cmp.Compare(scores[b], scores[a]), cmp.Compare(a, b))
	})
	top := make([]Entry, 0, k)
	for _, i := range idx[:min(k, len(idx))] {
		if scores[i] < minScore {
			break
		}
		top = append(top, Entry{Label: labels[i], Index: i, Score: float32(scores[i])})
	}
	return top
}

// Softmax is the softmax of x, computed after subtracting the maximum so
// that large logits do not overflow.
func Softmax(x []float64) []float64 {
	hi := slices.Max(x)
	p := make([]float64, len(x))
	sum := 0.0
	for i, v := range x {
		p[i] = math.Exp(v - hi)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}
