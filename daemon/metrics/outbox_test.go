package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/outbox"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// fakeOutbox is an OutboxSource whose figures a test sets.
type fakeOutbox struct {
	records int
	bytes   int64
	max     int64
	dropped map[string]uint64
}

func (f *fakeOutbox) Depth() (int, int64) { return f.records, f.bytes }
func (f *fakeOutbox) MaxBytes() int64     { return f.max }
func (f *fakeOutbox) Dropped() outbox.Overflow {
	o := outbox.Overflow{Topics: f.dropped}
	for _, n := range f.dropped {
		o.Records += n
	}
	return o
}

func TestTheOutboxMetricsAreReadFromTheOutboxAtTheScrape(t *testing.T) {
	m := New(func() Snapshot { return Snapshot{} }, quiet)
	box := &fakeOutbox{max: 64 << 20}
	if err := m.Register(NewOutboxCollector(box, "home/")); err != nil {
		t.Fatal(err)
	}
	got := scrape(t, m.Handler())
	for key, want := range map[string]float64{
		`edgeinfer_outbox_records`:                      0,
		`edgeinfer_outbox_bytes`:                        0,
		`edgeinfer_outbox_max_bytes`:                    64 << 20,
		`edgeinfer_outbox_dropped_total{kind="result"}`: 0,
		`edgeinfer_outbox_dropped_total{kind="event"}`:  0,
		`edgeinfer_outbox_dropped_total{kind="reply"}`:  0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	// An outage: records pile up, some are dropped; each scrape reads the
	// outbox anew.
	box.records, box.bytes = 612, 431_000
	box.dropped = map[string]uint64{"home/porch/result": 40, "home/porch/snapshot_crop": 2, "home/yard/result": 3,
		"home/events": 5, "home/cmd/reply": 1}
	got = scrape(t, m.Handler())
	for key, want := range map[string]float64{
		`edgeinfer_outbox_records`:                      612,
		`edgeinfer_outbox_bytes`:                        431_000,
		`edgeinfer_outbox_dropped_total{kind="result"}`: 45,
		`edgeinfer_outbox_dropped_total{kind="event"}`:  5,
		`edgeinfer_outbox_dropped_total{kind="reply"}`:  1,
	} {
		if v := got[key]; v != want {
			t.Errorf("during the outage %s = %v, want %v", key, v, want)
		}
	}
	box.records, box.bytes = 0, 0
	if got = scrape(t, m.Handler()); got[`edgeinfer_outbox_records`] != 0 || got[`edgeinfer_outbox_bytes`] != 0 {
		t.Errorf("after the drain: %v records, %v bytes", got[`edgeinfer_outbox_records`], got[`edgeinfer_outbox_bytes`])
	}
	if err := m.Register(NewOutboxCollector(box, "home")); err == nil {
		t.Error("a second outbox collector was taken")
	}
}

func TestTheOutboxMetricsOfARealOutboxFollowItsDepthAndDrops(t *testing.T) {
	box, err := outbox.Open(outbox.Options{Dir: t.TempDir(), MaxBytes: outbox.MinBytes, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	m := New(func() Snapshot { return Snapshot{} }, quiet)
	if err := m.Register(NewOutboxCollector(box, "p")); err != nil {
		t.Fatal(err)
	}
	// No delivery (no Run): everything put waits, until the bound.
	body := []byte(strings.Repeat("x", 1000))
	kept, dropped := 0, map[string]int{}
	for i := range 100 {
		topic := "p/live/result"
		if i%10 == 9 {
			topic = "p/events"
		}
		switch err := box.Put(context.Background(), outbox.Message{Topic: topic, Payload: body}, false, nil); {
		case err == nil:
			kept++
		case errors.Is(err, outbox.ErrFull):
			dropped[topic]++
		default:
			t.Fatal(err)
		}
	}
	records, bytes := box.Depth()
	got := scrape(t, m.Handler())
	if kept == 0 || dropped["p/live/result"] == 0 || dropped["p/events"] == 0 {
		t.Fatalf("kept %d, dropped %v: the bound was not reached", kept, dropped)
	}
	for key, want := range map[string]float64{
		`edgeinfer_outbox_records`:                      float64(kept),
		`edgeinfer_outbox_bytes`:                        float64(bytes),
		`edgeinfer_outbox_max_bytes`:                    outbox.MinBytes,
		`edgeinfer_outbox_dropped_total{kind="result"}`: float64(dropped["p/live/result"]),
		`edgeinfer_outbox_dropped_total{kind="event"}`:  float64(dropped["p/events"]),
		`edgeinfer_outbox_dropped_total{kind="reply"}`:  0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if records != kept || bytes < int64(kept*1000) || bytes > outbox.MinBytes {
		t.Errorf("Depth %d records, %d bytes for %d records of 1000 bytes under a bound of %d", records, bytes, kept, outbox.MinBytes)
	}
}

func TestTheDaemonsOutboxMetricsAreOnlyThereWithAnOutbox(t *testing.T) {
	m := New(func() Snapshot { return Snapshot{} }, quiet)
	m.ObserveEvent(payload.Event{Type: payload.EventStarted})
	for key := range scrape(t, m.Handler()) {
		if strings.HasPrefix(key, "edgeinfer_outbox_") {
			t.Errorf("%s without an outbox", key)
		}
	}
}
