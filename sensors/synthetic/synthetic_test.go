package synthetic

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/sensors/internal/sensortest"
)

func newSensor(t *testing.T, body string) *sensor {
	t.Helper()
	s, err := New(sensortest.Env("pattern"), sensortest.Decoder(body))
	if err != nil {
		t.Fatalf("New(%q): %v", body, err)
	}
	return s.(*sensor)
}

func TestNewRejectsBadOptionsNamingThem(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{"fps = 0", "fps must be > 0, got 0"},
		{"fps = -1", "fps must be > 0, got -1"},
		{"width = 4", "width must be >= 8, got 4"},
		{"height = 0", "height must be >= 8, got 0"},
		{"width = 10000\nheight = 10000", "width and height: 10000x10000 = 100000000 pixels is over the limit of 40000000 pixels (max_pixels)"},
		{`pattern = "digits"`, `pattern must be "gradient" or "noise", got "digits"`},
		{"frames = -3", "frames must be >= 0 (0 = forever), got -3"},
		{"rate = 5", `unknown option "rate"`},
	}
	for _, tt := range tests {
		_, err := New(sensortest.Env("pattern"), sensortest.Decoder(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q) = %v, want an error containing %q", tt.body, err, tt.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	s := newSensor(t, "")
	want := config{FPS: 5, Width: 640, Height: 480, Pattern: "gradient"}
	if s.cfg != want || s.period != 200*time.Millisecond {
		t.Errorf("defaults = %+v every %s, want %+v every 200ms", s.cfg, s.period, want)
	}
}

func TestSampleConfBuildsASensor(t *testing.T) {
	_, decode := sensortest.Sample(t, "synthetic", sampleConf)
	if _, err := New(sensortest.Env("test_pattern"), decode); err != nil {
		t.Fatalf("New(sample.conf): %v", err)
	}
	if k, ok := sensors.Lookup("synthetic"); !ok || k.SampleConfig != sampleConf {
		t.Fatalf("kind synthetic is not registered with its sample.conf")
	}
}

func TestFramesOptionEndsRunAfterThatManyFramesOfTheRightSize(t *testing.T) {
	for _, pattern := range []string{"gradient", "noise"} {
		t.Run(pattern, func(t *testing.T) {
			sink := &sensortest.Sink{}
			s := newSensor(t, `fps = 50
width = 40
height = 30
frames = 10
pattern = "`+pattern+`"`)
			if err := s.Run(t.Context(), sink); err != nil {
				t.Fatalf("Run: %v", err)
			}
			frames := sink.Frames()
			if len(frames) != 10 || sink.Offered() != 10 {
				t.Fatalf("got %d frames (%d offered), want 10 offered", len(frames), sink.Offered())
			}
			for i, f := range frames {
				if f.Sensor != "pattern" || f.Seq != uint64(i+1) || f.Source != fmt.Sprintf("synthetic#%d", i+1) ||
					f.Width != 40 || f.Height != 30 || len(f.RGB) != 40*30*3 {
					t.Fatalf("frame %d = %s #%d %q %dx%d %d bytes", i, f.Sensor, f.Seq, f.Source, f.Width, f.Height, len(f.RGB))
				}
				if i > 0 && bytes.Equal(f.RGB, frames[i-1].RGB) {
					t.Errorf("frame %d has the same pixels as frame %d", i, i-1)
				}
				if i > 0 && &f.RGB[0] == &frames[i-1].RGB[0] {
					t.Errorf("frame %d reuses the buffer of frame %d", i, i-1)
				}
			}
		})
	}
}

func TestRunKeepsItsRateWhenOfferIsSlow(t *testing.T) {
	// At 50 fps a frame is due every 20 ms; Offer takes 15 ms. Sleeping a
	// period after each Offer would take 20*(20+15) = 700 ms; keeping the
	// rate takes 19*20 = 380 ms.
	sink := &sensortest.Sink{OnFrame: func(*sensors.Frame) { time.Sleep(15 * time.Millisecond) }}
	s := newSensor(t, "fps = 50\nwidth = 16\nheight = 16\nframes = 20")
	start := time.Now()
	if err := s.Run(t.Context(), sink); err != nil {
		t.Fatalf("Run: %v", err)
	}
	elapsed := time.Since(start)
	if len(sink.Frames()) != 20 || elapsed < 370*time.Millisecond || elapsed > 600*time.Millisecond {
		t.Errorf("20 frames at 50 fps took %s (%d frames), want about 380ms", elapsed, len(sink.Frames()))
	}
}

func TestRunReturnsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	sink := &sensortest.Sink{}
	done := make(chan error)
	go func() { done <- newSensor(t, "fps = 100\nwidth = 16\nheight = 16").Run(ctx, sink) }()
	sensortest.WaitFor(t, 5*time.Second, "3 frames", func() bool { return len(sink.Frames()) >= 3 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
