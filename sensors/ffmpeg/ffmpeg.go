// Package ffmpeg is the sensor kind for whatever ffmpeg can decode: RTSP and
// HTTP camera streams, V4L2 devices (/dev/video*) and video files. It runs
// ffmpeg with raw RGB output at the configured rate and size, reads frame
// after frame from its standard output and restarts it with a growing
// backoff when it fails.
//
// It also exports Command, the ffmpeg-to-RGB reader, which the file kind
// uses to play videos.
package ffmpeg

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
)

//go:embed sample.conf
var sampleConf string

func init() {
	sensors.Register(sensors.Kind{Name: "ffmpeg", New: New, SampleConfig: sampleConf})
}

// healthyRun is how long ffmpeg must have run for the restart backoff to
// start again from restart_backoff.
const healthyRun = 30 * time.Second

// config is the [sensors.<name>] table of a sensor of kind "ffmpeg".
type config struct {
	Input          string   `toml:"input"`
	FPS            float64  `toml:"fps"`
	Width          int      `toml:"width"`
	Height         int      `toml:"height"`
	FFmpeg         string   `toml:"ffmpeg"`
	InputArgs      []string `toml:"input_args"`
	Lossless       *bool    `toml:"lossless"` // nil: true for a file, false otherwise
	RestartBackoff string   `toml:"restart_backoff"`
	MaxBackoff     string   `toml:"max_backoff"`
}

type sensor struct {
	env        sensors.Env
	cmd        Command
	name       string // the input with any URL password hidden, for Source and events
	file       bool   // the input is a plain file: no URL, no /dev/video*
	lossless   bool
	backoff    time.Duration
	maxBackoff time.Duration
	seq        atomic.Uint64
}

// New builds an ffmpeg sensor from its config.
func New(env sensors.Env, decode sensors.Decoder) (sensors.Sensor, error) {
	cfg := config{FFmpeg: "ffmpeg", RestartBackoff: "1s", MaxBackoff: "30s"}
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	s := &sensor{env: env}
	switch {
	case cfg.Input == "":
		return nil, errors.New("input: required")
	case cfg.FPS <= 0:
		return nil, fmt.Errorf("fps must be > 0, got %g", cfg.FPS)
	}
	if err := checkSize(env.Limits, cfg.Width, cfg.Height); err != nil {
		return nil, err
	}
	ffmpeg, err := exec.LookPath(cfg.FFmpeg)
	if err != nil {
		return nil, fmt.Errorf("ffmpeg: %w", err)
	}
	if s.backoff, err = parseDuration("restart_backoff", cfg.RestartBackoff); err != nil {
		return nil, err
	}
	if s.maxBackoff, err = parseDuration("max_backoff", cfg.MaxBackoff); err != nil {
		return nil, err
	}
	if s.maxBackoff < s.backoff {
		return nil, fmt.Errorf("max_backoff (%s) must be >= restart_backoff (%s)", s.maxBackoff, s.backoff)
	}

	device := strings.HasPrefix(cfg.Input, "/dev/video")
	s.file = !device && !strings.Contains(cfg.Input, "://")
	s.lossless = s.file
	if cfg.Lossless != nil {
		s.lossless = *cfg.Lossless
	}
	if cfg.InputArgs == nil {
		switch {
		case device:
			cfg.InputArgs = []string{"-f", "v4l2"}
		case s.file && !s.lossless:
			cfg.InputArgs = []string{"-re"} // a live file plays at its own pace
		}
	}
	if s.file && s.lossless {
		// A file played once must be there; a live one may come and go.
		_, err := os.Stat(cfg.Input)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("input %q does not exist", cfg.Input)
		}
		if err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
	}
	s.name = redact(cfg.Input)
	s.cmd = Command{
		FFmpeg:    ffmpeg,
		InputArgs: cfg.InputArgs,
		Input:     cfg.Input,
		FPS:       cfg.FPS,
		Width:     cfg.Width,
		Height:    cfg.Height,
	}
	return s, nil
}

// checkSize checks the width and height options: set, even (ffmpeg's YUV
// formats need it) and within the image limits.
func checkSize(lim sensors.Limits, width, height int) error {
	for _, o := range []struct {
		name string
		v    int
	}{{"width", width}, {"height", height}} {
		if o.v <= 0 {
			return fmt.Errorf("%s must be > 0, got %d", o.name, o.v)
		}
		if o.v%2 != 0 {
			return fmt.Errorf("%s must be even, got %d", o.name, o.v)
		}
	}
	if lim.MaxPixels > 0 && width*height > lim.MaxPixels {
		return fmt.Errorf("width and height: %dx%d = %d pixels is over the limit of %d pixels (max_pixels)", width, height, width*height, lim.MaxPixels)
	}
	return nil
}

func parseDuration(option, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: invalid duration %q: %w", option, s, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%s must be > 0, got %s", option, s)
	}
	return d, nil
}

// redact hides the password of a URL such as rtsp://user:pass@host/, so it
// shows in no frame source, event or log.
func redact(input string) string {
	u, err := url.Parse(input)
	if err != nil || u.User == nil {
		return input
	}
	return u.Redacted()
}

// Run plays the input, restarting ffmpeg when it stops, until ctx ends. A
// file in lossless mode is played once: Run returns nil when it has ended.
func (s *sensor) Run(ctx context.Context, sink sensors.Sink) error {
	backoff := s.backoff
	for {
		started := time.Now()
		err := s.cmd.Run(ctx, func(n int, rgb []byte) error {
			return s.emit(ctx, sink, started, n, rgb)
		})
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			if s.file && s.lossless {
				return nil
			}
			err = errStreamEnded
		}
		if time.Since(started) >= healthyRun {
			backoff = s.backoff
		}
		// ffmpeg's stderr may quote the input, password included.
		reason := strings.ReplaceAll(err.Error(), s.cmd.Input, s.name)
		msg := fmt.Sprintf("%s: %s; restarting in %s", s.name, reason, backoff)
		s.env.Logger.Warn("ffmpeg restart", "input", s.name, "err", reason, "backoff", backoff)
		sink.Event("ffmpeg_restart", msg, "input", s.name, "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.maxBackoff)
	}
}

// errStreamEnded is what Run reports when ffmpeg ended a live input with
// status 0 (a camera's stream closed, a live file's end).
var errStreamEnded = errors.New("ffmpeg exited: the stream ended (exit status 0)")

// emit hands frame n of the ffmpeg run started at started to the sink. A
// lossless file's frames carry the video's own time (Command.FrameTime), a
// live input's the time they were read.
func (s *sensor) emit(ctx context.Context, sink sensors.Sink, started time.Time, n int, rgb []byte) error {
	at := time.Now()
	if s.file && s.lossless {
		at = s.cmd.FrameTime(started, n)
	}
	f := &sensors.Frame{
		Sensor: s.env.Name,
		Seq:    s.seq.Add(1),
		Time:   at,
		Source: fmt.Sprintf("%s#%d", s.name, n),
		Width:  s.cmd.Width,
		Height: s.cmd.Height,
		RGB:    rgb,
	}
	if s.lossless {
		return sink.Deliver(ctx, f)
	}
	sink.Offer(f)
	return nil
}
