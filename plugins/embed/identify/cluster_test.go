package identify

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// By hand, threshold 0.7 (see TestMatchHandComputed for the distances):
//
//	(1,0)      new 1
//	(0,1)      new 2 (sqrt2 from 1)
//	(0.8,0.6)  joins 1 at 0.632456 (2 at 0.894427); sum (1.8,0.6), m1 = (3,1)/sqrt10
//	(0.6,0.8)  joins 1 at sqrt(2-5.2/sqrt10) = 0.596335 (2 at 0.632456): sum (2.4,1.4)
//	(-1,0)     new 3
//	(-0.6,0.8) joins 2 at 0.632456 (3 at 0.894427): sum (-0.6,1.8), m2 = (-1,3)/sqrt10
func TestClusteringHandComputed(t *testing.T) {
	c, err := NewClustering(0.7, 8)
	if err != nil {
		t.Fatal(err)
	}
	for i, step := range []struct {
		e    []float32
		want Assignment
	}{
		{[]float32{1, 0}, Assignment{ID: 1, New: true}},
		{[]float32{0, 1}, Assignment{ID: 2, New: true}},
		{[]float32{0.8, 0.6}, Assignment{ID: 1, Distance: 0.632456}},
		{[]float32{0.6, 0.8}, Assignment{ID: 1, Distance: 0.596335}},
		{[]float32{-1, 0}, Assignment{ID: 3, New: true}},
		{[]float32{-0.6, 0.8}, Assignment{ID: 2, Distance: 0.632456}},
	} {
		a, err := c.Add(step.e, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.ID != step.want.ID || a.New != step.want.New || !near(a.Distance, step.want.Distance) {
			t.Errorf("step %d %v: %+v, want %+v", i, step.e, a, step.want)
		}
	}
	s77 := math.Sqrt(7.72)
	want := []Cluster{
		{ID: 1, Count: 3, Centroid: []float64{2.4 / s77, 1.4 / s77}, Exemplars: 3},
		{ID: 2, Count: 2, Centroid: []float64{-1 / math.Sqrt(10), 3 / math.Sqrt(10)}, Exemplars: 2},
		{ID: 3, Count: 1, Centroid: []float64{-1, 0}, Exemplars: 1},
	}
	checkClusters(t, c.Clusters(), want)
	if c.NextID() != 4 {
		t.Errorf("next id %d, want 4", c.NextID())
	}
}

func checkClusters(t *testing.T, got, want []Cluster) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("clusters %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Count != w.Count || g.Exemplars != w.Exemplars || !nearVec(g.Centroid, w.Centroid) {
			t.Errorf("cluster %+v, want %+v", g, w)
		}
	}
}

