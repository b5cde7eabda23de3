package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
)

type nopReporter struct{}

func (nopReporter) BadInput(string, string, error)               {}
func (nopReporter) Event(string, string, string, map[string]any) {}

// input is a frame whose finishing and reloads are recorded.
type input struct {
	f       *sensors.Frame
	reloads atomic.Int32
	done    chan error
}

func newInput(seq uint64, reloadable bool) *input {
	in := &input{done: make(chan error, 1)}
	rgb := []byte{byte(seq), 2, 3}
	in.f = &sensors.Frame{Sensor: "s", Seq: seq, Source: fmt.Sprintf("frame %d", seq), Width: 1, Height: 1, RGB: rgb}
	if reloadable {
		in.f.Reload = func() ([]byte, error) {
			in.reloads.Add(1)
			return []byte{byte(seq), 2, 3}, nil
		}
	}
	in.f.OnDone(func(err error) { in.done <- err })
	return in
}

func (in *input) finished(t *testing.T) error {
	t.Helper()
	select {
	case err := <-in.done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never finished", in.f.Source)
		return nil
	}
}

func (in *input) pending() bool {
	select {
	case err := <-in.done:
		in.done <- err
		return false
	default:
		return true
	}
}

func TestAFrameFinishesOnlyWhenEveryPipelineIsDoneWithIt(t *testing.T) {
	a, b := NewQueue(4), NewQueue(4)
	s := NewSink("s", nopReporter{})
	s.SetQueues([]*Queue{a, b})
	in := newInput(1, false)
	if err := s.Deliver(context.Background(), in.f); err != nil {
		t.Fatal(err)
	}
	ja, jb := a.take(), b.take()
	ja.Done(nil)
	if !in.pending() {
		t.Fatal("finished after one of two pipelines")
	}
	failure := errors.New("model failed")
	jb.Done(failure)
	if err := in.finished(t); !errors.Is(err, failure) {
		t.Fatalf("finished with %v, want the failure", err)
	}
}

func TestAPipelineThatDoesNotTakeFramesDoesNotHoldUpItsSibling(t *testing.T) {
	stuck, healthy := NewQueue(2), NewQueue(2)
	s := NewSink("s", nopReporter{})
	s.SetQueues([]*Queue{stuck, healthy})
	var ins []*input
	for i := 1; i <= 100; i++ {
		in := newInput(uint64(i), true)
		ins = append(ins, in)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.Deliver(ctx, in.f)
		cancel()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		healthy.take().Done(nil)
	}
	if stuck.Len() != 100 {
		t.Fatalf("stuck pipeline holds %d frames, want 100", stuck.Len())
	}
	// Frames beyond the hot two let go of their pixels once the healthy
	// pipeline is done with them.
	held := 0
	for _, in := range ins {
		if !in.pending() {
			t.Fatalf("%s finished before the stuck pipeline ran it", in.f.Source)
		}
		if in.f.RGB != nil {
			t.Fatalf("%s keeps its pixels on the frame", in.f.Source)
		}
	}
	for i := range ins {
		j := stuck.take()
		if j.rgb != nil {
			held++
		}
		px, err := j.Pixels()
		if err != nil || px[0] != byte(i+1) {
			t.Fatalf("frame %d pixels %v, %v", i+1, px, err)
		}
		j.Done(nil)
		if err := ins[i].finished(t); err != nil {
			t.Fatal(err)
		}
	}
	if held != 2 {
		t.Fatalf("%d waiting frames held their pixels, want 2 (the queue's hot frames)", held)
	}
	reloads := 0
	for _, in := range ins {
		reloads += int(in.reloads.Load())
	}
	if reloads != 98 {
		t.Fatalf("%d reloads, want 98", reloads)
	}
}

