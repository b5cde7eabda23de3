package identify

import (
	"errors"
	"fmt"
	"math"
)

// ErrNotFinite is wrapped by the errors for an embedding with a NaN or
// infinite component.
var ErrNotFinite = errors.New("not finite")

// ErrZeroVector is wrapped by the errors for an embedding of length zero:
// the model found nothing in the image to describe.
var ErrZeroVector = errors.New("zero vector: no usable content")

// Unit returns e in float64, scaled to length 1. It refuses an empty
// vector, a NaN or infinite component (naming its index; ErrNotFinite) and
// a zero vector (ErrZeroVector). The plugin normalises its model's output
// with it, so a frame and a gallery image are held to the same rule.
func Unit(e []float32) ([]float64, error) {
	if len(e) == 0 {
		return nil, errors.New("empty embedding")
	}
	v := make([]float64, len(e))
	for i, x := range e {
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("component %d is %g: %w", i, f, ErrNotFinite)
		}
		v[i] = f
	}
	return v, normalise(v)
}

// normalise scales v to length 1 in place; a zero vector (or one whose
// squared length overflows) is an error.
func normalise(v []float64) error {
	n := norm(v)
	if n == 0 {
		return ErrZeroVector
	}
	if math.IsInf(n, 0) || math.IsNaN(n) {
		return fmt.Errorf("length %g: %w", n, ErrNotFinite)
	}
	for i := range v {
		v[i] /= n
	}
	return nil
}

// norm is the Euclidean length of v.
func norm(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

// Distance is the Euclidean distance between a and b, of equal length.
func Distance(a, b []float64) float64 {
	var s float64
	for i := range a {
		d := a[i] - b[i]
		s += d * d
	}
	return math.Sqrt(s)
}
