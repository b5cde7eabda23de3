// Command plugin measures the daemon -> plugin -> daemon round trip that
// every frame makes (make bench-plugin): a 640x480 RGB frame goes to a real
// plugin process over go-plugin's gRPC and a result comes back, with no
// inference in between. The plugin is this same binary, re-executed.
//
// It compares, in one run and alternating call by call:
//   - direct:  the task called in-process (the limit: no process boundary)
//   - shm:     the SDK as the daemon uses it (pixels through shared memory)
//   - copy:    pixels inside the gRPC message (what shared memory avoids)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/edgeinfer/edgeinfer/bench/internal/kit"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

// noop is a task that does no inference: it checks the frame and answers
// with the first pixel, so the pixels must have arrived.
type noop struct{}

func (noop) Load(context.Context, sdk.LoadRequest) (sdk.ModelInfo, error) {
	return sdk.ModelInfo{Task: "noop"}, nil
}

func (noop) Configure(context.Context, map[string]json.RawMessage) error { return nil }

func (noop) Validate(context.Context) (sdk.Validation, error) { return sdk.Validation{}, nil }

func (noop) Infer(_ context.Context, f sdk.Frame) (sdk.Result, error) {
	if len(f.RGB) != f.Width*f.Height*3 {
		return sdk.Result{}, fmt.Errorf("%w: %d bytes", sdk.ErrBadFrame, len(f.RGB))
	}
	return sdk.Result{Output: fmt.Appendf(nil, `{"first":%d,"last":%d}`, f.RGB[0], f.RGB[len(f.RGB)-1])}, nil
}

func main() {
	if os.Getenv("EDGEINFER_BENCH_PLUGIN") == "1" {
		sdk.Serve(noop{})
		return
	}
	n := flag.Int("n", 5000, "round trips per variant")
	w := flag.Int("width", 640, "frame width")
	h := flag.Int("height", 480, "frame height")
	flag.Parse()
	if err := bench(*n, *w, *h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func bench(n, w, h int) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	start := func(copyPixels bool) (*sdk.Plugin, error) {
		p, err := sdk.Start(sdk.Options{Path: exe, Env: []string{"EDGEINFER_BENCH_PLUGIN=1"}, CopyPixels: copyPixels, Stderr: os.Stderr})
		if err != nil {
			return nil, err
		}
		_, err = p.Load(context.Background(), sdk.LoadRequest{Model: "noop"})
		return p, err
	}
	shm, err := start(false)
	if err != nil {
		return err
	}
	defer shm.Kill()
	cp, err := start(true)
	if err != nil {
		return err
	}
	defer cp.Kill()

	variants := []struct {
		name string
		task sdk.Task
		lat  []time.Duration
	}{{name: "direct (in-process, the limit)", task: noop{}}, {name: "plugin, pixels in shared memory", task: shm}, {name: "plugin, pixels copied in gRPC", task: cp}}
	frame := sdk.Frame{Width: w, Height: h, RGB: make([]byte, w*h*3)}
	ctx := context.Background()
	for i := -200; i < n; i++ { // the first 200 warm up
		frame.Seq = uint64(i + 1000)
		frame.RGB[0], frame.RGB[len(frame.RGB)-1] = byte(i), byte(i>>8)
		for v := range variants {
			t0 := time.Now()
			res, err := variants[v].task.Infer(ctx, frame)
			d := time.Since(t0)
			if err != nil {
				return fmt.Errorf("%s: %w", variants[v].name, err)
			}
			if want := fmt.Sprintf(`{"first":%d,"last":%d}`, frame.RGB[0], frame.RGB[len(frame.RGB)-1]); string(res.Output) != want {
				return fmt.Errorf("%s: answer %s, want %s", variants[v].name, res.Output, want)
			}
			if i >= 0 {
				variants[v].lat = append(variants[v].lat, d)
			}
		}
	}
	fmt.Printf("daemon -> plugin -> daemon round trip, %dx%d RGB frame (%d bytes), no inference, %d calls each, interleaved\n\n", w, h, len(frame.RGB), n)
	fmt.Println("| path | p50 | p99 | mean |")
	fmt.Println("| --- | --- | --- | --- |")
	for _, v := range variants {
		s := kit.Summarise(v.lat)
		fmt.Printf("| %s | %s | %s | %s |\n", v.name, kit.Us(s.P50), kit.Us(s.P99), kit.Us(s.Mean))
	}
	return nil
}
