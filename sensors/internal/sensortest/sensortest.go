// Package sensortest holds what the tests of the sensor kinds share: a Sink
// that records what a sensor hands it, a strict TOML Decoder like the
// daemon's, a check of a kind's sample.conf and PNG test images.
package sensortest

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/edgeinfer/edgeinfer/sensors"
)

// Env returns the Env of a sensor called name, with the default limits and a
// logger that writes nowhere.
func Env(name string) sensors.Env {
	return sensors.Env{
		Name:   name,
		Limits: sensors.DefaultLimits,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Prefix: "edgeinfer/test",
	}
}

// BadInput is one call of Sink.BadInput.
type BadInput struct {
	Source string
	Err    error
}

// Event is one call of Sink.Event.
type Event struct {
	Kind, Message string
}

// Sink records every frame, bad input and event a sensor reports. It is safe
// for concurrent use.
type Sink struct {
	// OnFrame, when set, is called with every delivered or offered frame
	// after it was recorded (to call Finish, or to be slow).
	OnFrame func(f *sensors.Frame)

	mu      sync.Mutex
	frames  []*sensors.Frame
	offered int
	bad     []BadInput
	events  []Event
}

// Deliver records f, or returns ctx.Err() if ctx has ended.
func (s *Sink) Deliver(ctx context.Context, f *sensors.Frame) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.record(f, false)
	return nil
}

// Offer records f.
func (s *Sink) Offer(f *sensors.Frame) { s.record(f, true) }

func (s *Sink) record(f *sensors.Frame, offered bool) {
	s.mu.Lock()
	s.frames = append(s.frames, f)
	if offered {
		s.offered++
	}
	s.mu.Unlock()
	if s.OnFrame != nil {
		s.OnFrame(f)
	}
}

// BadInput records a bad input.
func (s *Sink) BadInput(source string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad = append(s.bad, BadInput{source, err})
}

// Event records an event.
func (s *Sink) Event(kind, message string, attrs ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, Event{kind, message})
}

// Frames returns the frames recorded so far, in order.
func (s *Sink) Frames() []*sensors.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.frames)
}

// Offered returns how many of the frames came through Offer.
func (s *Sink) Offered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offered
}

// BadInputs returns the bad inputs recorded so far.
func (s *Sink) BadInputs() []BadInput {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bad)
}

// Events returns the events recorded so far.
func (s *Sink) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// WaitFor polls cond until it is true, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Decoder returns a Decoder over a TOML table body ("fps = 5\nwidth = 64"),
// strict like the daemon's: a key the config struct lacks is an error. The
// kind key is skipped, as the daemon consumes it.
func Decoder(body string) sensors.Decoder {
	return func(v any) error {
		md, err := toml.Decode(body, v)
		if err != nil {
			return err
		}
		for _, k := range md.Undecoded() {
			if k.String() != "kind" {
				return fmt.Errorf("unknown option %q", k.String())
			}
		}
		return nil
	}
}

// Sample checks that sample is exactly one [sensors.<name>] table whose kind
// is kind, and returns the table's name and a strict Decoder over its other
// keys, as the daemon would build it.
func Sample(t testing.TB, kind, sample string) (name string, decode sensors.Decoder) {
	t.Helper()
	var file struct {
		Sensors map[string]map[string]any `toml:"sensors"`
	}
	md, err := toml.Decode(sample, &file)
	if err != nil {
		t.Fatalf("sample.conf does not parse: %v", err)
	}
	if len(md.Undecoded()) > 0 || len(file.Sensors) != 1 {
		t.Fatalf("sample.conf must hold exactly one [sensors.<name>] table and nothing else")
	}
	for n, table := range file.Sensors {
		name = n
		if table["kind"] != kind {
			t.Fatalf("sample.conf: kind = %v, want %q", table["kind"], kind)
		}
		delete(table, "kind")
		var b strings.Builder
		if err := toml.NewEncoder(&b).Encode(table); err != nil {
			t.Fatalf("sample.conf: %v", err)
		}
		decode = Decoder(b.String())
	}
	return name, decode
}

// PNG returns a w×h PNG whose pixels depend on seed, and its packed RGB.
func PNG(t testing.TB, w, h, seed int) (data, rgb []byte) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	rgb = make([]byte, 0, w*h*3)
	for y := range h {
		for x := range w {
			c := color.RGBA{uint8(x*7 + seed), uint8(y*13 + seed*3), uint8(x*y + seed*11), 255}
			img.SetRGBA(x, y, c)
			rgb = append(rgb, c.R, c.G, c.B)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), rgb
}

// Clip makes a 2 s, 25 fps, 160x120 video of ffmpeg's test pattern (colour
// bars) in a temporary folder and returns its path. It fails the test when
// ffmpeg is missing: the video tests must not pass without running.
func Clip(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.mp4")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "2", "-pix_fmt", "yuv420p", path).CombinedOutput()
	if err != nil {
		t.Fatalf("making a test video with ffmpeg (apt-get install ffmpeg): %v: %s", err, out)
	}
	return path
}
