// Package track gives the detections of a pipeline identities that hold
// across frames, the way SORT does (Bewley et al. 2016) without its Kalman
// filter: each track predicts its box with a constant-velocity model,
// detections are associated to the predictions of their class by IoU
// (greedily, best overlap first), then, unless StrictClasses, what is left
// to the tracks of other classes (a detector's label flicker, an object
// half out of view, does not start a new object: the track keeps the class
// it was detected as most often), an unmatched detection starts a track, and
// a track not seen for MaxAge has left. A track is confirmed (it has
// entered) after MinHits detections; entering and leaving are events, with
// the track's id, class, first and last seen and best score.
//
// The tracker lives in the daemon's pipeline, not in the plugin, so tracks
// survive a model version swap and a plugin restart.
package track

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
)

// Config is a pipeline's [pipelines.<name>.tracker] table.
type Config struct {
	IoU     float64       // least IoU of a detection with a track's predicted box; default 0.3
	MaxAge  time.Duration // a track unseen this long has left; default 1s
	MinHits int           // detections before a track has entered; default 2
	// StrictClasses: a detection only ever continues a track of its own
	// class. Otherwise a detection no track of its class takes may continue
	// a track of another class.
	StrictClasses bool
}

// Defaults fills the zero fields of c.
func (c Config) Defaults() Config {
	if c.IoU == 0 {
		c.IoU = 0.3
	}
	if c.MaxAge == 0 {
		c.MaxAge = time.Second
	}
	if c.MinHits == 0 {
		c.MinHits = 2
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case !(c.IoU > 0 && c.IoU <= 1):
		return fmt.Errorf("iou is %g, must be in (0, 1]", c.IoU)
	case c.MaxAge <= 0:
		return fmt.Errorf("max_age is %s, must be > 0", c.MaxAge)
	case c.MinHits < 1:
		return fmt.Errorf("min_hits is %d, must be >= 1", c.MinHits)
	}
	return nil
}

// Box is x1, y1, x2, y2 in frame pixels.
type Box [4]float64

func iou(a, b Box) float64 {
	return boxes.IoU(boxes.Box{X1: a[0], Y1: a[1], X2: a[2], Y2: a[3]}, boxes.Box{X1: b[0], Y1: b[1], X2: b[2], Y2: b[3]})
}

// Detection is what the tracker needs of one detection.
type Detection struct {
	Box   Box
	Class int
	Label string
	Score float64
}

