package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/crop"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/sensors"
)

// image is an upstream input of 20x10 pixels whose pixel (x, y) is
// R = x, G = y, B = seq.
func image(seq uint64, reloadable bool) *input {
	const w, h = 20, 10
	px := func() []byte {
		rgb := make([]byte, 0, w*h*3)
		for y := range h {
			for x := range w {
				rgb = append(rgb, byte(x), byte(y), byte(seq))
			}
		}
		return rgb
	}
	in := &input{done: make(chan error, 1)}
	in.f = &sensors.Frame{Sensor: "cam", Seq: seq, Source: fmt.Sprintf("frame %d", seq), Width: w, Height: h, RGB: px()}
	if reloadable {
		in.f.Reload = func() ([]byte, error) { in.reloads.Add(1); return px(), nil }
	}
	in.f.OnDone(func(err error) { in.done <- err })
	return in
}

// boxes is an upstream result with one 4x4 detection per x given, at
// (x, 2), scores falling.
func boxes(xs ...float64) json.RawMessage {
	var dets []payload.Detection
	for i, x := range xs {
		dets = append(dets, payload.Detection{Label: "a", Score: 0.9 - 0.1*float64(i), Box: payload.Box{X1: x, Y1: 2, X2: x + 4, Y2: 6}, TrackID: uint64(i + 1)})
	}
	b, _ := json.Marshal(map[string]any{"detections": dets})
	return b
}

var anyCrop = crop.Config{MinSize: 1, MaxCrops: 10}

// upstream runs one frame into the upstream pipeline's queue and takes its
// job, as the upstream worker would.
func upstream(t *testing.T, in *input, live bool) (*Job, []byte) {
	t.Helper()
	q := NewQueue(4)
	s := NewSink("cam", nopReporter{})
	s.SetQueues([]*Queue{q})
	if live {
		s.Offer(in.f)
	} else if err := s.Deliver(context.Background(), in.f); err != nil {
		t.Fatal(err)
	}
	j := q.take()
	rgb, err := j.Pixels()
	if err != nil {
		t.Fatal(err)
	}
	return j, rgb
}

func noEvent(payload.Event) {}

// The upstream input is released only once the upstream's own result and
// every crop's are done, whatever the order.
func TestTheUpstreamInputWaitsForEveryCrop(t *testing.T) {
	down := NewQueue(4)
	fd := NewFeed("faces", down, anyCrop, noEvent)
	in := image(1, false)
	j, rgb := upstream(t, in, false)
	fd.Send(context.Background(), "people", j, rgb, boxes(0, 8))
	a, b := down.take(), down.take()
	if a == nil || b == nil || down.take() != nil {
		t.Fatal("want two crops in the queue")
	}
	a.Done(nil)
	j.Done(nil)
	if !in.pending() {
		t.Fatal("released with a crop not done")
	}
	b.Done(nil)
	if err := in.finished(t); err != nil {
		t.Fatal(err)
	}
}

// A crop frame is the pixels of its rectangle, names the upstream frame in
// its source, and its job carries the origin: the upstream pipeline, frame
// and detection.
func TestACropCarriesItsPixelsAndItsOrigin(t *testing.T) {
	down := NewQueue(4)
	fd := NewFeed("faces", down, crop.Config{MinSize: 1, MaxCrops: 10, Margin: 0.25}, noEvent)
	in := image(7, false)
	j, rgb := upstream(t, in, false)
	j.Origin = &payload.Origin{Pipeline: "cars", Seq: 7} // the upstream frame is itself a crop
	fd.Send(context.Background(), "people", j, rgb, boxes(18, 4))
	got := down.take()
	f := got.Frame
	want := &payload.Origin{Pipeline: "people", Sensor: "cam", Seq: 7, Source: "frame 7", Detection: 0,
		Box: payload.Box{X1: 18, Y1: 2, X2: 22, Y2: 6}, Crop: payload.Rect{X1: 17, Y1: 1, X2: 20, Y2: 7},
		Label: "a", Score: 0.9, TrackID: 1, Origin: j.Origin}
	if fmt.Sprint(*got.Origin) != fmt.Sprint(*want) || got.Origin.Origin != j.Origin {
		t.Fatalf("origin %+v\nwant   %+v", *got.Origin, *want)
	}
	if f.Source != "frame 7#people[0]" || f.Sensor != "cam" || f.Seq != 7 || f.Width != 3 || f.Height != 6 {
		t.Fatalf("crop frame %q %s #%d %dx%d", f.Source, f.Sensor, f.Seq, f.Width, f.Height)
	}
	px, _ := got.Pixels()
	if len(px) != 3*6*3 || px[0] != 17 || px[1] != 1 || px[2] != 7 || px[len(px)-3] != 19 || px[len(px)-2] != 6 {
		t.Fatalf("pixels %v", px)
	}
}

