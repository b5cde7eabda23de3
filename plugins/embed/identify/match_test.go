package identify

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// The distances below are by hand: between unit vectors a and b,
// ||a-b|| = sqrt(2 - 2 a.b). (0.8,0.6) to (1,0): sqrt(0.4) = 0.632456;
// to (0,1): sqrt(0.8) = 0.894427; to (-1,0): sqrt(3.6) = 1.897367.
// (1,1)/sqrt2 to (1,0) or (0,1): sqrt(2 - sqrt2) = 0.765367.
func TestMatchHandComputed(t *testing.T) {
	abc := map[string][][]float64{"alice": {{1, 0}}, "bob": {{0, 1}}, "carol": {{-1, 0}}}
	type top struct {
		name   string
		d      float64
		vetoed bool
	}
	for _, tc := range []struct {
		name       string
		pos, neg   map[string][][]float64
		thresholds map[string]float64
		threshold  float64
		probe      []float32
		k          int
		want       string
		wantD      float64
		wantTop    []top
	}{
		{
			name: "the nearest identity within the threshold is matched, top-k ranks all",
			pos:  abc, threshold: 0.7, probe: []float32{0.8, 0.6}, k: 3,
			want: "alice", wantD: 0.632456,
			wantTop: []top{{"alice", 0.632456, false}, {"bob", 0.894427, false}, {"carol", 1.897367, false}},
		},
		{
			name: "the nearest identity beyond the threshold leaves the probe unknown",
			pos:  abc, threshold: 0.6, probe: []float32{0.8, 0.6}, k: 1,
			wantTop: []top{{"alice", 0.632456, false}},
		},
		{
			name: "a per-identity threshold overrides the default",
			pos:  abc, threshold: 0.6, thresholds: map[string]float64{"alice": 0.65}, probe: []float32{0.8, 0.6}, k: 1,
			want: "alice", wantD: 0.632456, wantTop: []top{{"alice", 0.632456, false}},
		},
		{
			name: "a nearer identity outside its threshold is not skipped for a farther one within its own",
			pos:  abc, threshold: 0.7, thresholds: map[string]float64{"alice": 0.5, "bob": 1.0}, probe: []float32{0.8, 0.6}, k: 2,
			wantTop: []top{{"alice", 0.632456, false}, {"bob", 0.894427, false}},
		},
		{
			name: "an unnormalised probe is normalised first",
			pos:  abc, threshold: 0.7, probe: []float32{8, 6}, k: 0,
			want: "alice", wantD: 0.632456,
		},
		{
			name: "equal distances go to the first name",
			pos:  map[string][][]float64{"bob": {{0, 1}}, "alice": {{1, 0}}}, threshold: 0.8, probe: []float32{1, 1}, k: 2,
			want: "alice", wantD: 0.765367, wantTop: []top{{"alice", 0.765367, false}, {"bob", 0.765367, false}},
		},
		{
			name: "a negative nearer than the identity's positives vetoes it, and the next identity is matched",
			pos:  map[string][][]float64{"alice": {{0.8, 0.6}}, "bob": {{0, 1}}}, neg: map[string][][]float64{"alice": {{0.6, 0.8}}},
			threshold: 0.7, probe: []float32{0.6, 0.8}, k: 2,
			// alice: pos sqrt(0.08) = 0.282843, neg 0; bob: sqrt(0.4).
			want: "bob", wantD: 0.632456, wantTop: []top{{"alice", 0.282843, true}, {"bob", 0.632456, false}},
		},
		{
			name: "a negative exactly as near as the nearest positive vetoes",
			pos:  map[string][][]float64{"alice": {{1, 0}}}, neg: map[string][][]float64{"alice": {{0, 1}}},
			threshold: 0.8, probe: []float32{1, 1}, k: 1,
			wantTop: []top{{"alice", 0.765367, true}},
		},
		{
			name: "a negative of one identity does not veto another",
			pos:  map[string][][]float64{"alice": {{0.6, 0.8}}, "bob": {{1, 0}}}, neg: map[string][][]float64{"bob": {{0.6, 0.8}}},
			threshold: 0.7, probe: []float32{0.6, 0.8}, k: 2,
			want: "alice", wantD: 0, wantTop: []top{{"alice", 0, false}, {"bob", 0.894427, true}},
		},
		{
			name: "a farther negative does not veto",
			pos:  map[string][][]float64{"alice": {{0.8, 0.6}}}, neg: map[string][][]float64{"alice": {{0, 1}}},
			threshold: 0.7, probe: []float32{1, 0}, k: 1,
			want: "alice", wantD: 0.632456, wantTop: []top{{"alice", 0.632456, false}},
		},
		{
			// (0,0.6,0.8) to (0,1,0): sqrt(0.8); to (1,0,0): sqrt(2); to (0,0,1): sqrt(0.4).
			name:      "in 3-D an identity's nearest positive is its distance",
			pos:       map[string][][]float64{"alice": {{1, 0, 0}, {0, 1, 0}}, "bob": {{0, 0, 1}}},
			threshold: 0.7, probe: []float32{0, 0.6, 0.8}, k: 5,
			want: "bob", wantD: 0.632456, wantTop: []top{{"bob", 0.632456, false}, {"alice", 0.894427, false}},
		},
		{
			name: "no identities leave every probe unknown",
			pos:  nil, threshold: 0.7, probe: []float32{1, 0}, k: 3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newTestIdentifier(t, Options{Threshold: tc.threshold})
			if err := id.SetGallery(testGallery(t, tc.pos, tc.neg, tc.thresholds)); err != nil {
				t.Fatal(err)
			}
			m, err := id.Match(tc.probe, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			if m.Name != tc.want || !near(m.Distance, tc.wantD) {
				t.Errorf("matched %q at %g, want %q at %g", m.Name, m.Distance, tc.want, tc.wantD)
			}
			if len(m.Top) != len(tc.wantTop) {
				t.Fatalf("top %+v, want %+v", m.Top, tc.wantTop)
			}
			for i, w := range tc.wantTop {
				if g := m.Top[i]; g.Name != w.name || !near(g.Distance, w.d) || g.Vetoed != w.vetoed {
					t.Errorf("top[%d] = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestMatchCandidatesCarryTheirThreshold(t *testing.T) {
	id := newTestIdentifier(t, Options{Threshold: 0.7})
	g := testGallery(t, map[string][][]float64{"alice": {{1, 0}}, "bob": {{0, 1}}}, nil, map[string]float64{"bob": 1.2})
	if err := id.SetGallery(g); err != nil {
		t.Fatal(err)
	}
	m, err := id.Match([]float32{1, 0}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if m.Top[0].Threshold != 0.7 || m.Top[1].Threshold != 1.2 {
		t.Errorf("thresholds %+v, want alice 0.7 (default) and bob 1.2 (gallery.toml)", m.Top)
	}
}

func TestMatchRefusesBadProbes(t *testing.T) {
	id := newTestIdentifier(t, Options{})
	if err := id.SetGallery(testGallery(t, map[string][][]float64{"alice": {{1, 0}}}, nil, nil)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		probe  []float32
		want   string
		wantIs error
	}{
		{"a NaN component is named", []float32{1, float32(math.NaN())}, "component 1 is NaN", ErrNotFinite},
		{"an infinite component is named", []float32{float32(math.Inf(-1)), 0}, "component 0 is -Inf", ErrNotFinite},
		{"a zero vector has no usable content", []float32{0, 0}, "no usable content", ErrZeroVector},
		{"an empty embedding", nil, "empty embedding", nil},
		{"another length than the gallery's", []float32{1, 0, 0}, "3 dimensions, the gallery 2", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := id.Match(tc.probe, 1)
			if err == nil || !strings.Contains(err.Error(), tc.want) || tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("err = %v, want %q (%v)", err, tc.want, tc.wantIs)
			}
			if _, err := id.Identify(tc.probe, nil, 1); err == nil {
				t.Error("Identify took it")
			}
		})
	}
	if got := id.Clusters(); len(got) != 0 {
		t.Errorf("bad probes made clusters %+v", got)
	}
}

func TestRuntimeEnrolmentsJoinTheGalleryIdentityOfTheSameName(t *testing.T) {
	id := newTestIdentifier(t, Options{Threshold: 0.3})
	if err := id.SetGallery(testGallery(t, map[string][][]float64{"alice": {{1, 0, 0}}}, nil, nil)); err != nil {
		t.Fatal(err)
	}
	green := uniform(4, colorRGBA(0, 255, 0))
	if err := id.Enrol("alice", pngBytes(t, green)); err != nil {
		t.Fatal(err)
	}
	for _, probe := range [][]float32{{1, 0, 0}, {0, 1, 0}} {
		m, err := id.Match(probe, 3)
		if err != nil {
			t.Fatal(err)
		}
		if m.Name != "alice" || m.Distance > 1e-6 || len(m.Top) != 1 {
			t.Errorf("probe %v: %+v, want alice at 0, one candidate", probe, m)
		}
	}
}
