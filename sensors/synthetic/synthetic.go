// Package synthetic is the sensor kind that makes its own frames: a moving
// colour gradient or random noise, at a fixed rate. It needs no camera, so
// it serves demos, benchmarks and tests of a whole pipeline. It is a live
// source: frames are offered, and a busy pipeline skips them.
package synthetic

import (
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
)

//go:embed sample.conf
var sampleConf string

func init() {
	sensors.Register(sensors.Kind{Name: "synthetic", New: New, SampleConfig: sampleConf})
}

// config is the [sensors.<name>] table of a sensor of kind "synthetic".
type config struct {
	FPS     float64 `toml:"fps"`
	Width   int     `toml:"width"`
	Height  int     `toml:"height"`
	Pattern string  `toml:"pattern"`
	Frames  int     `toml:"frames"`
}

type sensor struct {
	env    sensors.Env
	cfg    config
	period time.Duration
	seq    atomic.Uint64
}

// New builds a synthetic sensor from its config.
func New(env sensors.Env, decode sensors.Decoder) (sensors.Sensor, error) {
	cfg := config{FPS: 5, Width: 640, Height: 480, Pattern: "gradient"}
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	lim := env.Limits
	switch {
	case cfg.FPS <= 0:
		return nil, fmt.Errorf("fps must be > 0, got %g", cfg.FPS)
	case cfg.Width < max(lim.MinSide, 1):
		return nil, fmt.Errorf("width must be >= %d, got %d", max(lim.MinSide, 1), cfg.Width)
	case cfg.Height < max(lim.MinSide, 1):
		return nil, fmt.Errorf("height must be >= %d, got %d", max(lim.MinSide, 1), cfg.Height)
	case lim.MaxPixels > 0 && cfg.Width*cfg.Height > lim.MaxPixels:
		return nil, fmt.Errorf("width and height: %dx%d = %d pixels is over the limit of %d pixels (max_pixels)", cfg.Width, cfg.Height, cfg.Width*cfg.Height, lim.MaxPixels)
	case cfg.Pattern != "gradient" && cfg.Pattern != "noise":
		return nil, fmt.Errorf(`pattern must be "gradient" or "noise", got %q`, cfg.Pattern)
	case cfg.Frames < 0:
		return nil, fmt.Errorf("frames must be >= 0 (0 = forever), got %d", cfg.Frames)
	}
	period := time.Duration(float64(time.Second) / cfg.FPS)
	return &sensor{env: env, cfg: cfg, period: period}, nil
}

// Run offers a frame every 1/fps seconds, the first at once, until ctx ends
// or the configured number of frames has been made.
func (s *sensor) Run(ctx context.Context, sink sensors.Sink) error {
	tick := time.NewTicker(s.period)
	defer tick.Stop()
	for n := 1; ; n++ {
		sink.Offer(s.frame())
		if n == s.cfg.Frames {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// frame makes the next frame in a new buffer: the pipelines may still hold
// the previous one.
func (s *sensor) frame() *sensors.Frame {
	seq := s.seq.Add(1)
	w, h := s.cfg.Width, s.cfg.Height
	rgb := make([]byte, w*h*3)
	if s.cfg.Pattern == "noise" {
		rand.NewChaCha8(seed(seq)).Read(rgb)
	} else {
		gradient(rgb, w, h, int(seq))
	}
	return &sensors.Frame{
		Sensor: s.env.Name,
		Seq:    seq,
		Time:   time.Now(),
		Source: fmt.Sprintf("synthetic#%d", seq),
		Width:  w,
		Height: h,
		RGB:    rgb,
	}
}

// gradient draws red growing to the right and green growing downwards, both
// shifted by 4 pixels a frame (wrapping around) so the picture moves, and
// blue counting the frames.
func gradient(rgb []byte, w, h, n int) {
	shift := 4 * n
	for y := range h {
		g := byte((y + shift) * 256 / h)
		row := rgb[y*w*3 : (y+1)*w*3]
		for x := range w {
			row[3*x] = byte((x + shift) * 256 / w)
			row[3*x+1] = g
			row[3*x+2] = byte(n)
		}
	}
}

// seed derives a ChaCha8 seed from the frame number, so each frame's noise
// is different and the same on every run.
func seed(n uint64) (s [32]byte) {
	for i := range 8 {
		s[i] = byte(n >> (8 * i))
	}
	return s
}