// Crops of a frame that can be read again wait beyond the queue's hot ones
// without their pixels: Send never waits, and a cold crop is cut again from
// the input read again.
func TestCropsOfAnInputThatCanBeReadAgainNeverHoldUpTheUpstream(t *testing.T) {
	down := NewQueue(1)
	fd := NewFeed("faces", down, anyCrop, noEvent)
	in := image(3, true)
	j, rgb := upstream(t, in, false)
	sent := make(chan struct{})
	go func() { fd.Send(context.Background(), "people", j, rgb, boxes(0, 5, 10, 15)); close(sent) }()
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("Send waited for a pipeline that takes nothing")
	}
	j.Done(nil)
	reloadsBefore := in.reloads.Load()
	for i, x := range []byte{0, 5, 10, 15} {
		c := down.take()
		px, err := c.Pixels()
		if err != nil || px[0] != x || px[2] != 3 {
			t.Fatalf("crop %d: pixels %v, %v", i, px[:3], err)
		}
		c.Done(nil)
	}
	if n := in.reloads.Load() - reloadsBefore; n != 3 {
		t.Fatalf("%d reloads of the input, want 3 (the crops beyond the one hot)", n)
	}
	if err := in.finished(t); err != nil {
		t.Fatal(err)
	}
}

// Crops of a lossless frame that cannot be read again wait for room, as a
// sensor's frames do; when edgeinferd stops meanwhile, the input is kept.
func TestCropsOfAnInputThatCannotBeReadAgainWaitForRoomAndKeepItWhenStopping(t *testing.T) {
	down := NewQueue(1)
	fd := NewFeed("faces", down, anyCrop, noEvent)
	in := image(4, false)
	j, rgb := upstream(t, in, false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	fd.Send(ctx, "people", j, rgb, boxes(0, 5, 10))
	j.Done(nil)
	if down.Len() != 1 {
		t.Fatalf("%d crops queued, want the one that found room", down.Len())
	}
	down.take().Done(nil)
	if err := in.finished(t); !errors.Is(err, sensors.ErrUnfinished) {
		t.Fatalf("finished with %v, want ErrUnfinished", err)
	}
}

// Crops of a live frame replace the crops of an older one not taken yet,
// counted as skipped; the skipped crops let their frame go.
func TestCropsOfALiveFrameReplaceTheOlderCropsNotTaken(t *testing.T) {
	down := NewQueue(1)
	fd := NewFeed("faces", down, anyCrop, noEvent)
	first, second := image(1, false), image(2, false)
	j1, rgb1 := upstream(t, first, true)
	fd.Send(context.Background(), "people", j1, rgb1, boxes(0, 5, 10))
	j1.Done(nil)
	down.take().Done(nil) // the pipeline took one crop of the first frame
	j2, rgb2 := upstream(t, second, true)
	fd.Send(context.Background(), "people", j2, rgb2, boxes(0, 5))
	j2.Done(nil)
	if err := first.finished(t); !errors.Is(err, errSkipped) {
		t.Fatalf("the first frame finished with %v, want skipped", err)
	}
	var seqs []uint64
	for c := down.take(); c != nil; c = down.take() {
		seqs = append(seqs, c.Frame.Seq)
		c.Done(nil)
	}
	if !slices.Equal(seqs, []uint64{2, 2}) || down.Skipped() != 2 {
		t.Fatalf("crops taken from frames %v, %d skipped; want the second frame's two, 2 skipped", seqs, down.Skipped())
	}
	if err := second.finished(t); err != nil {
		t.Fatal(err)
	}
}

// A closed feed refuses crops: a pipeline removed owes the upstream input
// nothing, one stopping keeps it.
func TestAClosedFeedLetsGoOfTheInputOrKeepsIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{{"removed: let go", nil}, {"stopping: kept", ErrStopping}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, live := range []bool{false, true} {
				fd := NewFeed("faces", NewQueue(1), anyCrop, noEvent)
				fd.Close(tc.err)
				in := image(1, false)
				j, rgb := upstream(t, in, live)
				fd.Send(context.Background(), "people", j, rgb, boxes(0, 5))
				j.Done(nil)
				if err := in.finished(t); !errors.Is(err, tc.err) || tc.err == nil && err != nil {
					t.Fatalf("live %v: finished with %v, want %v", live, err, tc.err)
				}
			}
		})
	}
}