func TestClusteringTieGoesToTheLowestID(t *testing.T) {
	c, _ := NewClustering(0.8, 8)
	for _, e := range [][]float32{{1, 0}, {0, 1}} {
		if _, err := c.Add(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	// (1,1)/sqrt2 is sqrt(2-sqrt2) = 0.765367 from both centroids.
	a, err := c.Add([]float32{1, 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != 1 || a.New || !near(a.Distance, 0.765367) {
		t.Errorf("%+v, want cluster 1 at 0.765367", a)
	}
}

func TestClusteringJoinsAtExactlyTheThreshold(t *testing.T) {
	// The threshold is the distance as Add computes it: d == threshold.
	v := []float64{float64(float32(0.6)), float64(float32(0.8))}
	if err := normalise(v); err != nil {
		t.Fatal(err)
	}
	d := Distance(v, []float64{0, 1})
	c, err := NewClustering(d, 8)
	if err != nil {
		t.Fatal(err)
	}
	c.Add([]float32{0, 1}, nil)
	if a, _ := c.Add([]float32{0.6, 0.8}, nil); a.ID != 1 {
		t.Errorf("at d == threshold (%g): %+v, want cluster 1", d, a)
	}
}

func TestClusterIDsAreNeverReused(t *testing.T) {
	c, _ := NewClustering(0.5, 8)
	c.Add([]float32{1, 0}, nil)
	c.Add([]float32{0, 1}, nil)
	if c.take(2) == nil {
		t.Fatal("no cluster 2")
	}
	if a, _ := c.Add([]float32{0, 1}, nil); a.ID != 3 || !a.New {
		t.Errorf("after removing 2: %+v, want a new cluster 3", a)
	}
	if c.take(2) != nil {
		t.Error("cluster 2 taken twice")
	}
}

func TestClusterKeepsItsFirstMExemplarsWithTheirImages(t *testing.T) {
	c, _ := NewClustering(0.5, 2)
	for i, img := range [][]byte{[]byte("first"), nil, []byte("third")} {
		if a, _ := c.Add([]float32{1, float32(i) * 0.01}, img); a.ID != 1 {
			t.Fatalf("%+v", a)
		}
	}
	cl := c.clusters[0]
	if cl.count != 3 || len(cl.exemplars) != 2 {
		t.Fatalf("count %d, exemplars %d; want 3 and 2", cl.count, len(cl.exemplars))
	}
	if cl.exemplars[0].image == nil || string(cl.exemplars[0].image.data) != "first" || cl.exemplars[1].image != nil {
		t.Errorf("exemplar images %+v %+v, want \"first\" and none", cl.exemplars[0].image, cl.exemplars[1].image)
	}
}

func TestClusteringRefusesBadEmbeddingsAndOptions(t *testing.T) {
	for _, tc := range []struct {
		name         string
		threshold    float64
		exemplars    int
		wantOptError string
	}{
		{"a zero threshold", 0, 8, "cluster threshold 0"},
		{"a threshold beyond orthogonal", 1.5, 8, "cluster threshold 1.5"},
		{"a NaN threshold", math.NaN(), 8, "cluster threshold NaN"},
		{"no exemplars", 0.5, 0, "exemplars is 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewClustering(tc.threshold, tc.exemplars); err == nil || !strings.Contains(err.Error(), tc.wantOptError) {
				t.Errorf("err = %v, want %q", err, tc.wantOptError)
			}
		})
	}
	c, _ := NewClustering(0.5, 8)
	c.Add([]float32{1, 0}, nil)
	for _, tc := range []struct {
		name string
		e    []float32
		want string
	}{
		{"NaN", []float32{float32(math.NaN()), 1}, "component 0 is NaN"},
		{"zero", []float32{0, 0}, "no usable content"},
		{"another length", []float32{1, 0, 0}, "3 dimensions, the clusters 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Add(tc.e, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if got := c.Clusters(); len(got) != 1 || got[0].Count != 1 {
		t.Errorf("bad embeddings changed the clusters: %+v", got)
	}
}

// clusterFixture is testdata/clusters_*.json: embeddings in order, the
// cluster id each gets, and optionally the final centroids by id. The
// numpy reference writes the same files.
type clusterFixture struct {
	Threshold  float64              `json:"threshold"`
	Embeddings [][]float32          `json:"embeddings"`
	IDs        []int                `json:"ids"`
	Centroids  map[string][]float64 `json:"centroids"`
}

func TestClusteringMatchesFixtures(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "clusters_*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/clusters_*.json (clusters_hand.json is part of the package)")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var fx clusterFixture
			if err := json.Unmarshal(data, &fx); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(fx.IDs) != len(fx.Embeddings) {
				t.Fatalf("%s: %d ids for %d embeddings", file, len(fx.IDs), len(fx.Embeddings))
			}
			c, err := NewClustering(fx.Threshold, 8)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for i, e := range fx.Embeddings {
				a, err := c.Add(e, nil)
				if err != nil {
					t.Fatalf("%s: embeddings[%d]: %v", file, i, err)
				}
				if a.ID != fx.IDs[i] {
					t.Fatalf("%s: embeddings[%d] went to cluster %d, the reference says %d", file, i, a.ID, fx.IDs[i])
				}
			}
			for _, cl := range c.Clusters() {
				want, ok := fx.Centroids[strconv.Itoa(cl.ID)]
				if ok && !nearVec(cl.Centroid, want) {
					t.Errorf("%s: cluster %d centroid %v, the reference says %v", file, cl.ID, cl.Centroid, want)
				}
			}
		})
	}
}
