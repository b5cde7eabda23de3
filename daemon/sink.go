package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
)

// job is one frame on its way through one pipeline.
type job struct {
	frame    *sensors.Frame
	enqueued time.Time
	track    *tracker
}

// tracker finishes a frame once every pipeline it went to is done with it.
type tracker struct {
	frame     *sensors.Frame
	remaining atomic.Int32
	mu        sync.Mutex
	errs      []error
}

func newTracker(f *sensors.Frame, n int) *tracker {
	t := &tracker{frame: f}
	t.remaining.Store(int32(n))
	return t
}

func (t *tracker) done(err error) {
	if err != nil {
		t.mu.Lock()
		t.errs = append(t.errs, err)
		t.mu.Unlock()
	}
	if t.remaining.Add(-1) == 0 {
		t.frame.Finish(errors.Join(t.errs...))
	}
}

var (
	errSkipped  = errors.New("skipped: a newer live frame replaced it")
	errStopping = fmt.Errorf("edgeinferd is stopping: %w", sensors.ErrUnfinished)
)

// sensorSink is the sensors.Sink of one sensor: it fans frames out to the
// sensor's pipelines.
type sensorSink struct {
	d         *Daemon
	name      string
	pipelines []*pipeline

	mu     sync.RWMutex // held for reading while a frame is handed over
	closed bool

	frames, badInput, skipped atomic.Uint64
}

// Deliver implements sensors.Sink: it waits for room in every pipeline's
// queue.
func (s *sensorSink) Deliver(ctx context.Context, f *sensors.Frame) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStopping
	}
	s.frames.Add(1)
	t := newTracker(f, len(s.pipelines))
	now := time.Now()
	for i, p := range s.pipelines {
		select {
		case p.queue <- &job{frame: f, enqueued: now, track: t}:
		case <-ctx.Done():
			if i == 0 {
				return ctx.Err() // nobody took it: the sensor keeps it
			}
			for range s.pipelines[i:] {
				t.done(errStopping)
			}
			return ctx.Err()
		}
	}
	return nil
}

// Offer implements sensors.Sink: each pipeline keeps the newest frame.
func (s *sensorSink) Offer(f *sensors.Frame) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	s.frames.Add(1)
	t := newTracker(f, len(s.pipelines))
	now := time.Now()
	for _, p := range s.pipelines {
		if old := p.offer(&job{frame: f, enqueued: now, track: t}); old != nil {
			s.skipped.Add(1)
			old.track.done(errSkipped)
		}
	}
}

// BadInput implements sensors.Sink.
func (s *sensorSink) BadInput(source string, err error) {
	s.badInput.Add(1)
	s.d.log.Warn("bad input", "sensor", s.name, "source", source, "err", err)
	s.d.event(Event{Type: EventBadInput, Sensor: s.name, Source: source, Message: fmt.Sprintf("%s: %v", source, err)})
}

// Event implements sensors.Sink.
func (s *sensorSink) Event(kind, message string, attrs ...any) {
	s.d.log.Warn(message, append([]any{"sensor", s.name, "event", kind}, attrs...)...)
	e := Event{Type: kind, Sensor: s.name, Message: message}
	if len(attrs) > 0 {
		e.Attrs = map[string]any{}
		for i := 0; i+1 < len(attrs); i += 2 {
			e.Attrs[fmt.Sprint(attrs[i])] = attrs[i+1]
		}
	}
	s.d.event(e)
}

// close refuses frames from now on; it waits for hand-overs in progress.
func (s *sensorSink) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *sensorSink) stats() SensorStats {
	return SensorStats{Frames: s.frames.Load(), BadInput: s.badInput.Load(), Skipped: s.skipped.Load()}
}
