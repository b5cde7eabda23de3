package track

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func box(cx, cy, s float64) Box { return Box{cx - s/2, cy - s/2, cx + s/2, cy + s/2} }

// Two objects of one class cross paths head on at 10 frames a second: the
// constant-velocity prediction keeps each one's identity through the
// crossing, each enters once (after MinHits frames) and leaves once
// (MaxAge after its last detection).
func TestCrossingObjectsKeepTheirIdentities(t *testing.T) {
	tr := New(Config{MinHits: 2, MaxAge: 300 * time.Millisecond, IoU: 0.2})
	var entered, left []Change
	first := map[int]uint64{} // object -> id
	for f := range 40 {
		at := t0.Add(time.Duration(f) * 100 * time.Millisecond)
		// a moves right, b moves left, both 12 px a frame, crossing at frame 16.
		dets := []Detection{
			{Box: box(50+12*float64(f), 100, 30), Class: 0, Score: 0.9},
			{Box: box(434-12*float64(f), 104, 30), Class: 0, Score: 0.8},
		}
		if f >= 30 { // b leaves the picture
			dets = dets[:1]
		}
		ids, ch := tr.Update(at, dets)
		for _, c := range ch {
			if c.Entered {
				entered = append(entered, c)
			} else {
				left = append(left, c)
			}
		}
		for o, id := range ids {
			if prev, ok := first[o]; ok && prev != id {
				t.Fatalf("frame %d: object %d changed id %d -> %d", f, o, prev, id)
			}
			first[o] = id
		}
	}
	left = append(left, tr.Flush()...)
	if first[0] == first[1] {
		t.Fatal("both objects share an id")
	}
	if len(entered) != 2 || len(left) != 2 {
		t.Fatalf("%d entered, %d left; want 2 and 2", len(entered), len(left))
	}
	for _, c := range left {
		if c.Object.ID == first[1] {
			if want := t0.Add(29 * 100 * time.Millisecond); !c.Object.LastSeen.Equal(want) || c.Object.BestScore != 0.8 {
				t.Fatalf("b left %+v, want last seen %s and best score 0.8", c.Object, want)
			}
		}
	}
	if !entered[0].Object.FirstSeen.Equal(t0) {
		t.Fatalf("entered %+v, first seen should be the first frame", entered[0].Object)
	}
}

// A missed detection shorter than MaxAge keeps the track; a class never
// matches another class's track; a detection seen once and gone never
// enters.
func TestGapsClassesAndFlickers(t *testing.T) {
	tr := New(Config{MinHits: 3, MaxAge: time.Second})
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ids1, _ := tr.Update(at(0), []Detection{{Box: box(100, 100, 40), Class: 1, Score: 0.5}})
	tr.Update(at(100), []Detection{{Box: box(102, 100, 40), Class: 1, Score: 0.9}})
	tr.Update(at(200), nil) // missed
	ids4, ch := tr.Update(at(600), []Detection{{Box: box(104, 100, 40), Class: 1, Score: 0.7}, {Box: box(104, 100, 40), Class: 2, Score: 0.6}})
	if ids4[0] != ids1[0] || ids4[1] == ids1[0] {
		t.Fatalf("ids %v after a gap, first %v", ids4, ids1)
	}
	if len(ch) != 1 || !ch[0].Entered || ch[0].Object.BestScore != 0.9 {
		t.Fatalf("changes %+v: the class-1 track enters on its third hit", ch)
	}
	_, ch = tr.Update(at(2000), nil)
	if len(ch) != 1 || ch[0].Entered || ch[0].Object.ID != ids1[0] {
		t.Fatalf("changes %+v: only the confirmed track leaves; the class-2 flicker never entered", ch)
	}
}

func TestApplyAddsTrackIDsToTheResult(t *testing.T) {
	tr := New(Config{MinHits: 1})
	out, ch, err := tr.Apply(t0, json.RawMessage(`{"detections":[{"label":"cat","class":0,"score":0.9,"box":{"x1":1,"y1":2,"x2":11,"y2":12}}],"candidates":4}`))
	if err != nil || len(ch) != 1 || !strings.Contains(string(out), `"track_id":1`) || !strings.Contains(string(out), `"candidates":4`) {
		t.Fatalf("%s %+v %v", out, ch, err)
	}
	if _, _, err := tr.Apply(t0, json.RawMessage(`[1,2]`)); err == nil {
		t.Fatal("a result that is not an object was taken")
	}
	same, ch, err := tr.Apply(t0, json.RawMessage(`{"top":[]}`))
	if err != nil || ch != nil || string(same) != `{"top":[]}` {
		t.Fatalf("a result without detections changed: %s %v", same, err)
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	c := Config{}.Defaults()
	if c.IoU != 0.3 || c.MaxAge != time.Second || c.MinHits != 2 || c.Validate() != nil {
		t.Fatalf("defaults %+v", c)
	}
	for _, bad := range []Config{{IoU: 1.5, MaxAge: 1, MinHits: 1}, {IoU: 0.3, MaxAge: -1, MinHits: 1}, {IoU: 0.3, MaxAge: 1, MinHits: 0}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

// A detector that calls an object by another name for a few frames (label
// flicker, an object half out of view) does not make a new object: the
// track goes on and keeps the class it was detected as most often. With
// StrictClasses the other name is another object.
func TestAnotherClassContinuesATrackUnlessStrict(t *testing.T) {
	classes := []int{0, 0, 0, 1, 1, 0, 1}
	for _, strict := range []bool{false, true} {
		tr := New(Config{MinHits: 2, MaxAge: time.Second, StrictClasses: strict})
		var entered []Change
		ids := map[uint64]bool{}
		for f, c := range classes {
			at := t0.Add(time.Duration(f) * 100 * time.Millisecond)
			got, ch := tr.Update(at, []Detection{{Box: box(100+5*float64(f), 100, 40), Class: c, Label: []string{"car", "truck"}[c], Score: 0.9}})
			ids[got[0]] = true
			for _, x := range ch {
				if x.Entered {
					entered = append(entered, x)
				}
			}
		}
		left := tr.Flush()
		switch {
		case !strict && (len(ids) != 1 || len(entered) != 1 || len(left) != 1 || left[0].Object.Class != 0 || left[0].Object.Label != "car"):
			t.Fatalf("flicker: ids %v, entered %d, left %+v; want one car", ids, len(entered), left)
		case strict && (len(ids) != 2 || len(entered) != 2):
			t.Fatalf("strict: ids %v, entered %d; want a car and a truck", ids, len(entered))
		}
	}
	// The majority wins: three trucks after two cars make a truck.
	tr := New(Config{MinHits: 1, MaxAge: time.Second})
	for f, c := range []int{0, 0, 1, 1, 1} {
		tr.Update(t0.Add(time.Duration(f)*100*time.Millisecond), []Detection{{Box: box(100, 100, 40), Class: c, Label: []string{"car", "truck"}[c]}})
	}
	if left := tr.Flush(); len(left) != 1 || left[0].Object.Label != "truck" {
		t.Fatalf("left %+v, want one truck", left)
	}
}