// Object is a track as events report it.
type Object struct {
	ID        uint64    `json:"track_id"`
	Label     string    `json:"label"`
	Class     int       `json:"class"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	BestScore float64   `json:"best_score"`
	Box       Box       `json:"box"` // where it was last seen
}

// Change is a track entering or leaving.
type Change struct {
	Entered bool // false: left
	Object  Object
}

type track struct {
	Object
	vel       [4]float64 // per second, of each box coordinate
	hits      int
	confirmed bool
	votes     map[int]int // detections per class
}

// vote counts a detection of class c and makes the track's class the one
// it was detected as most often (the earlier one on a tie).
func (t *track) vote(c int, label string) {
	t.votes[c]++
	if t.votes[c] > t.votes[t.Class] {
		t.Class, t.Label = c, label
	}
}

// predict is the track's box at time at, moved at its velocity.
func (t *track) predict(at time.Time) Box {
	dt := at.Sub(t.LastSeen).Seconds()
	var b Box
	for i := range b {
		b[i] = t.Box[i] + t.vel[i]*dt
	}
	return b
}

// Tracker holds one pipeline's tracks. It is not safe for concurrent use:
// a pipeline processes one frame at a time.
type Tracker struct {
	cfg    Config
	tracks []*track
	next   uint64
}

// New returns a tracker with cfg (its zero fields defaulted).
func New(cfg Config) *Tracker { return &Tracker{cfg: cfg.Defaults(), next: 1} }

// Update takes the detections of the frame captured at at, and returns
// each detection's track id (in order) and the tracks that entered or
// left. Frames must come in capture order; one older than the last is
// taken as if at the same time.
func (tr *Tracker) Update(at time.Time, dets []Detection) ([]uint64, []Change) {
	var changes []Change
	// Who has left before this frame.
	alive := tr.tracks[:0]
	for _, t := range tr.tracks {
		if at.Sub(t.LastSeen) > tr.cfg.MaxAge {
			if t.confirmed {
				changes = append(changes, Change{Entered: false, Object: t.Object})
			}
			continue
		}
		alive = append(alive, t)
	}
	tr.tracks = alive

	type pair struct {
		t, d  int
		iou   float64
		other int // 1: the detection's class is not the track's
	}
	var pairs []pair
	for ti, t := range tr.tracks {
		p := t.predict(at)
		for di, d := range dets {
			other := 0
			if d.Class != t.Class {
				if tr.cfg.StrictClasses {
					continue
				}
				other = 1
			}
			if v := iou(p, d.Box); v >= tr.cfg.IoU {
				pairs = append(pairs, pair{ti, di, v, other})
			}
		}
	}
	// Same-class pairs first, each pass best overlap first.
	slices.SortFunc(pairs, func(a, b pair) int {
		return cmp.Or(cmp.Compare(a.other, b.other), cmp.Compare(b.iou, a.iou), cmp.Compare(a.t, b.t), cmp.Compare(a.d, b.d))
	})
	ids := make([]uint64, len(dets))
	usedT := make([]bool, len(tr.tracks))
	for _, p := range pairs {
		if usedT[p.t] || ids[p.d] != 0 {
			continue
		}
		usedT[p.t] = true
		t, d := tr.tracks[p.t], dets[p.d]
		if dt := at.Sub(t.LastSeen).Seconds(); dt > 0 {
			for i := range t.vel {
				// Constant velocity, smoothed: half the new estimate.
				t.vel[i] = 0.5*t.vel[i] + 0.5*(d.Box[i]-t.Box[i])/dt
			}
		}
		if at.After(t.LastSeen) {
			t.LastSeen = at
		}
		t.Box, t.hits = d.Box, t.hits+1
		t.BestScore = math.Max(t.BestScore, d.Score)
		t.vote(d.Class, d.Label)
		ids[p.d] = t.ID
		if !t.confirmed && t.hits >= tr.cfg.MinHits {
			t.confirmed = true
			changes = append(changes, Change{Entered: true, Object: t.Object})
		}
	}
	for di, d := range dets {
		if ids[di] != 0 {
			continue
		}
		t := &track{Object: Object{ID: tr.next, Label: d.Label, Class: d.Class, FirstSeen: at, LastSeen: at, BestScore: d.Score, Box: d.Box},
			hits: 1, votes: map[int]int{d.Class: 1}}
		tr.next++
		tr.tracks = append(tr.tracks, t)
		ids[di] = t.ID
		if tr.cfg.MinHits <= 1 {
			t.confirmed = true
			changes = append(changes, Change{Entered: true, Object: t.Object})
		}
	}
	return ids, changes
}

// Flush ends every track (the pipeline stops): the confirmed ones leave.
func (tr *Tracker) Flush() []Change {
	var changes []Change
	for _, t := range tr.tracks {
		if t.confirmed {
			changes = append(changes, Change{Entered: false, Object: t.Object})
		}
	}
	tr.tracks = nil
	return changes
}

// Apply tracks a detect plugin's result JSON: each detection gets its
// "track_id", and the changes are returned. An output without detections
// is returned as it is.
func (tr *Tracker) Apply(at time.Time, output json.RawMessage) (json.RawMessage, []Change, error) {
	var res map[string]json.RawMessage
	if err := json.Unmarshal(output, &res); err != nil {
		return output, nil, fmt.Errorf("tracker: result is not a JSON object: %w", err)
	}
	raw, ok := res["detections"]
	if !ok {
		return output, nil, nil
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return output, nil, fmt.Errorf("tracker: detections: %w", err)
	}
	dets := make([]Detection, len(items))
	for i, it := range items {
		var d payload.Detection
		b, _ := json.Marshal(it)
		if err := json.Unmarshal(b, &d); err != nil {
			return output, nil, fmt.Errorf("tracker: detection %d: %w", i, err)
		}
		dets[i] = Detection{Box: Box{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}, Class: d.Class, Label: d.Label, Score: d.Score}
	}
	ids, changes := tr.Update(at, dets)
	for i, it := range items {
		it["track_id"], _ = json.Marshal(ids[i])
	}
	res["detections"], _ = json.Marshal(items)
	out, err := json.Marshal(res)
	if err != nil {
		return output, nil, err
	}
	return out, changes, nil
}
