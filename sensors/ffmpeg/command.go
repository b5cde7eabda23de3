package ffmpeg

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// waitDelay is how long Run waits for ffmpeg to exit and its pipes to close
// once it has been killed.
const waitDelay = 2 * time.Second

// Command is one ffmpeg run that decodes Input into raw RGB frames of
// Width×Height pixels on its standard output. The ffmpeg and file kinds both
// read video through it.
type Command struct {
	FFmpeg    string   // the ffmpeg executable: a path, or a name looked up in PATH
	InputArgs []string // options placed before -i, e.g. "-rtsp_transport", "tcp"
	Input     string   // a URL, a device or a file
	Loop      bool     // play the input forever (-stream_loop -1); for files
	FPS       float64  // output frame rate; 0 keeps every frame of the input
	Width     int      // output width in pixels; Probe finds the input's
	Height    int      // output height in pixels
}

// Args returns ffmpeg's arguments (without the executable) for Run.
func (c Command) Args() []string {
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin"}
	if c.Loop {
		args = append(args, "-stream_loop", "-1")
	}
	args = append(args, c.InputArgs...)
	args = append(args, "-i", c.Input)
	filter := fmt.Sprintf("scale=%d:%d", c.Width, c.Height)
	if c.FPS > 0 {
		filter = "fps=" + strconv.FormatFloat(c.FPS, 'g', -1, 64) + "," + filter
	}
	return append(args, "-vf", filter, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1")
}

// FrameTime is the time of frame n of a run started at start, in the
// video's own clock: start + n / FPS. A video file decoded faster (or
// slower) than real time thus keeps its frames' spacing, which trackers
// and rates downstream rely on. Without an FPS it is the time of the call.
func (c Command) FrameTime(start time.Time, n int) time.Time {
	if c.FPS <= 0 {
		return time.Now()
	}
	return start.Add(time.Duration(float64(n) / c.FPS * float64(time.Second)))
}

// Run starts ffmpeg and calls frame with each frame it decodes, in order: n
// counts from 0 in this run and rgb is a new Width*Height*3 buffer each time.
// It returns nil when ffmpeg has played the input and exited with status 0,
// frame's error if frame fails (ffmpeg is then killed), ctx.Err() if ctx
// ends, and otherwise an error "ffmpeg exited: <status>: <end of stderr>".
func (c Command) Run(ctx context.Context, frame func(n int, rgb []byte) error) error {
	if c.Width <= 0 || c.Height <= 0 {
		return fmt.Errorf("ffmpeg: frame size %dx%d is not set", c.Width, c.Height)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	cmd := exec.CommandContext(runCtx, c.FFmpeg, c.Args()...)
	cmd.WaitDelay = waitDelay
	var stderr tail
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("ffmpeg: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ffmpeg: %w", err)
	}

	size := c.Width * c.Height * 3
	var frameErr error
	for n := 0; ; n++ {
		rgb := make([]byte, size)
		if _, err := io.ReadFull(stdout, rgb); err != nil {
			// EOF: ffmpeg has closed its output; Wait tells why. A partial
			// last frame (ErrUnexpectedEOF) is dropped.
			break
		}
		if frameErr = frame(n, rgb); frameErr != nil {
			stop() // kills ffmpeg
			break
		}
	}
	waitErr := cmd.Wait()

	switch {
	case frameErr != nil:
		return frameErr
	case ctx.Err() != nil:
		return ctx.Err()
	case waitErr != nil:
		return fmt.Errorf("ffmpeg exited: %w%s", waitErr, stderr.reason())
	}
	return nil
}

// Probe returns the size of the frames ffmpeg decodes from the input when
// no size is asked for, by decoding its first frame.
func (c Command) Probe(ctx context.Context) (width, height int, err error) {
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin"}
	args = append(args, c.InputArgs...)
	args = append(args, "-i", c.Input, "-frames:v", "1", "-f", "image2pipe", "-c:v", "ppm", "pipe:1")
	cmd := exec.CommandContext(ctx, c.FFmpeg, args...)
	cmd.WaitDelay = waitDelay
	var stderr tail
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("probe %s: ffmpeg exited: %w%s", c.Input, err, stderr.reason())
	}
	// A PPM image starts with "P6 <width> <height> <maxval>".
	var magic string
	var maxval int
	if _, err := fmt.Fscan(bytes.NewReader(out), &magic, &width, &height, &maxval); err != nil || magic != "P6" {
		return 0, 0, fmt.Errorf("probe %s: ffmpeg produced no video frame%s", c.Input, stderr.reason())
	}
	return width, height, nil
}

// tail keeps the last bytes written to it: the end of ffmpeg's stderr, which
// holds the reason it failed, without growing on a stream that logs errors
// for days.
type tail struct {
	buf []byte
}

const tailSize = 1024

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = t.buf[len(t.buf)-tailSize:]
	}
	return len(p), nil
}

// reason returns ": <stderr, lines joined by "; ">", or "" when ffmpeg
// wrote nothing.
func (t *tail) reason() string {
	var lines []string
	for _, l := range strings.Split(string(t.buf), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return ": " + strings.Join(lines, "; ")
}
