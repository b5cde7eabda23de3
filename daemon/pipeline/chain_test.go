package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/crop"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/sensors"
)

// downstream is a pipeline fed by the test's pipeline p.
type downstream struct {
	p    *Pipeline
	feed *router.Feed
	stop func(err error) // stops it; its waiting crops finish with err
}

// feed runs a pipeline called name on model, fed by every detection of p's
// results, until stop or the end of the test. Model "n" never serves.
func (e *env) feed(t *testing.T, name, model string, hot int) *downstream {
	t.Helper()
	md := e.mgr.Model(model)
	e.pipelines[model] = append(e.pipelines[model], name)
	opts := map[string]json.RawMessage{}
	for _, n := range e.pipelines[model] {
		opts[n] = nil
	}
	md.SetPipelines(opts)
	q := router.NewQueue(hot)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := New(name, Settings{Timeout: 5 * time.Second, Retries: 2}, q, md, Env{Device: "d", Topic: "t/" + name + "/result",
		Bus: e.bus, Event: func(ev payload.Event) { e.events <- ev }, Logger: log, Publishing: &sync.WaitGroup{}})
	d := &downstream{p: p, feed: router.NewFeed(name, q, crop.Config{MinSize: 1, MaxCrops: 10}, func(ev payload.Event) { e.events <- ev })}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	var once sync.Once
	d.stop = func(err error) {
		once.Do(func() { d.feed.Close(err); cancel(); <-done; q.Close(err) })
	}
	t.Cleanup(func() { d.stop(router.ErrStopping) })
	e.feeds = append(e.feeds, d.feed)
	e.p.SetFeeds(e.feeds)
	return d
}

// image hands a 40x20 frame to p, lossless (reloadable or not) or live,
// and returns how it finished.
func (e *env) image(t *testing.T, seq uint64, reloadable, live bool) chan error {
	t.Helper()
	const w, h = 40, 20
	px := func() []byte {
		rgb := make([]byte, w*h*3)
		for i := range rgb {
			rgb[i] = byte(i / 3 % w) // R = G = B = x
		}
		return rgb
	}
	f := &sensors.Frame{Sensor: "cam", Seq: seq, Source: fmt.Sprintf("frame %d", seq), Width: w, Height: h, RGB: px()}
	if reloadable {
		f.Reload = func() ([]byte, error) { return px(), nil }
	}
	done := make(chan error, 1)
	f.OnDone(func(err error) { done <- err })
	if live {
		e.sink.Offer(f)
	} else if err := e.sink.Deliver(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	return done
}

// resultsOf returns the results published so far by pipeline.
func (e *env) resultsOf(pipeline string) []payload.Result {
	e.bus.mu.Lock()
	defer e.bus.mu.Unlock()
	var rs []payload.Result
	for _, r := range e.bus.results {
		if r.Pipeline == pipeline {
			rs = append(rs, r)
		}
	}
	return rs
}

// waitUntil polls cond for 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func pending(done chan error) bool {
	select {
	case err := <-done:
		done <- err
		return false
	default:
		return true
	}
}

// Each detection of the upstream result becomes a frame of the pipeline
// fed by it, whose result says where it came from; the upstream input is
// released only when the broker has acknowledged the upstream result and
// every crop's result.
func TestTheUpstreamInputIsReleasedOnlyWhenEveryCropsResultIsAtTheBroker(t *testing.T) {
	e := start(t, 5*time.Second)
	e.feed(t, "c", "m", 4)
	e.bus.mu.Lock()
	e.bus.hold = true
	e.bus.mu.Unlock()
	done := e.image(t, 201, false, false)
	waitUntil(t, "three results published", func() bool { return len(e.resultsOf("p"))+len(e.resultsOf("c")) == 3 })
	e.bus.mu.Lock()
	acks, results := e.bus.acks, e.bus.results
	e.bus.mu.Unlock()
	if results[0].Pipeline != "p" {
		t.Fatalf("the crops' results came before the upstream's: %+v", results)
	}
	for i, ack := range acks {
		if !pending(done) {
			t.Fatalf("the input was released with %d of 3 results acknowledged", i)
		}
		ack(nil)
	}
	if err := finished(t, done); err != nil {
		t.Fatal(err)
	}
	crops := e.resultsOf("c")
	want := []payload.Origin{
		{Pipeline: "p", Sensor: "cam", Seq: 201, Source: "frame 201", Detection: 0, Box: payload.Box{X1: 1, X2: 11, Y2: 10},
			Crop: payload.Rect{X1: 1, X2: 11, Y2: 10}, Label: "a", Score: 0.9},
		{Pipeline: "p", Sensor: "cam", Seq: 201, Source: "frame 201", Detection: 1, Box: payload.Box{X1: 20, Y1: 5, X2: 30, Y2: 15},
			Crop: payload.Rect{X1: 20, Y1: 5, X2: 30, Y2: 15}, Label: "b", Class: 1, Score: 0.8},
	}
	for i, r := range crops {
		if r.Origin == nil || *r.Origin != want[i] || r.Width != 10 || r.Height != 10 || r.Seq != 201 || r.Sensor != "cam" ||
			r.Source != fmt.Sprintf("frame 201#p[%d]", i) {
			t.Fatalf("crop result %d: %+v origin %+v\nwant origin %+v", i, r, r.Origin, want[i])
		}
	}
	if r := e.resultsOf("p")[0]; r.Origin != nil {
		t.Fatalf("the sensor's frame has an origin: %+v", r.Origin)
	}
}

