// Package mqtt is the sensor kind that takes images (JPEG, PNG, GIF, BMP,
// TIFF, WebP) published
// on an MQTT topic, through the daemon's own MQTT connection. Every message
// is one image. Frames are delivered losslessly: the handler waits until the
// pipelines have taken the frame, which slows the MQTT client down rather
// than dropping images. With a share group, the sensor takes part in an MQTT
// shared subscription ($share/<group>/<topic>): the broker gives each
// message to one of the daemons in the group, which is how a fleet spreads
// one input topic across its devices.
package mqtt

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
)

//go:embed sample.conf
var sampleConf string

func init() {
	sensors.Register(sensors.Kind{Name: "mqtt", New: New, SampleConfig: sampleConf})
}

// config is the [sensors.<name>] table of a sensor of kind "mqtt".
type config struct {
	Topic    string `toml:"topic"`
	Share    string `toml:"share"`
	MaxBytes int    `toml:"max_bytes"`
}

type sensor struct {
	env    sensors.Env
	topic  string         // the filter subscribed to, "$share/<group>/..." when shared
	limits sensors.Limits // env.Limits with MaxBytes from max_bytes
	seq    atomic.Uint64
}

// New builds an mqtt sensor from its config.
func New(env sensors.Env, decode sensors.Decoder) (sensors.Sensor, error) {
	cfg := config{MaxBytes: env.Limits.MaxBytes}
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	own := "in/" + env.Name // this device's own input topic
	if env.Prefix != "" {
		own = env.Prefix + "/" + own
	}
	if cfg.Share != "" {
		if err := checkGroup(cfg.Share); err != nil {
			return nil, fmt.Errorf("share %q: %w", cfg.Share, err)
		}
		if cfg.Topic == "" {
			return nil, fmt.Errorf("share %q needs a topic that every daemon of the group subscribes to: the default %q is this device's own", cfg.Share, own)
		}
	}
	if cfg.Topic == "" {
		cfg.Topic = own
	}
	topic, err := subscription(cfg.Topic, cfg.Share)
	if err != nil {
		return nil, fmt.Errorf("topic %q: %w", cfg.Topic, err)
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("max_bytes must be >= 0 (0 = no limit), got %d", cfg.MaxBytes)
	}
	limits := env.Limits
	limits.MaxBytes = cfg.MaxBytes
	return &sensor{env: env, topic: topic, limits: limits}, nil
}

// subscription returns the filter to subscribe to for topic, shared in
// group when one is given. A topic may also be written as a shared
// subscription itself, "$share/<group>/<filter>".
func subscription(topic, group string) (string, error) {
	if rest, ok := strings.CutPrefix(topic, "$share/"); ok {
		if group != "" {
			return "", errors.New(`is a shared subscription already: set share or a "$share/" topic, not both`)
		}
		g, filter, ok := strings.Cut(rest, "/")
		if !ok || filter == "" {
			return "", errors.New(`a shared subscription is "$share/<group>/<filter>"`)
		}
		if err := checkGroup(g); err != nil {
			return "", fmt.Errorf("group %q: %w", g, err)
		}
		if err := checkTopic(filter); err != nil {
			return "", err
		}
		return topic, nil
	}
	if err := checkTopic(topic); err != nil {
		return "", err
	}
	if group == "" {
		return topic, nil
	}
	return "$share/" + group + "/" + topic, nil
}

// checkGroup checks the name of a shared subscription's group.
func checkGroup(group string) error {
	if group == "" {
		return errors.New("is empty")
	}
	if strings.ContainsAny(group, "/+#") {
		return errors.New(`must not hold "/", "+" or "#"`)
	}
	return nil
}

// checkTopic checks an MQTT topic filter: "+" must fill a whole level and
// "#" must be the whole last level.
func checkTopic(topic string) error {
	levels := strings.Split(topic, "/")
	for i, level := range levels {
		switch {
		case strings.Contains(level, "#") && (level != "#" || i != len(levels)-1):
			return fmt.Errorf(`"#" must be the whole last level`)
		case strings.Contains(level, "+") && level != "+":
			return fmt.Errorf(`"+" must be a whole level`)
		}
	}
	return nil
}

// Run subscribes to the topic and delivers each image published there until
// ctx ends.
func (s *sensor) Run(ctx context.Context, sink sensors.Sink) error {
	if s.env.Subscribe == nil {
		return errors.New("no MQTT connection to subscribe with (Env.Subscribe is nil)")
	}
	err := s.env.Subscribe(s.topic, func(topic string, payload []byte, ack func()) {
		s.handle(ctx, sink, topic, payload, ack)
	})
	if err != nil {
		return fmt.Errorf("subscribe to %q: %w", s.topic, err)
	}
	s.env.Logger.Info("subscribed", "topic", s.topic)
	<-ctx.Done()
	return nil
}

// handle turns one message into a frame. It runs on the MQTT client's
// goroutine and blocks in Deliver until the pipelines have taken the frame.
// The message is acknowledged once its frame is finished (or refused as bad
// input); one left unfinished is not, so the broker delivers it again.
func (s *sensor) handle(ctx context.Context, sink sensors.Sink, topic string, payload []byte, ack func()) {
	if ctx.Err() != nil {
		return // Run has returned: no more frames
	}
	if limit := s.limits.MaxBytes; limit > 0 && len(payload) > limit {
		sink.BadInput(topic, fmt.Errorf("payload of %d bytes is over max_bytes %d", len(payload), limit))
		ack()
		return
	}
	w, h, rgb, err := sensors.DecodeImage(payload, s.limits)
	if err != nil {
		sink.BadInput(topic, err)
		ack()
		return
	}
	seq := s.seq.Add(1)
	f := &sensors.Frame{
		Sensor: s.env.Name,
		Seq:    seq,
		Time:   time.Now(),
		Source: fmt.Sprintf("%s#%d", topic, seq),
		Width:  w,
		Height: h,
		RGB:    rgb,
		// The payload (compressed) is smaller than its pixels.
		Reload: func() ([]byte, error) {
			_, _, rgb, err := sensors.DecodeImage(payload, s.limits)
			return rgb, err
		},
	}
	f.OnDone(func(err error) {
		if !errors.Is(err, sensors.ErrUnfinished) {
			ack()
		}
	})
	if err := sink.Deliver(ctx, f); err != nil {
		s.env.Logger.Debug("frame not delivered", "source", f.Source, "err", err)
	}
}
