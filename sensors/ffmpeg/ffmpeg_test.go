package ffmpeg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/sensors/internal/sensortest"
)

// newSensor builds a sensor from a TOML table body, failing the test on error.
func newSensor(t *testing.T, body string) *sensor {
	t.Helper()
	s, err := New(sensortest.Env("cam"), sensortest.Decoder(body))
	if err != nil {
		t.Fatalf("New(%q): %v", body, err)
	}
	return s.(*sensor)
}

func TestNewRejectsBadOptionsNamingThem(t *testing.T) {
	clip := sensortest.Clip(t)
	missing := filepath.Join(t.TempDir(), "missing.mp4")
	const size = "fps = 5\nwidth = 64\nheight = 48\n"
	tests := []struct {
		body string
		want string
	}{
		{size, "input: required"},
		{fmt.Sprintf("input = %q\nwidth = 64\nheight = 48", clip), "fps must be > 0, got 0"},
		{fmt.Sprintf("input = %q\nfps = -1\nwidth = 64\nheight = 48", clip), "fps must be > 0, got -1"},
		{fmt.Sprintf("input = %q\nfps = 5\nheight = 48", clip), "width must be > 0, got 0"},
		{fmt.Sprintf("input = %q\nfps = 5\nwidth = 63\nheight = 48", clip), "width must be even, got 63"},
		{fmt.Sprintf("input = %q\nfps = 5\nwidth = 64\nheight = -2", clip), "height must be > 0, got -2"},
		{fmt.Sprintf("input = %q\nfps = 5\nwidth = 8000\nheight = 8000", clip), "width and height: 8000x8000 = 64000000 pixels is over the limit of 40000000 pixels (max_pixels)"},
		{fmt.Sprintf("input = %q\n%sffmpeg = \"no-such-ffmpeg\"", clip, size), `ffmpeg: exec: "no-such-ffmpeg": executable file not found in $PATH`},
		{fmt.Sprintf("input = %q\n%srestart_backoff = \"soon\"", clip, size), `restart_backoff: invalid duration "soon"`},
		{fmt.Sprintf("input = %q\n%srestart_backoff = \"0s\"", clip, size), `restart_backoff must be > 0, got 0s`},
		{fmt.Sprintf("input = %q\n%srestart_backoff = \"10s\"\nmax_backoff = \"5s\"", clip, size), "max_backoff (5s) must be >= restart_backoff (10s)"},
		{fmt.Sprintf("input = %q\n%s", missing, size), fmt.Sprintf("input %q does not exist", missing)},
		{fmt.Sprintf("input = %q\n%srate = 5", clip, size), `unknown option "rate"`},
	}
	for _, tt := range tests {
		_, err := New(sensortest.Env("cam"), sensortest.Decoder(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q) = %v, want an error containing %q", tt.body, err, tt.want)
		}
	}
}

func TestNewDefaultsDependOnTheInput(t *testing.T) {
	clip := sensortest.Clip(t)
	tests := []struct {
		input, extra  string
		wantLossless  bool
		wantInputArgs []string
	}{
		{clip, "", true, nil},
		{clip, "lossless = false", false, []string{"-re"}},
		{"rtsp://cam.local/stream", "", false, nil},
		{"https://cam.local/video.mjpg", "", false, nil},
		{"/dev/video0", "", false, []string{"-f", "v4l2"}},
		{"/dev/video0", `input_args = ["-f", "v4l2", "-input_format", "mjpeg"]`, false, []string{"-f", "v4l2", "-input_format", "mjpeg"}},
		{"/dev/video0", `input_args = []`, false, []string{}},
		{"rtsp://cam.local/stream", "lossless = true", true, nil},
		{"/dev/shm/clip.mp4", "lossless = false", false, []string{"-re"}},
	}
	for _, tt := range tests {
		s := newSensor(t, fmt.Sprintf("input = %q\nfps = 5\nwidth = 64\nheight = 48\n%s", tt.input, tt.extra))
		if s.lossless != tt.wantLossless || !slices.Equal(s.cmd.InputArgs, tt.wantInputArgs) {
			t.Errorf("input %q %s: lossless %v, input_args %q; want %v, %q",
				tt.input, tt.extra, s.lossless, s.cmd.InputArgs, tt.wantLossless, tt.wantInputArgs)
		}
	}
}