// A pipeline fed by p that cannot serve holds up neither p's next frames
// nor a sibling fed by p: crops of lossless inputs that can be read again
// wait for it without their pixels; crops of live frames replace those it
// has not taken.
func TestADownstreamPipelineThatCannotServeHoldsUpNeitherItsUpstreamNorItsSibling(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run(map[bool]string{false: "lossless", true: "live"}[live], func(t *testing.T) {
			e := start(t, 5*time.Second)
			e.mgr.Model("n").SetVersions(nil)
			stuck := e.feed(t, "stuck", "n", 2)
			e.feed(t, "c", "m", 2)
			const n = 20
			var dones []chan error
			for i := range n {
				dones = append(dones, e.image(t, uint64(201+i), true, live))
				if live { // a live source offers its next frame once p and c are done with this one
					waitUntil(t, "p's result and c's", func() bool { return len(e.resultsOf("p")) == i+1 && len(e.resultsOf("c")) == 2*(i+1) })
				}
			}
			waitUntil(t, "p's results and its sibling's", func() bool { return len(e.resultsOf("p")) == n && len(e.resultsOf("c")) == 2*n })
			for i, d := range dones {
				if !live && !pending(d) {
					t.Fatalf("input %d released with its crops waiting for the stuck pipeline", i)
				}
			}
			queued := stuck.p.Queue().Len()
			if !live && queued < 2*n-1 || live && queued > 2 {
				t.Fatalf("the stuck pipeline holds %d crops (skipped %d)", queued, stuck.p.Queue().Skipped())
			}
			if live && stuck.p.Queue().Skipped() < 2*n-3 {
				t.Fatalf("live: %d crops skipped, want all but the newest frame's", stuck.p.Queue().Skipped())
			}
			if st := stuck.feed.Stats(); st.Made != 2*n {
				t.Fatalf("feed stats %+v", st)
			}
		})
	}
}

// edgeinferd stopping before the crops are done keeps the upstream input
// for another try, although its own result is at the broker.
func TestStoppingBeforeTheCropsAreDoneKeepsTheInput(t *testing.T) {
	e := start(t, 5*time.Second)
	e.mgr.Model("n").SetVersions(nil)
	stuck := e.feed(t, "stuck", "n", 4)
	done := e.image(t, 201, true, false)
	waitUntil(t, "p's result", func() bool { return len(e.resultsOf("p")) == 1 })
	waitUntil(t, "the crops queued", func() bool { return stuck.p.Queue().Len() >= 1 })
	if !pending(done) {
		t.Fatal("released before its crops were done")
	}
	stuck.stop(router.ErrStopping)
	if err := finished(t, done); !errors.Is(err, sensors.ErrUnfinished) {
		t.Fatalf("finished with %v, want ErrUnfinished", err)
	}
}

// A crop the downstream plugin refuses is a bad_input event naming the
// upstream frame and detection; the upstream input then goes where a
// failed input goes, and the next crops are served.
func TestACropThePluginRefusesIsABadInputNamingTheUpstreamFrameAndDetection(t *testing.T) {
	e := start(t, 5*time.Second)
	e.feed(t, "refuses", "m", 4)
	done := e.image(t, 201, false, false)
	if err := finished(t, done); !errors.Is(err, sdk.ErrBadFrame) && !strings.Contains(fmt.Sprint(err), "bad frame") {
		t.Fatalf("finished with %v, want the crops' bad frame", err)
	}
	var bad []payload.Event
	for len(e.events) > 0 {
		if ev := <-e.events; ev.Type == payload.EventBadInput {
			bad = append(bad, ev)
		}
	}
	if len(bad) != 2 || bad[0].Pipeline != "refuses" || bad[0].Source != "frame 201#p[0]" || bad[1].Source != "frame 201#p[1]" {
		t.Fatalf("bad_input events %+v", bad)
	}
	o, ok := bad[1].Attrs["origin"].(*payload.Origin)
	if !ok || o.Pipeline != "p" || o.Seq != 201 || o.Detection != 1 || o.Label != "b" {
		t.Fatalf("origin %+v", bad[1].Attrs["origin"])
	}
}
