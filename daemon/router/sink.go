package router

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/sensors"
)

var _ sensors.Sink = (*Sink)(nil)

// Reporter publishes what a sensor reports (bad inputs, events).
type Reporter interface {
	BadInput(sensor, source string, err error)
	Event(sensor, kind, message string, attrs map[string]any)
}

// Sink is the sensors.Sink of one sensor: it fans frames out to the queues
// of the sensor's pipelines. The set of queues can change while frames
// flow (config reload).
type Sink struct {
	name string
	rep  Reporter

	mu     sync.RWMutex // held for reading while a frame is handed over
	queues []*Queue
	closed bool

	frames, badInput, skipped atomic.Uint64
	inflight                  sync.WaitGroup // frames handed over and not finished
}

// NewSink makes the sink of the sensor called name.
func NewSink(name string, rep Reporter) *Sink { return &Sink{name: name, rep: rep} }

// SetQueues sets the queues of the sensor's pipelines. A frame already
// handed over stays with the queues it went to.
func (s *Sink) SetQueues(qs []*Queue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queues = qs
}

// Queues returns the queues the sensor feeds now.
func (s *Sink) Queues() []*Queue {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.queues)
}

// Deliver implements sensors.Sink: every pipeline gets the frame on its
// own. It waits only for a pipeline whose queue is full of frames that
// cannot be read again.
func (s *Sink) Deliver(ctx context.Context, f *sensors.Frame) error {
	return s.deliver(ctx, f, nil)
}

// deliver is Deliver of a frame cut from the upstream detection origin
// (nil: a sensor's frame). It returns ErrStopping without finishing the
// frame when the sink takes no frame; once the frame went to a queue, it is
// finished whatever happens.
func (s *Sink) deliver(ctx context.Context, f *sensors.Frame, origin *payload.Origin) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || len(s.queues) == 0 {
		return ErrStopping
	}
	s.frames.Add(1)
	s.inflight.Add(1)
	t := newTracker(f, len(s.queues), s.inflight.Done)
	defer t.letGo()
	now := time.Now()
	for i, q := range s.queues {
		if err := q.push(ctx, &Job{Frame: f, Enqueued: now, Origin: origin, track: t}); err != nil {
			// The pipelines not reached are done with it, unfinished.
			for range s.queues[i:] {
				t.done(ErrStopping)
			}
			return err
		}
	}
	return nil
}

// Offer implements sensors.Sink: each pipeline keeps the newest frame.
func (s *Sink) Offer(f *sensors.Frame) { s.offer([]*sensors.Frame{f}, nil) }

// offer hands the frames made of one live frame (the frame itself, or its
// crops, cut from origins) to each pipeline, which keeps them in place of
// those it had not taken yet. It reports false, finishing nothing, when
// the sink takes no frame.
func (s *Sink) offer(fs []*sensors.Frame, origins []*payload.Origin) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || len(s.queues) == 0 {
		return false
	}
	s.frames.Add(uint64(len(fs)))
	trackers := make([]*tracker, len(fs))
	for i, f := range fs {
		s.inflight.Add(1)
		trackers[i] = newTracker(f, len(s.queues), s.inflight.Done)
	}
	now := time.Now()
	for _, q := range s.queues {
		jobs := make([]*Job, len(fs))
		for i, f := range fs {
			jobs[i] = &Job{Frame: f, Enqueued: now, track: trackers[i], live: true}
			if origins != nil {
				jobs[i].Origin = origins[i]
			}
		}
		old, ok := q.offer(jobs)
		if !ok {
			for _, t := range trackers {
				t.done(ErrStopping)
			}
			continue
		}
		s.skipped.Add(uint64(len(old)))
		for _, j := range old {
			j.Done(errSkipped)
		}
	}
	return true
}

// BadInput implements sensors.Sink.
func (s *Sink) BadInput(source string, err error) {
	s.badInput.Add(1)
	s.rep.BadInput(s.name, source, err)
}

// Event implements sensors.Sink.
func (s *Sink) Event(kind, message string, attrs ...any) {
	var m map[string]any
	if len(attrs) > 0 {
		m = map[string]any{}
		for i := 0; i+1 < len(attrs); i += 2 {
			m[fmt.Sprint(attrs[i])] = attrs[i+1]
		}
	}
	s.rep.Event(s.name, kind, message, m)
}

// Close refuses frames from now on; it waits for hand-overs in progress.
func (s *Sink) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// Wait waits until every frame handed over is finished (call it once the
// sensor has stopped): a sensor started again then cannot read an input a
// second time while the first reading is still in a pipeline.
func (s *Sink) Wait() { s.inflight.Wait() }

// Stats counts since the sink was made.
func (s *Sink) Stats() (frames, badInput, skipped uint64) {
	return s.frames.Load(), s.badInput.Load(), s.skipped.Load()
}