func TestSampleConfBuildsASensor(t *testing.T) {
	_, decode := sensortest.Sample(t, "ffmpeg", sampleConf)
	if _, err := New(sensortest.Env("door_camera"), decode); err != nil {
		t.Fatalf("New(sample.conf): %v", err)
	}
	if k, ok := sensors.Lookup("ffmpeg"); !ok || k.SampleConfig != sampleConf {
		t.Fatalf("kind ffmpeg is not registered with its sample.conf")
	}
}

func TestCommandArgs(t *testing.T) {
	tests := []struct {
		cmd  Command
		want string
	}{
		{
			Command{Input: "rtsp://cam/s", InputArgs: []string{"-rtsp_transport", "tcp"}, FPS: 5, Width: 640, Height: 480},
			"-hide_banner -loglevel error -nostdin -rtsp_transport tcp -i rtsp://cam/s -vf fps=5,scale=640:480 -f rawvideo -pix_fmt rgb24 pipe:1",
		},
		{
			Command{Input: "a.mp4", Loop: true, FPS: 0.5, Width: 64, Height: 48},
			"-hide_banner -loglevel error -nostdin -stream_loop -1 -i a.mp4 -vf fps=0.5,scale=64:48 -f rawvideo -pix_fmt rgb24 pipe:1",
		},
		{
			Command{Input: "a.mp4", Width: 64, Height: 48},
			"-hide_banner -loglevel error -nostdin -i a.mp4 -vf scale=64:48 -f rawvideo -pix_fmt rgb24 pipe:1",
		},
	}
	for _, tt := range tests {
		if got := strings.Join(tt.cmd.Args(), " "); got != tt.want {
			t.Errorf("Args() =\n%s\nwant\n%s", got, tt.want)
		}
	}
}

func TestRunPlaysAFileOnceAtTheConfiguredRate(t *testing.T) {
	clip := sensortest.Clip(t) // 2 s
	for _, fps := range []int{5, 10} {
		t.Run(strconv.Itoa(fps)+"fps", func(t *testing.T) {
			s := newSensor(t, fmt.Sprintf("input = %q\nfps = %d\nwidth = 64\nheight = 48", clip, fps))
			sink := &sensortest.Sink{}
			if err := s.Run(t.Context(), sink); err != nil {
				t.Fatalf("Run: %v", err)
			}
			frames := sink.Frames()
			if want := 2 * fps; len(frames) != want {
				t.Fatalf("got %d frames, want %d", len(frames), want)
			}
			if sink.Offered() != 0 {
				t.Errorf("%d frames were offered; a file is lossless and must be delivered", sink.Offered())
			}
			for i, f := range frames {
				if f.Seq != uint64(i+1) || f.Width != 64 || f.Height != 48 || len(f.RGB) != 64*48*3 {
					t.Fatalf("frame %d: seq %d, %dx%d, %d bytes; want seq %d, 64x48, %d bytes",
						i, f.Seq, f.Width, f.Height, len(f.RGB), i+1, 64*48*3)
				}
				if want := fmt.Sprintf("%s#%d", clip, i); f.Source != want || f.Sensor != "cam" {
					t.Fatalf("frame %d: sensor %q, source %q; want cam, %q", i, f.Sensor, f.Source, want)
				}
				// The video's own clock, however fast ffmpeg decodes it.
				if d, want := f.Time.Sub(frames[0].Time), time.Duration(i)*time.Second/time.Duration(fps); d != want {
					t.Fatalf("frame %d is %s after the first, want %s", i, d, want)
				}
			}
			if !colourful(frames[0].RGB) {
				t.Errorf("first frame is not the colour bars of testsrc")
			}
		})
	}
}

// colourful reports whether rgb holds saturated colours, as testsrc's bars
// do: some pixel has a channel over 200 and another under 50.
func colourful(rgb []byte) bool {
	for i := 0; i < len(rgb); i += 3 {
		hi := max(rgb[i], rgb[i+1], rgb[i+2])
		lo := min(rgb[i], rgb[i+1], rgb[i+2])
		if hi > 200 && lo < 50 {
			return true
		}
	}
	return false
}

