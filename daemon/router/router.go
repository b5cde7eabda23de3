// Package router takes frames from sensors to pipelines. Each sensor has a
// Sink (the sensors.Sink it writes to) that hands every frame to each of its
// pipelines' Queues on its own, so that no pipeline holds up another, and
// releases the frame's input (file to done/, MQTT message acknowledged)
// only when every pipeline has its result.
//
// A pipeline can also be fed by another pipeline's detections (Feed, in
// feed.go): the crops of each upstream result go through a Sink of their
// own to the downstream pipeline's Queue, and each holds the upstream frame
// (Job.Hold), so its input is released only when every crop's result is at
// the broker too.
//
// A Queue holds a pipeline's lossless frames in order and the newest live
// frame (or the crops of the newest live frame). The first `hot` lossless
// frames keep their pixels; a frame beyond them whose sensor can read it
// again (sensors.Frame.Reload) waits without its pixels and is read again
// when its turn comes, so a pipeline that cannot serve (its model broken, a
// version loading under the resource policy) lets thousands of inputs wait
// in little memory while its siblings carry on. A frame that cannot be read
// again waits for room instead (back-pressure on its sensor, or on the
// upstream pipeline for a crop).
package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/sensors"
)

// ErrStopping finishes the frames a pipeline was given but will not
// process because edgeinferd is stopping or the pipeline was removed: their
// inputs are kept for another try.
var ErrStopping = fmt.Errorf("edgeinferd is stopping: %w", sensors.ErrUnfinished)

// errSkipped finishes a live frame replaced by a newer one.
var errSkipped = errors.New("skipped: a newer live frame replaced it")

// Job is one frame on its way through one pipeline.
type Job struct {
	Frame    *sensors.Frame
	Enqueued time.Time
	// Origin says which upstream detection a crop frame was cut from (a
	// pipeline fed by another); nil for a sensor's frame.
	Origin *payload.Origin
	rgb    []byte // nil while the job waits without its pixels
	track  *tracker
	live   bool // offered (a live source): its crops are offered too
}

// Pixels returns the frame's RGB, reading the input again if the job
// waited without it.
func (j *Job) Pixels() ([]byte, error) {
	if j.rgb != nil || j.Frame.Reload == nil {
		return j.rgb, nil
	}
	rgb, err := j.Frame.Reload()
	if err != nil {
		return nil, fmt.Errorf("%s: reading the input again: %w", j.Frame.Source, err)
	}
	if len(rgb) != j.Frame.Width*j.Frame.Height*3 {
		return nil, fmt.Errorf("%s: the input changed while it waited (%d bytes, was %dx%d)", j.Frame.Source, len(rgb), j.Frame.Width, j.Frame.Height)
	}
	return rgb, nil
}

// Done tells the frame's sensor this pipeline is done with it.
func (j *Job) Done(err error) {
	if j.rgb != nil {
		j.rgb = nil
		j.track.release()
	}
	j.track.done(err)
}

// Live reports whether the frame came from a live source (or is a crop of
// one): nothing waits for its result, which may be dropped.
func (j *Job) Live() bool { return j.live }

// Hold keeps the frame's input from being released until the returned
// function is called; calls after the first do nothing. A pipeline takes a
// hold for each crop of the frame it hands to a pipeline fed by it, before
// its own Done.
func (j *Job) Hold() func(error) {
	j.track.remaining.Add(1)
	var once sync.Once
	return func(err error) { once.Do(func() { j.track.done(err) }) }
}

// tracker finishes a frame once every pipeline it went to is done with it.
// It holds the frame's pixels while a job holds them; a frame that can be
// read again lets go of them when the last job holding them is done.
type tracker struct {
	frame     *sensors.Frame
	remaining atomic.Int32
	mu        sync.Mutex
	errs      []error
	rgb       []byte
	holders   int
	finished  func()
}

func newTracker(f *sensors.Frame, n int, finished func()) *tracker {
	t := &tracker{frame: f, rgb: f.RGB, finished: finished}
	if f.Reload != nil {
		f.RGB = nil // the tracker holds them, as long as a job does
	}
	t.remaining.Store(int32(n))
	return t
}

// hold returns the pixels for one more job (nil once let go of).
func (t *tracker) hold() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rgb != nil {
		t.holders++
	}
	return t.rgb
}

