package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/sensors/internal/sensortest"
)

// writePNG writes a w×h test PNG to dir/name and returns its path and pixels.
func writePNG(t *testing.T, dir, name string, w, h int) (path string, rgb []byte) {
	t.Helper()
	data, rgb := sensortest.PNG(t, w, h, 1)
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, rgb
}

func newSensor(t *testing.T, body string) *sensor {
	t.Helper()
	s, err := New(sensortest.Env("cam"), sensortest.Decoder(body))
	if err != nil {
		t.Fatalf("New(%q): %v", body, err)
	}
	return s.(*sensor)
}

func TestNewRejectsBadOptionsNamingThem(t *testing.T) {
	dir := t.TempDir()
	img, _ := writePNG(t, dir, "a.png", 16, 16)
	video := filepath.Join(dir, "a.mp4")
	if err := os.WriteFile(video, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.png")
	tests := []struct {
		body, want string
	}{
		{"loop = true", "path: required"},
		{fmt.Sprintf("path = %q", missing), fmt.Sprintf("path %q does not exist", missing)},
		{fmt.Sprintf("path = %q", dir), fmt.Sprintf("path %q is a directory", dir)},
		{fmt.Sprintf("path = %q\ninterval = \"often\"", img), `interval: invalid duration "often"`},
		{fmt.Sprintf("path = %q\ninterval = \"-1s\"", img), "interval must be > 0, got -1s"},
		{fmt.Sprintf("path = %q\nfps = -1", video), "fps must be >= 0 (0 = the video's own rate), got -1"},
		{fmt.Sprintf("path = %q\nwidth = 64", video), "width and height must both be > 0, or both 0 for the video's own size; got 64x0"},
		{fmt.Sprintf("path = %q\nwidth = 63\nheight = 48", video), "width and height must be even, got 63x48"},
		{fmt.Sprintf("path = %q\nffmpeg = \"no-such-ffmpeg\"", video), `ffmpeg: exec: "no-such-ffmpeg": executable file not found`},
		{fmt.Sprintf("path = %q\nrepeat = true", img), `unknown option "repeat"`},
	}
	for _, tt := range tests {
		_, err := New(sensortest.Env("cam"), sensortest.Decoder(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q) = %v, want an error containing %q", tt.body, err, tt.want)
		}
	}
}

func TestSampleConfDecodes(t *testing.T) {
	_, decode := sensortest.Sample(t, "file", sampleConf)
	var cfg config
	if err := decode(&cfg); err != nil {
		t.Fatalf("sample.conf: %v", err)
	}
	if cfg.Path == "" || !cfg.Loop || cfg.FPS != 5 || cfg.Width != 640 || cfg.Height != 480 {
		t.Errorf("sample.conf decodes to %+v", cfg)
	}
	if k, ok := sensors.Lookup("file"); !ok || k.SampleConfig != sampleConf {
		t.Fatalf("kind file is not registered with its sample.conf")
	}
}

func TestImagePlayedOnceIsDeliveredOnce(t *testing.T) {
	path, rgb := writePNG(t, t.TempDir(), "cat.PNG", 24, 16)
	mtime := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	sink := &sensortest.Sink{}
	if err := newSensor(t, fmt.Sprintf("path = %q\nffmpeg = \"unused\"", path)).Run(t.Context(), sink); err != nil {
		t.Fatalf("Run: %v", err)
	}
	frames := sink.Frames()
	if len(frames) != 1 || sink.Offered() != 0 {
		t.Fatalf("got %d frames (%d offered), want 1 delivered", len(frames), sink.Offered())
	}
	f := frames[0]
	if f.Sensor != "cam" || f.Seq != 1 || f.Source != path || !f.Time.Equal(mtime) ||
		f.Width != 24 || f.Height != 16 || !bytes.Equal(f.RGB, rgb) {
		t.Errorf("frame = %s #%d %q %v %dx%d; want cam #1 %q %v 24x16 with the PNG's pixels",
			f.Sensor, f.Seq, f.Source, f.Time, f.Width, f.Height, path, mtime)
	}
}

func TestLoopedImageIsDeliveredEveryInterval(t *testing.T) {
	path, rgb := writePNG(t, t.TempDir(), "cat.png", 16, 16)
	sink := &sensortest.Sink{}
	s := newSensor(t, fmt.Sprintf("path = %q\nloop = true\ninterval = \"20ms\"", path))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	start := time.Now()
	go func() { done <- s.Run(ctx, sink) }()
	sensortest.WaitFor(t, 5*time.Second, "5 frames", func() bool { return len(sink.Frames()) >= 5 })
	elapsed := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if elapsed < 80*time.Millisecond {
		t.Errorf("5 frames came in %s, want one every 20ms", elapsed)
	}
	frames := sink.Frames()
	frames[0].RGB[0]++ // a pipeline writing into its frame must not change the others
	for i, f := range frames {
		if f.Seq != uint64(i+1) {
			t.Errorf("frame %d has seq %d", i, f.Seq)
		}
		if i > 0 && !bytes.Equal(f.RGB, rgb) {
			t.Errorf("frame %d does not hold the image's pixels", i)
		}
	}
}

func TestBadImageIsReportedAndEndsRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.jpg")
	if err := os.WriteFile(path, []byte("not a picture"), 0o644); err != nil {
		t.Fatal(err)
	}
	sink := &sensortest.Sink{}
	err := newSensor(t, fmt.Sprintf("path = %q", path)).Run(t.Context(), sink)
	if !errors.Is(err, sensors.ErrBadImage) || !strings.Contains(err.Error(), path) {
		t.Errorf("Run = %v, want a bad image error naming the file", err)
	}
	bad := sink.BadInputs()
	if len(bad) != 1 || bad[0].Source != path || !errors.Is(bad[0].Err, sensors.ErrBadImage) {
		t.Errorf("BadInput calls = %v, want one for %s", bad, path)
	}
	if len(sink.Frames()) != 0 {
		t.Errorf("a bad image produced frames")
	}
}