func TestRunRestartsAFailingLiveSourceWithDoublingBackoff(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone.mp4")
	notVideo := filepath.Join(t.TempDir(), "notes.mp4")
	if err := os.WriteFile(notVideo, []byte("not a video"), 0o644); err != nil {
		t.Fatal(err)
	}
	const shortStream = "testsrc=size=160x120:rate=25:duration=0.2"
	tests := []struct {
		name, body, wantInput, wantReason string
		wantFrames                        bool
	}{
		{"missing live file", fmt.Sprintf("input = %q\nlossless = false", missing), missing, "No such file or directory", false},
		{"file that is no video", fmt.Sprintf("input = %q", notVideo), notVideo, "Invalid data found when processing input", false},
		{"refused rtsp url", `input = "rtsp://viewer:secret@127.0.0.1:1/stream"`, "rtsp://viewer:xxxxx@127.0.0.1:1/stream", "exit status 1", false},
		{"live stream that ends", fmt.Sprintf("input = %q\ninput_args = [\"-f\", \"lavfi\"]\nlossless = false", shortStream), shortStream, "the stream ended (exit status 0)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSensor(t, tt.body+"\nfps = 5\nwidth = 64\nheight = 48\nrestart_backoff = \"10ms\"\nmax_backoff = \"40ms\"")
			sink := &sensortest.Sink{}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error)
			go func() { done <- s.Run(ctx, sink) }()
			sensortest.WaitFor(t, 10*time.Second, "4 ffmpeg_restart events", func() bool { return len(sink.Events()) >= 4 })
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run after cancel = %v, want nil", err)
			}
			for i, backoff := range []string{"10ms", "20ms", "40ms", "40ms"} {
				e := sink.Events()[i]
				prefix := tt.wantInput + ": ffmpeg exited: "
				suffix := "; restarting in " + backoff
				if e.Kind != "ffmpeg_restart" || !strings.HasPrefix(e.Message, prefix) ||
					!strings.HasSuffix(e.Message, suffix) || !strings.Contains(e.Message, tt.wantReason) {
					t.Errorf("event %d = %s %q, want ffmpeg_restart %q...%q...%q", i, e.Kind, e.Message, prefix, tt.wantReason, suffix)
				}
				if strings.Contains(e.Message, "secret") {
					t.Errorf("event %d shows the URL's password: %q", i, e.Message)
				}
			}
			if n := len(sink.Frames()); (n > 0) != tt.wantFrames {
				t.Errorf("got %d frames, want frames: %v", n, tt.wantFrames)
			}
		})
	}
}

func TestRunKillsFFmpegWhenTheContextEnds(t *testing.T) {
	// lavfi's testsrc without a duration never ends.
	s := newSensor(t, `input = "testsrc=size=160x120:rate=25"
input_args = ["-re", "-f", "lavfi"]
lossless = false
fps = 25
width = 64
height = 48`)
	sink := &sensortest.Sink{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx, sink) }()
	sensortest.WaitFor(t, 10*time.Second, "3 frames", func() bool { return len(sink.Frames()) >= 3 })
	if children(t) == 0 {
		t.Fatalf("no ffmpeg child process while frames arrive")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Run did not return 5 s after its context ended")
	}
	if n := children(t); n != 0 {
		t.Fatalf("%d ffmpeg processes are still running after Run returned", n)
	}
	if sink.Offered() != len(sink.Frames()) {
		t.Errorf("a live source delivered frames: %d of %d were offered", sink.Offered(), len(sink.Frames()))
	}
}

// children counts the ffmpeg processes whose parent is this test process.
func children(t *testing.T) int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process has just exited
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		fields := strings.Fields(s[i+1:])
		if strings.Contains(s[:i], "(ffmpeg") && len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			n++
		}
	}
	return n
}

func TestProbeFindsTheVideoSize(t *testing.T) {
	w, h, err := Command{FFmpeg: "ffmpeg", Input: sensortest.Clip(t)}.Probe(t.Context())
	if err != nil || w != 160 || h != 120 {
		t.Fatalf("Probe = %dx%d, %v; want 160x120", w, h, err)
	}
	_, _, err = Command{FFmpeg: "ffmpeg", Input: "/no/such/video.mp4"}.Probe(t.Context())
	if err == nil || !strings.Contains(err.Error(), "/no/such/video.mp4: No such file or directory") {
		t.Fatalf("Probe of a missing file = %v, want ffmpeg's reason", err)
	}
}

func TestCommandRunStopsFFmpegWhenFrameFails(t *testing.T) {
	errStop := errors.New("stop")
	cmd := Command{FFmpeg: "ffmpeg", Input: sensortest.Clip(t), Width: 32, Height: 24}
	var got []int
	err := cmd.Run(t.Context(), func(n int, rgb []byte) error {
		got = append(got, n)
		if len(rgb) != 32*24*3 {
			t.Errorf("frame %d has %d bytes, want %d", n, len(rgb), 32*24*3)
		}
		if n == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("Run = %v after frames %v; want errStop after 0 1 2", err, got)
	}
	if n := children(t); n != 0 {
		t.Fatalf("%d ffmpeg processes are still running after Run returned", n)
	}
}