// letGo drops the pixels unless a job holds them. Deliver calls it once the
// frame is in every queue: a frame that can be read again and found every
// queue already full of frames with pixels went in without them, and must
// not keep them (in the tracker) while it waits.
func (t *tracker) letGo() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.holders == 0 && t.frame.Reload != nil {
		t.rgb = nil
	}
}

// release ends one job's hold on the pixels.
func (t *tracker) release() {
	t.mu.Lock()
	t.holders--
	t.mu.Unlock()
	t.letGo()
}

func (t *tracker) done(err error) {
	if err != nil {
		t.mu.Lock()
		t.errs = append(t.errs, err)
		t.mu.Unlock()
	}
	if t.remaining.Add(-1) == 0 {
		t.frame.Finish(errors.Join(t.errs...))
		t.finished()
	}
}

// Queue is one pipeline's input.
type Queue struct {
	hot int

	mu      sync.Mutex
	jobs    []*Job // lossless, in order
	warm    int    // jobs holding pixels
	live    []*Job // the newest live frame, or the crops of the newest live frame
	closed  bool
	wake    chan struct{} // signalled when a job arrives
	room    chan struct{} // closed and replaced when a job leaves
	skipped atomic.Uint64
}

// NewQueue makes a queue whose first hot lossless frames keep their pixels.
func NewQueue(hot int) *Queue {
	return &Queue{hot: max(hot, 1), wake: make(chan struct{}, 1), room: make(chan struct{})}
}

// SetHot changes how many waiting frames keep their pixels.
func (q *Queue) SetHot(hot int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.hot = max(hot, 1)
}

// push adds a lossless job. A job beyond the hot ones waits without its
// pixels if its frame can be read again; otherwise push waits for room
// until ctx ends.
func (q *Queue) push(ctx context.Context, j *Job) error {
	q.mu.Lock()
	for q.warm >= q.hot && j.Frame.Reload == nil && !q.closed {
		room := q.room
		q.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
	}
	defer q.mu.Unlock()
	if q.closed {
		return ErrStopping
	}
	if q.warm < q.hot || j.Frame.Reload == nil {
		if j.rgb = j.track.hold(); j.rgb != nil {
			q.warm++
		}
	}
	q.jobs = append(q.jobs, j)
	q.signal()
	return nil
}

// offer sets the live jobs (one frame, or the crops of one frame) and
// returns those they replaced.
func (q *Queue) offer(jobs []*Job) (old []*Job, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, false
	}
	for _, j := range jobs {
		j.rgb = j.track.hold()
	}
	old, q.live = q.live, jobs
	q.skipped.Add(uint64(len(old)))
	q.signal()
	return old, true
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Next returns the next job: lossless frames first, in order, then the live
// one. It waits until there is one or ctx ends.
func (q *Queue) Next(ctx context.Context) (*Job, error) {
	for {
		if j := q.take(); j != nil {
			return j, nil
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (q *Queue) take() *Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.jobs) > 0 {
		j := q.jobs[0]
		q.jobs[0] = nil
		q.jobs = q.jobs[1:]
		if j.rgb != nil {
			q.warm--
		}
		// The first cold job warms up now that there is room: its pixels
		// are read when it is taken, not here.
		close(q.room)
		q.room = make(chan struct{})
		return j
	}
	if len(q.live) == 0 {
		return nil
	}
	j := q.live[0]
	q.live[0] = nil
	q.live = q.live[1:]
	return j
}

// Len is the number of frames waiting.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs) + len(q.live)
}

// Skipped counts live frames (and crops) replaced by newer ones.
func (q *Queue) Skipped() uint64 { return q.skipped.Load() }

// Close refuses new frames and finishes every waiting one with err:
// ErrStopping keeps their inputs for another try, nil lets them go (the
// pipeline was removed: it owes them nothing).
func (q *Queue) Close(err error) {
	q.mu.Lock()
	jobs, live := q.jobs, q.live
	q.jobs, q.live, q.warm, q.closed = nil, nil, 0, true
	close(q.room)
	q.room = make(chan struct{})
	q.mu.Unlock()
	for _, j := range append(jobs, live...) {
		j.Done(err)
	}
}
