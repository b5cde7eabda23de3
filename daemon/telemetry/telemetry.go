// Package telemetry publishes what edgeinferd says about itself: events,
// the retained model state and stats, command replies and the online
// status. Every payload is a type of daemon/payload; publishing never
// blocks the caller.
package telemetry

import (
	"encoding/json"
	"log/slog"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// Bus is the part of the MQTT connection telemetry uses.
type Bus interface {
	Publish(topic string, retain bool, payload []byte)
}

// Publisher publishes under a topic prefix.
type Publisher struct {
	Bus    Bus
	Prefix string
	Device string
	Logger *slog.Logger
	// OnEvent, when set, sees every event as it is published (the
	// metrics count them by type); it must not block.
	OnEvent func(payload.Event)
}

// Topic joins the prefix and parts with '/'.
func (p *Publisher) Topic(parts ...string) string {
	t := p.Prefix
	for _, s := range parts {
		t += "/" + s
	}
	return t
}

// Event publishes e on <prefix>/events, stamped with the time and device.
func (p *Publisher) Event(e payload.Event) {
	e.Schema, e.Time, e.Device = payload.Schema, time.Now().UTC(), p.Device
	if p.OnEvent != nil {
		p.OnEvent(e)
	}
	p.json(p.Topic("events"), false, e)
}

// EventMessage returns the topic and payload Event would publish for e
// (stamped, and seen by OnEvent) without publishing it, for a caller that
// publishes it its own way (the outbox's overflow report).
func (p *Publisher) EventMessage(e payload.Event) (string, []byte, error) {
	e.Schema, e.Time, e.Device = payload.Schema, time.Now().UTC(), p.Device
	if p.OnEvent != nil {
		p.OnEvent(e)
	}
	b, err := json.Marshal(e)
	return p.Topic("events"), b, err
}

// Model publishes a model's state, retained, on <prefix>/models/<model>.
func (p *Publisher) Model(st payload.ModelState) {
	p.json(p.Topic("models", st.Model), true, st)
}

// Stats publishes the stats, retained, on <prefix>/stats.
func (p *Publisher) Stats(st payload.Stats) {
	p.json(p.Topic("stats"), true, st)
}

// Reply answers a command on <prefix>/cmd/reply.
func (p *Publisher) Reply(r payload.Reply) {
	r.Schema, r.Time = payload.Schema, time.Now().UTC()
	p.json(p.Topic("cmd", "reply"), false, r)
}

// Status publishes online/offline, retained, on <prefix>/status.
func (p *Publisher) Status(s string) {
	p.Bus.Publish(p.Topic("status"), true, []byte(s))
}

func (p *Publisher) json(topic string, retain bool, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		p.Logger.Error("cannot encode payload", "topic", topic, "err", err)
		return
	}
	p.Bus.Publish(topic, retain, b)
}
