package identify

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
)

// Clustering groups the embeddings that match no identity, online, into
// clusters with stable ids. The algorithm (a numpy reference of it exists;
// keep the two the same), for each embedding e in order, e first
// L2-normalised, in float64:
//
//	if there are clusters:
//	    d_c = ||e - m_c|| for every centroid m_c
//	if there are clusters and min d_c <= threshold:
//	    c = argmin d_c (ties: the lowest id)
//	    sum_c += e; count_c += 1; m_c = sum_c / ||sum_c||
//	else:
//	    a new cluster c with the next id: sum_c = e, m_c = e, count_c = 1
//
// Ids start at 1 and are never reused, even after a cluster is removed.
// Each cluster keeps its first M embeddings (exemplars), each with the
// image given with it if any, so that a cluster named by an operator
// becomes an identity and a new model version can re-embed them.
//
// A Clustering is not safe for concurrent use; Identifier guards its own.
type Clustering struct {
	threshold float64
	maxEx     int
	next      int
	clusters  []*cluster // ascending id
	dim       int        // 0 until the first embedding
}

type cluster struct {
	id        int
	count     int
	sum       []float64
	centroid  []float64 // sum / ||sum||
	exemplars []exemplar
}

// exemplar is a unit vector and, optionally, the image it came from.
type exemplar struct {
	vector []float64
	image  *imageRef // nil: none
}

// imageRef is a PNG, named by the hex SHA-256 of its bytes. data is held
// until the image is written to the state directory, then dropped; it is
// a copy, so the caller may reuse its buffer.
type imageRef struct {
	hash string
	data []byte
}

func newImageRef(png []byte) *imageRef {
	if len(png) == 0 {
		return nil
	}
	h := sha256.Sum256(png)
	return &imageRef{hash: hex.EncodeToString(h[:]), data: bytes.Clone(png)}
}

// Cluster describes one cluster.
type Cluster struct {
	ID        int
	Count     int       // embeddings assigned so far
	Centroid  []float64 // unit vector
	Exemplars int       // embeddings kept
}

// Assignment is where Add put an embedding.
type Assignment struct {
	ID       int
	Distance float64 // to the centroid before the update; 0 for a new cluster
	New      bool    // the embedding started the cluster
}

// MaxClusterThreshold is the largest cluster threshold, sqrt(2): an
// embedding then joins a cluster only if it is at most orthogonal to the
// centroid, so a cluster's sum never gets shorter than 1 and its centroid
// is always defined (at 2, e and -e would cancel out).
const MaxClusterThreshold = math.Sqrt2

// NewClustering makes an empty Clustering: threshold is the largest
// distance to a centroid that joins the cluster, in (0, MaxClusterThreshold];
// exemplars is M, at least 1.
func NewClustering(threshold float64, exemplars int) (*Clustering, error) {
	if !(threshold > 0 && threshold <= MaxClusterThreshold) {
		return nil, fmt.Errorf("cluster threshold %g must be in (0, %.4f] (distance between unit vectors, at most orthogonal)", threshold, MaxClusterThreshold)
	}
	if exemplars < 1 {
		return nil, fmt.Errorf("exemplars is %d, must be at least 1", exemplars)
	}
	return &Clustering{threshold: threshold, maxEx: exemplars, next: 1}, nil
}

// Add assigns e to a cluster. png, if not empty, is kept with e when e
// becomes one of the cluster's exemplars. An embedding with NaN or Inf, a
// zero one, or one of another length than the first is an error and
// changes nothing.
func (c *Clustering) Add(e []float32, png []byte) (Assignment, error) {
	v, err := Unit(e)
	if err != nil {
		return Assignment{}, fmt.Errorf("embedding: %w", err)
	}
	return c.add(v, png)
}

// add is Add for a unit vector.
func (c *Clustering) add(v []float64, png []byte) (Assignment, error) {
	if c.dim != 0 && len(v) != c.dim {
		return Assignment{}, fmt.Errorf("embedding has %d dimensions, the clusters %d", len(v), c.dim)
	}
	c.dim = len(v)
	var best *cluster
	bestD := 0.0
	for _, cl := range c.clusters {
		if d := Distance(v, cl.centroid); best == nil || d < bestD {
			best, bestD = cl, d
		}
	}
	if best == nil || bestD > c.threshold {
		cl := &cluster{id: c.next, count: 1, sum: clone(v), centroid: clone(v)}
		cl.exemplars = []exemplar{{vector: v, image: newImageRef(png)}}
		c.next++
		c.clusters = append(c.clusters, cl)
		return Assignment{ID: cl.id, New: true}, nil
	}
	for i, x := range v {
		best.sum[i] += x
	}
	best.count++
	n := norm(best.sum)
	for i, s := range best.sum {
		best.centroid[i] = s / n
	}
	if len(best.exemplars) < c.maxEx {
		best.exemplars = append(best.exemplars, exemplar{vector: v, image: newImageRef(png)})
	}
	return Assignment{ID: best.id, Distance: bestD}, nil
}

// Clusters describes every cluster, ascending id.
func (c *Clustering) Clusters() []Cluster {
	out := make([]Cluster, len(c.clusters))
	for i, cl := range c.clusters {
		out[i] = Cluster{ID: cl.id, Count: cl.count, Centroid: clone(cl.centroid), Exemplars: len(cl.exemplars)}
	}
	return out
}

// NextID is the id the next new cluster will have.
func (c *Clustering) NextID() int { return c.next }

// take removes the cluster id and returns it; nil if there is none.
func (c *Clustering) take(id int) *cluster {
	for i, cl := range c.clusters {
		if cl.id == id {
			c.clusters = append(c.clusters[:i:i], c.clusters[i+1:]...)
			return cl
		}
	}
	return nil
}

func clone(v []float64) []float64 { return append([]float64(nil), v...) }
