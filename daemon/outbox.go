package daemon

import (
	"fmt"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/outbox"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// openOutbox opens the outbox of [mqtt] outbox_dir (daemon/outbox), or
// returns nil when there is none ([mqtt] outbox_max_bytes = 0, or no
// outbox_dir and no systemd state directory). The bus takes it over: it
// delivers it and closes it.
func (d *Daemon) openOutbox(cfg *config.Config) (*outbox.Outbox, error) {
	m := cfg.MQTT
	if !m.Outbox() {
		d.log.Info("no outbox: while the broker cannot be reached, results wait in memory and lossless inputs are not let go ([mqtt] outbox_dir sets one)")
		return nil, nil
	}
	box, err := outbox.Open(outbox.Options{Dir: m.OutboxDir, MaxBytes: m.OutboxMaxBytes,
		Report: d.outboxOverflow, Logger: d.log.With("component", "outbox")})
	if err != nil {
		return nil, cfg.KeyError("mqtt.outbox_dir", err)
	}
	return box, nil
}

// outboxOverflow is the event that reports what the outbox dropped for
// want of room; it goes through the outbox itself, in the place of the
// stream where those records are missing.
func (d *Daemon) outboxOverflow(o outbox.Overflow) outbox.Message {
	ev := payload.Event{Type: payload.EventOutboxOverflow,
		Message: fmt.Sprintf("the outbox was full: %d live results and events (%d bytes) dropped between %s and %s; lossless inputs waited",
			o.Records, o.Bytes, o.First.UTC().Format(time.RFC3339), o.Last.UTC().Format(time.RFC3339)),
		Attrs: map[string]any{"dropped": o.Records, "dropped_bytes": o.Bytes, "topics": o.Topics,
			"first_dropped": o.First.UTC(), "last_dropped": o.Last.UTC(), "total_dropped": o.Total}}
	topic, b, err := d.tel.EventMessage(ev)
	if err != nil {
		d.log.Error("cannot encode the outbox_overflow event", "err", err)
	}
	return outbox.Message{Topic: topic, Payload: b}
}
