// Package mqtt is the sensor kind that takes images (JPEG, PNG, GIF, BMP,
// TIFF, WebP) published
// on an MQTT topic, through the daemon's own MQTT connection. Every message
// is one image. Frames are delivered losslessly: the handler waits until the
// pipelines have taken the frame, which slows the MQTT client down rather
// than dropping images.
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
	MaxBytes int    `toml:"max_bytes"`
}

type sensor struct {
	env    sensors.Env
	topic  string
	limits sensors.Limits // env.Limits with MaxBytes from max_bytes
	seq    atomic.Uint64
}

// New builds an mqtt sensor from its config.
func New(env sensors.Env, decode sensors.Decoder) (sensors.Sensor, error) {
	cfg := config{MaxBytes: env.Limits.MaxBytes}
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Topic == "" {
		cfg.Topic = "in/" + env.Name
		if env.Prefix != "" {
			cfg.Topic = env.Prefix + "/" + cfg.Topic
		}
	}
	if err := checkTopic(cfg.Topic); err != nil {
		return nil, fmt.Errorf("topic %q: %w", cfg.Topic, err)
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("max_bytes must be >= 0 (0 = no limit), got %d", cfg.MaxBytes)
	}
	limits := env.Limits
	limits.MaxBytes = cfg.MaxBytes
	return &sensor{env: env, topic: cfg.Topic, limits: limits}, nil
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
