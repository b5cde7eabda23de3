package router

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/edgeinfer/edgeinfer/daemon/crop"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/sensors"
)

// Feed is the input of a pipeline fed by another ([pipelines.<name>] from):
// it cuts the crops its [pipelines.<name>.crop] table chooses out of each
// upstream result (daemon/crop) and hands them to the pipeline's queue
// through a Sink of its own, so that crops wait in the queue, are read
// again, skipped and finished as a sensor's frames are.
//
// Each crop holds its upstream frame (Job.Hold): the upstream input is
// released only once its own result and every crop's result are at the
// broker, and kept (sensors.ErrUnfinished) when edgeinferd stops first.
// Crops of a lossless frame are delivered in order; a crop of a frame that
// can be read again can itself be read again (the upstream input is read
// and cut once more), so beyond the pipeline's queue it waits without its
// pixels and never holds up the upstream pipeline. Only crops of a lossless
// frame that cannot be read again (a video file) wait for room in the
// queue, back-pressuring the upstream pipeline as its sensor would be:
// the other way, keeping every such crop in memory until its pipeline takes
// it, has no bound.
// Crops of a live frame are offered: a pipeline still busy with the crops
// of an older frame drops those it has not taken for the new ones (its
// skipped count), and the upstream never waits.
type Feed struct {
	pipeline string
	sink     *Sink
	event    func(payload.Event)

	mu      sync.Mutex
	cfg     crop.Config
	closed  bool
	refusal error // what a crop the closed feed refuses finishes with

	made, tooSmall, overMax, bad atomic.Uint64
}

// NewFeed makes the input of the pipeline called pipeline, whose queue is
// q; event publishes a bad upstream box.
func NewFeed(pipeline string, q *Queue, cfg crop.Config, event func(payload.Event)) *Feed {
	s := NewSink(pipeline, nil) // no sensor writes to it: nothing to report
	s.SetQueues([]*Queue{q})
	return &Feed{pipeline: pipeline, sink: s, event: event, cfg: cfg}
}

// SetConfig changes the crops chosen from the next upstream result on.
func (fd *Feed) SetConfig(cfg crop.Config) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.cfg = cfg
}

// Close refuses crops from now on; the frames whose crops it refuses
// finish with err, as Queue.Close's: ErrStopping keeps the upstream input
// for another try (shutdown), nil lets it go (the pipeline was removed or is
// no longer fed by another: it owes the upstream frames nothing). It does
// not wait for a crop being handed over: one waiting for room in the queue
// is let go by the upstream's stop or by the queue's Close.
func (fd *Feed) Close(err error) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.closed, fd.refusal = true, err
}

// refused is what a crop the feed did not take finishes with.
func (fd *Feed) refused(ctx context.Context) error {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if ctx.Err() != nil || !fd.closed {
		return ErrStopping
	}
	return fd.refusal
}

// Stats counts since the feed was made.
func (fd *Feed) Stats() payload.CropStats {
	return payload.CropStats{Made: fd.made.Load(), TooSmall: fd.tooSmall.Load(), OverMax: fd.overMax.Load(), Bad: fd.bad.Load()}
}

// Send hands the crops of upstream job j's result (output, made on the
// frame's pixels rgb by the pipeline called upstream) to the pipeline. It
// returns once every crop is in the queue, or ctx ended (the crops not
// delivered finish with ErrStopping). Call it before j's Done.
func (fd *Feed) Send(ctx context.Context, upstream string, j *Job, rgb []byte, output json.RawMessage) {
	fd.mu.Lock()
	cfg, closed, refusal := fd.cfg, fd.closed, fd.refusal
	fd.mu.Unlock()
	if closed {
		j.Hold()(refusal)
		return
	}
	up := j.Frame
	ch, err := crop.Choose(cfg, output, up.Width, up.Height)
	if err != nil {
		ch.Bad = []error{err}
	}
	fd.tooSmall.Add(uint64(ch.TooSmall))
	fd.overMax.Add(uint64(ch.OverMax))
	fd.bad.Add(uint64(len(ch.Bad)))
	for _, err := range ch.Bad {
		fd.event(payload.Event{Type: payload.EventBadInput, Pipeline: fd.pipeline, Sensor: up.Sensor, Source: up.Source,
			Message: fmt.Sprintf("%s: no crop from pipeline %s's result: %v", up.Source, upstream, err), Attrs: map[string]any{"seq": up.Seq}})
	}
	if len(ch.Crops) == 0 {
		return
	}
	frames := make([]*sensors.Frame, len(ch.Crops))
	origins := make([]*payload.Origin, len(ch.Crops))
	releases := make([]func(error), len(ch.Crops))
	for i, c := range ch.Crops {
		frames[i], origins[i] = cropFrame(upstream, j, rgb, c)
		releases[i] = j.Hold()
		frames[i].OnDone(releases[i])
	}
	fd.made.Add(uint64(len(frames)))
	if j.live {
		if !fd.sink.offer(frames, origins) {
			for _, release := range releases {
				release(fd.refused(ctx))
			}
		}
		return
	}
	for i, f := range frames {
		if err := fd.sink.deliver(ctx, f, origins[i]); err != nil {
			err = fd.refused(ctx)
			for _, release := range releases[i:] {
				release(err) // does nothing to a crop deliver finished
			}
			return
		}
	}
}

// cropFrame is the frame of crop c of upstream job j, and its origin. It
// is the upstream frame's sensor, seq and capture time, and its source with
// "#<upstream pipeline>[<detection>]" added.
func cropFrame(upstream string, j *Job, rgb []byte, c crop.Crop) (*sensors.Frame, *payload.Origin) {
	up, r := j.Frame, c.Rect
	f := &sensors.Frame{Sensor: up.Sensor, Seq: up.Seq, Time: up.Time, Source: fmt.Sprintf("%s#%s[%d]", up.Source, upstream, c.Index),
		Width: r.Dx(), Height: r.Dy(), RGB: crop.Cut(rgb, up.Width, r)}
	if up.Reload != nil {
		f.Reload = func() ([]byte, error) {
			whole, err := up.Reload()
			if err != nil {
				return nil, err
			}
			if len(whole) != up.Width*up.Height*3 {
				return nil, fmt.Errorf("%s: the input changed while its crop waited (%d bytes, was %dx%d)", up.Source, len(whole), up.Width, up.Height)
			}
			return crop.Cut(whole, up.Width, r), nil
		}
	}
	d := c.Det
	return f, &payload.Origin{Pipeline: upstream, Sensor: up.Sensor, Seq: up.Seq, Source: up.Source, Detection: c.Index,
		Box: d.Box, Crop: r, Label: d.Label, Class: d.Class, Score: d.Score, TrackID: d.TrackID, Origin: j.Origin}
}
