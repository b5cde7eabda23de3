package telemetry

import (
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

type bus struct {
	mu     sync.Mutex
	topics []string
	bodies [][]byte
}

func (b *bus) Publish(topic string, _ bool, body []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.topics, b.bodies = append(b.topics, topic), append(b.bodies, body)
}

func TestAnEventIsStampedPublishedAndShownToOnEvent(t *testing.T) {
	b := &bus{}
	var seen []payload.Event
	p := &Publisher{Bus: b, Prefix: "edgeinfer/cam", Device: "cam", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEvent: func(e payload.Event) { seen = append(seen, e) }}
	p.Event(payload.Event{Type: payload.EventBadInput, Message: "x"})
	if len(b.topics) != 1 || b.topics[0] != "edgeinfer/cam/events" {
		t.Fatalf("published on %v", b.topics)
	}
	var got payload.Event
	if err := json.Unmarshal(b.bodies[0], &got); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].Type != payload.EventBadInput || seen[0].Device != "cam" || seen[0].Time.IsZero() ||
		!seen[0].Time.Equal(got.Time) || got.Schema != payload.Schema {
		t.Fatalf("OnEvent saw %+v; published %+v", seen, got)
	}
	p.OnEvent = nil
	p.Event(payload.Event{Type: payload.EventStarted})
	if len(b.topics) != 2 {
		t.Fatal("an event without OnEvent was not published")
	}
}