// Boxes that cannot be cut are events naming the upstream frame and the
// detection, and counted with those left out; the others are cut.
func TestBadAndLeftOutDetectionsAreCountedAndBadOnesReported(t *testing.T) {
	var events []payload.Event
	fd := NewFeed("faces", NewQueue(8), crop.Config{MinSize: 3, MaxCrops: 1}, func(ev payload.Event) { events = append(events, ev) })
	in := image(5, false)
	j, rgb := upstream(t, in, false)
	out := json.RawMessage(`{"detections":[{"label":"a","score":0.9,"box":{"x1":9,"y1":1,"x2":4,"y2":5}},
		{"label":"a","score":0.8,"box":{"x1":0,"y1":0,"x2":2,"y2":2}},
		{"label":"a","score":0.7,"box":{"x1":0,"y1":0,"x2":5,"y2":5}},
		{"label":"a","score":0.6,"box":{"x1":5,"y1":0,"x2":10,"y2":5}}]}`)
	fd.Send(context.Background(), "people", j, rgb, out)
	if st := fd.Stats(); st != (payload.CropStats{Made: 1, TooSmall: 1, OverMax: 1, Bad: 1}) {
		t.Fatalf("stats %+v", st)
	}
	if len(events) != 1 || events[0].Type != payload.EventBadInput || events[0].Pipeline != "faces" || events[0].Source != "frame 5" ||
		events[0].Message != "frame 5: no crop from pipeline people's result: detection 0: box {X1:9 Y1:1 X2:4 Y2:5} is inverted" {
		t.Fatalf("events %+v", events)
	}
}

// Closing a feed does not wait for a crop waiting for room in the queue:
// closing the queue then lets the crop go, unfinished, and Send returns.
func TestClosingAFeedDoesNotWaitForACropWaitingForRoom(t *testing.T) {
	down := NewQueue(1)
	fd := NewFeed("faces", down, anyCrop, noEvent)
	in := image(6, false)
	j, rgb := upstream(t, in, false)
	sent := make(chan struct{})
	go func() { fd.Send(context.Background(), "people", j, rgb, boxes(0, 5)); close(sent) }()
	waitRoom := time.Now().Add(5 * time.Second)
	for down.Len() != 1 && time.Now().Before(waitRoom) {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { fd.Close(nil); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the crop waiting for room")
	}
	down.Close(nil)
	<-sent
	j.Done(nil)
	if err := in.finished(t); !errors.Is(err, sensors.ErrUnfinished) {
		t.Fatalf("finished with %v, want ErrUnfinished (the crop was being handed over)", err)
	}
}