func TestVideoIsPlayedOnce(t *testing.T) {
	clip := sensortest.Clip(t) // 2 s of 160x120 at 25 fps
	tests := []struct {
		options    string
		fps        float64
		wantFrames int
		wantW      int
		wantH      int
	}{
		{"", 0, 50, 160, 120},
		{"fps = 5\nwidth = 64\nheight = 48", 5, 10, 64, 48},
		{"fps = 10", 10, 20, 160, 120},
	}
	for _, tt := range tests {
		sink := &sensortest.Sink{}
		if err := newSensor(t, fmt.Sprintf("path = %q\n%s", clip, tt.options)).Run(t.Context(), sink); err != nil {
			t.Fatalf("%q: Run: %v", tt.options, err)
		}
		frames := sink.Frames()
		if len(frames) != tt.wantFrames || sink.Offered() != 0 {
			t.Fatalf("%q: got %d frames (%d offered), want %d delivered", tt.options, len(frames), sink.Offered(), tt.wantFrames)
		}
		for i, f := range frames {
			if f.Seq != uint64(i+1) || f.Width != tt.wantW || f.Height != tt.wantH || len(f.RGB) != tt.wantW*tt.wantH*3 ||
				f.Source != fmt.Sprintf("%s#%d", clip, i) {
				t.Fatalf("%q: frame %d = #%d %q %dx%d %d bytes", tt.options, i, f.Seq, f.Source, f.Width, f.Height, len(f.RGB))
			}
			// With an fps the frames carry the video's own clock.
			if d, want := f.Time.Sub(frames[0].Time), time.Duration(float64(i)/tt.fps*float64(time.Second)); tt.fps > 0 && d != want {
				t.Fatalf("%q: frame %d is %s after the first, want %s", tt.options, i, d, want)
			}
		}
	}
}

func TestLoopedVideoKeepsPlaying(t *testing.T) {
	clip := sensortest.Clip(t)
	sink := &sensortest.Sink{}
	s := newSensor(t, fmt.Sprintf("path = %q\nloop = true\nfps = 5\nwidth = 32\nheight = 24", clip))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx, sink) }()
	// The clip holds 10 frames at 5 fps: 25 frames means it looped twice.
	sensortest.WaitFor(t, 10*time.Second, "25 frames", func() bool { return len(sink.Frames()) >= 25 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

func TestFileThatIsNoVideoIsABadInput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.mp4")
	if err := os.WriteFile(path, []byte("not a video"), 0o644); err != nil {
		t.Fatal(err)
	}
	sink := &sensortest.Sink{}
	err := newSensor(t, fmt.Sprintf("path = %q", path)).Run(t.Context(), sink)
	if err == nil || !strings.Contains(err.Error(), "Invalid data found when processing input") {
		t.Errorf("Run = %v, want ffmpeg's reason", err)
	}
	if bad := sink.BadInputs(); len(bad) != 1 || bad[0].Source != path {
		t.Errorf("BadInput calls = %v, want one for %s", bad, path)
	}
}
