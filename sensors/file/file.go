// Package file is the sensor kind that plays one image or one video file,
// once or in a loop. An image (.jpg, .jpeg, .png, .gif, .bmp, .tif, .tiff,
// .webp) is decoded once and
// delivered again every interval when looping; any other file is a video,
// decoded by ffmpeg through the ffmpeg kind's Command. Frames are delivered
// losslessly: nothing is skipped, the file plays as fast as the pipelines go.
package file

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/sensors/ffmpeg"
)

//go:embed sample.conf
var sampleConf string

func init() {
	sensors.Register(sensors.Kind{Name: "file", New: New, SampleConfig: sampleConf})
}

// config is the [sensors.<name>] table of a sensor of kind "file".
type config struct {
	Path     string  `toml:"path"`
	Loop     bool    `toml:"loop"`
	Interval string  `toml:"interval"`
	FPS      float64 `toml:"fps"`
	Width    int     `toml:"width"`
	Height   int     `toml:"height"`
	FFmpeg   string  `toml:"ffmpeg"`
}

type sensor struct {
	env      sensors.Env
	path     string
	loop     bool
	interval time.Duration
	video    *ffmpeg.Command // nil for an image
	seq      atomic.Uint64
}

// New builds a file sensor from its config.
func New(env sensors.Env, decode sensors.Decoder) (sensors.Sensor, error) {
	cfg := config{Interval: "1s", FFmpeg: "ffmpeg"}
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Path == "" {
		return nil, errors.New("path: required")
	}
	info, err := os.Stat(cfg.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("path %q does not exist", cfg.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	if info.IsDir() {
		return nil, fmt.Errorf("path %q is a directory (the dir kind watches folders)", cfg.Path)
	}
	interval, err := time.ParseDuration(cfg.Interval)
	if err != nil {
		return nil, fmt.Errorf("interval: invalid duration %q: %w", cfg.Interval, err)
	}
	if interval <= 0 {
		return nil, fmt.Errorf("interval must be > 0, got %s", cfg.Interval)
	}
	s := &sensor{env: env, path: cfg.Path, loop: cfg.Loop, interval: interval}
	if isImage(cfg.Path) {
		return s, nil
	}

	switch {
	case cfg.FPS < 0:
		return nil, fmt.Errorf("fps must be >= 0 (0 = the video's own rate), got %g", cfg.FPS)
	case cfg.Width < 0 || cfg.Height < 0 || (cfg.Width == 0) != (cfg.Height == 0):
		return nil, fmt.Errorf("width and height must both be > 0, or both 0 for the video's own size; got %dx%d", cfg.Width, cfg.Height)
	case cfg.Width%2 != 0 || cfg.Height%2 != 0:
		return nil, fmt.Errorf("width and height must be even, got %dx%d", cfg.Width, cfg.Height)
	}
	path, err := exec.LookPath(cfg.FFmpeg)
	if err != nil {
		return nil, fmt.Errorf("ffmpeg: %w", err)
	}
	s.video = &ffmpeg.Command{
		FFmpeg: path,
		Input:  cfg.Path,
		Loop:   cfg.Loop,
		FPS:    cfg.FPS,
		Width:  cfg.Width,
		Height: cfg.Height,
	}
	return s, nil
}

// isImage reports whether path names an image file (sensors.Extensions);
// anything else is played as a video through ffmpeg.
func isImage(path string) bool {
	return slices.Contains(sensors.Extensions, strings.ToLower(filepath.Ext(path)))
}

// Run plays the file. It returns nil when it has been played once (or when
// ctx ends), and an error when the file cannot be decoded.
func (s *sensor) Run(ctx context.Context, sink sensors.Sink) error {
	var err error
	if s.video != nil {
		err = s.playVideo(ctx, sink)
	} else {
		err = s.playImage(ctx, sink)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// playImage decodes the image and delivers it, then again every interval
// when looping.
func (s *sensor) playImage(ctx context.Context, sink sensors.Sink) error {
	info, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("read image: %w", err)
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("read image: %w", err)
	}
	w, h, rgb, err := sensors.DecodeImage(data, s.env.Limits)
	if err != nil {
		sink.BadInput(s.path, err)
		return fmt.Errorf("%s: %w", s.path, err)
	}

	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		f := &sensors.Frame{
			Sensor: s.env.Name,
			Seq:    s.seq.Add(1),
			Time:   info.ModTime(),
			Source: s.path,
			Width:  w,
			Height: h,
			RGB:    bytes.Clone(rgb), // each frame owns its pixels
		}
		if err := sink.Deliver(ctx, f); err != nil || !s.loop {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// playVideo decodes the video with ffmpeg, at its own size unless width and
// height are set, and delivers every frame.
func (s *sensor) playVideo(ctx context.Context, sink sensors.Sink) error {
	cmd := *s.video
	if cmd.Width == 0 {
		var err error
		if cmd.Width, cmd.Height, err = cmd.Probe(ctx); err != nil {
			sink.BadInput(s.path, err)
			return err
		}
		if lim := s.env.Limits.MaxPixels; lim > 0 && cmd.Width*cmd.Height > lim {
			err := fmt.Errorf("%w: video of %dx%d pixels is over the limit of %d pixels; set width and height",
				sensors.ErrBadImage, cmd.Width, cmd.Height, lim)
			sink.BadInput(s.path, err)
			return err
		}
	}
	started := time.Now()
	err := cmd.Run(ctx, func(n int, rgb []byte) error {
		return sink.Deliver(ctx, &sensors.Frame{
			Sensor: s.env.Name,
			Seq:    s.seq.Add(1),
			Time:   cmd.FrameTime(started, n),
			Source: fmt.Sprintf("%s#%d", s.path, n),
			Width:  cmd.Width,
			Height: cmd.Height,
			RGB:    rgb,
		})
	})
	if err != nil {
		return fmt.Errorf("play %s: %w", s.path, err)
	}
	return nil
}