func TestFramesWaitingInEveryQueueDoNotKeepTheirPixels(t *testing.T) {
	// Two pipelines that both fall behind (one stuck, one slow): a frame
	// that can be read again goes to both queues without its pixels once
	// their hot frames are there, and nothing keeps them for it.
	stuck, slow := NewQueue(2), NewQueue(2)
	s := NewSink("s", nopReporter{})
	s.SetQueues([]*Queue{stuck, slow})
	var ins []*input
	for i := 1; i <= 100; i++ {
		in := newInput(uint64(i), true)
		ins = append(ins, in)
		if err := s.Deliver(context.Background(), in.f); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	held := 0
	for _, j := range stuck.jobs {
		j.track.mu.Lock()
		if j.track.rgb != nil {
			held++
		}
		j.track.mu.Unlock()
	}
	if held != 2 {
		t.Fatalf("%d of 100 waiting frames keep their pixels, want 2 (the queues' hot frames)", held)
	}
	// Both pipelines catch up: each frame is read again where it has to be,
	// and finishes once.
	for i, in := range ins {
		for _, q := range []*Queue{slow, stuck} {
			j := q.take()
			px, err := j.Pixels()
			if err != nil || px[0] != byte(i+1) {
				t.Fatalf("frame %d pixels %v, %v", i+1, px, err)
			}
			j.Done(nil)
		}
		if err := in.finished(t); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAFrameThatCannotBeReadAgainWaitsForRoom(t *testing.T) {
	q := NewQueue(1)
	s := NewSink("s", nopReporter{})
	s.SetQueues([]*Queue{q})
	if err := s.Deliver(context.Background(), newInput(1, false).f); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	second := newInput(2, false)
	if err := s.Deliver(ctx, second.f); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Deliver into a full queue: %v, want the deadline", err)
	}
	if err := second.finished(t); !errors.Is(err, sensors.ErrUnfinished) {
		t.Fatalf("an undelivered frame finished with %v, want ErrUnfinished", err)
	}
	delivered := make(chan error, 1)
	third := newInput(3, false)
	go func() { delivered <- s.Deliver(context.Background(), third.f) }()
	q.take().Done(nil)
	if err := <-delivered; err != nil {
		t.Fatal(err)
	}
	if j := q.take(); j == nil || j.Frame.Seq != 3 {
		t.Fatalf("got %+v, want frame 3", j)
	}
}

func TestALiveFrameReplacesTheOneWaitingAndCountsIt(t *testing.T) {
	q := NewQueue(1)
	s := NewSink("s", nopReporter{})
	s.SetQueues([]*Queue{q})
	first, second := newInput(1, false), newInput(2, false)
	s.Offer(first.f)
	s.Offer(second.f)
	if err := first.finished(t); !errors.Is(err, errSkipped) {
		t.Fatalf("replaced frame finished with %v", err)
	}
	if j := q.take(); j.Frame.Seq != 2 || q.take() != nil {
		t.Fatal("the newest live frame is not the one waiting")
	}
	if _, _, skipped := s.Stats(); skipped != 1 || q.Skipped() != 1 {
		t.Fatalf("skipped %d/%d, want 1", skipped, q.Skipped())
	}
}

func TestClosingAQueueFinishesItsWaitingFramesWithTheGivenError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{{"stopping keeps the inputs", ErrStopping}, {"removed lets them go", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			q := NewQueue(1)
			s := NewSink("s", nopReporter{})
			s.SetQueues([]*Queue{q})
			a, b := newInput(1, true), newInput(2, true)
			s.Deliver(context.Background(), a.f)
			s.Deliver(context.Background(), b.f)
			q.Close(tc.err)
			for _, in := range []*input{a, b} {
				if err := in.finished(t); !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
					t.Fatalf("finished with %v, want %v", err, tc.err)
				}
			}
			if err := s.Deliver(context.Background(), newInput(3, true).f); !errors.Is(err, ErrStopping) {
				t.Fatalf("Deliver after Close: %v", err)
			}
		})
	}
}

func TestSinkWaitReturnsOnceEveryFrameHandedOverIsFinished(t *testing.T) {
	q := NewQueue(4)
	s := NewSink("s", nopReporter{})
	s.SetQueues([]*Queue{q})
	s.Deliver(context.Background(), newInput(1, true).f)
	waited := make(chan struct{})
	go func() { s.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Wait returned with a frame in a queue")
	case <-time.After(50 * time.Millisecond):
	}
	q.take().Done(nil)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return")
	}
}

// Many frames through two queues taken by two workers at once: each frame
// finishes exactly once, after both.
func TestConcurrentDeliveryFinishesEachFrameExactlyOnce(t *testing.T) {
	qs := []*Queue{NewQueue(3), NewQueue(5)}
	s := NewSink("s", nopReporter{})
	s.SetQueues(qs)
	const n = 500
	var finished atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j, err := q.Next(ctx)
				if err != nil {
					return
				}
				if _, err := j.Pixels(); err != nil {
					t.Error(err)
				}
				j.Done(nil)
			}
		}()
	}
	for i := 1; i <= n; i++ {
		f := &sensors.Frame{Seq: uint64(i), Width: 1, Height: 1, RGB: []byte{1, 2, 3}}
		if i%2 == 0 {
			f.Reload = func() ([]byte, error) { return []byte{1, 2, 3}, nil }
		}
		f.OnDone(func(error) { finished.Add(1) })
		if err := s.Deliver(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	s.Wait()
	cancel()
	wg.Wait()
	if finished.Load() != n {
		t.Fatalf("%d frames finished, want %d", finished.Load(), n)
	}
}
