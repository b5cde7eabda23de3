package identify

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Candidate is one identity ranked for a probe.
type Candidate struct {
	Name string
	// Distance is from the probe to the identity's nearest positive
	// vector (gallery images and runtime enrolments).
	Distance float64
	// Threshold is the identity's: gallery.toml's, or Options.Threshold.
	Threshold float64
	// Vetoed: one of the identity's negative vectors is at least as near
	// to the probe as its nearest positive, so the probe is not it.
	Vetoed bool
}

// Match is what Match says of a probe.
type Match struct {
	// Name is the identity matched; "" when the probe is unknown.
	Name string
	// Distance is the distance to Name's nearest positive vector; 0 when
	// unknown (Top still gives the nearest identities).
	Distance float64
	// Top are the k nearest identities, nearest first (ties by name),
	// vetoed ones included and flagged.
	Top []Candidate
}

// The matching rule, for a probe p (normalised) against every identity X
// with at least one positive vector:
//
//	pos(X) = min distance from p to X's positive vectors
//	neg(X) = min distance from p to X's negative vectors (+Inf if none)
//	X is vetoed when neg(X) <= pos(X): the nearest of X's vectors,
//	  positives and negatives together, is a negative (a tie vetoes)
//
// The identities are ranked by pos(X), ties by name. The first one not
// vetoed is the candidate; the probe matches it when pos(X) <= its
// threshold, and is unknown otherwise. A nearer identity outside its
// threshold is not skipped for a farther one inside its own: the probe
// looks most like the nearer one, so the answer is "unknown".
// Only negatives of X count against X; a negative of X that happens to be
// near the probe says nothing about any other identity.

// sources are the identities a probe is matched against: the gallery's and
// the runtime ones of the same name are one identity.
type sources struct {
	gallery   *Gallery // nil: none loaded
	runtime   map[string]*runtimeIdentity
	threshold float64 // default
}

// match ranks every identity for the unit vector p and returns the match
// with the top k (k <= 0: none).
func (s sources) match(p []float64, k int) (Match, error) {
	if err := s.checkDim(len(p)); err != nil {
		return Match{}, err
	}
	type scores struct{ pos, neg float64 }
	byName := map[string]*scores{}
	get := func(name string) *scores {
		sc := byName[name]
		if sc == nil {
			sc = &scores{pos: math.Inf(1), neg: math.Inf(1)}
			byName[name] = sc
		}
		return sc
	}
	if s.gallery != nil {
		for name, id := range s.gallery.identities {
			sc := get(name)
			sc.pos = min(sc.pos, nearest(p, id.positives))
			sc.neg = min(sc.neg, nearest(p, id.negatives))
		}
	}
	for name, id := range s.runtime {
		sc := get(name)
		for _, ex := range id.entries {
			sc.pos = min(sc.pos, Distance(p, ex.vector))
		}
	}
	ranked := make([]Candidate, 0, len(byName))
	for name, sc := range byName {
		if math.IsInf(sc.pos, 1) {
			continue // no positive vector
		}
		ranked = append(ranked, Candidate{Name: name, Distance: sc.pos, Threshold: s.thresholdOf(name), Vetoed: sc.neg <= sc.pos})
	}
	slices.SortFunc(ranked, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(a.Distance, b.Distance), cmp.Compare(a.Name, b.Name))
	})
	var m Match
	for _, c := range ranked {
		if c.Vetoed {
			continue
		}
		if c.Distance <= c.Threshold {
			m.Name, m.Distance = c.Name, c.Distance
		}
		break
	}
	if k > 0 {
		m.Top = ranked[:min(k, len(ranked))]
	}
	return m, nil
}

// thresholdOf is name's threshold.
func (s sources) thresholdOf(name string) float64 {
	if s.gallery != nil {
		if t, ok := s.gallery.thresholds[name]; ok {
			return t
		}
	}
	return s.threshold
}

// checkDim refuses a probe of another length than the vectors enrolled.
func (s sources) checkDim(n int) error {
	if s.gallery != nil && s.gallery.dim != 0 && s.gallery.dim != n {
		return fmt.Errorf("embedding has %d dimensions, the gallery %d", n, s.gallery.dim)
	}
	for name, id := range s.runtime {
		if len(id.entries) > 0 && len(id.entries[0].vector) != n {
			return fmt.Errorf("embedding has %d dimensions, runtime identity %q %d", n, name, len(id.entries[0].vector))
		}
		break // all runtime identities have one length
	}
	return nil
}

// nearest is the smallest distance from p to vs; +Inf for none.
func nearest(p []float64, vs [][]float64) float64 {
	d := math.Inf(1)
	for _, v := range vs {
		d = min(d, Distance(p, v))
	}
	return d
}
