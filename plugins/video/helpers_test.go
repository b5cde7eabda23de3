package main

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin/tfplugintest"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

// testPipeline is the pipeline load configures and the test frames are for.
const testPipeline = "p"

// load loads a version into a new classifier closed at the end of the test
// and configures testPipeline with options.
func load(t testing.TB, dir, options string) *classifier {
	t.Helper()
	c := newClassifier()
	t.Cleanup(func() { c.Close() })
	if _, err := c.Load(context.Background(), sdk.LoadRequest{ModelDir: dir, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	configure(t, c, map[string]string{testPipeline: options})
	return c
}

// configure sets the classifier's pipelines (name -> options JSON).
func configure(t testing.TB, c *classifier, pipelines map[string]string) {
	t.Helper()
	raw := map[string]json.RawMessage{}
	for name, o := range pipelines {
		raw[name] = json.RawMessage(o)
	}
	if err := c.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
}

// infer runs one frame and decodes the output.
func infer(t testing.TB, c *classifier, f sdk.Frame) output {
	t.Helper()
	return tfplugintest.Infer[output](t, c, f)
}

// frame is a frame of testPipeline from sensor.
func frame(sensor string, seq uint64, w, h int, rgb []byte) sdk.Frame {
	return sdk.Frame{Pipeline: testPipeline, Sensor: sensor, Seq: seq, Width: w, Height: h, RGB: rgb}
}

// t0 is the capture time of the tests' first frame.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// goldenFrames are the golden inputs of clips_video's serving_default as
// RGB frames: golden/input_frames.npy [4, 8, 48, 48, 3] was normalised from
// uint8 pixels, and undoing the normalisation gives them back.
func goldenFrames(t testing.TB, c *classifier) [][]byte {
	t.Helper()
	x, shape := tfplugintest.ReadFloats(t, filepath.Join(c.Dir, "golden", "input_frames.npy"))
	in := c.Man.Input
	n := int(shape[0] * shape[1])
	size := len(x) / n
	frames := make([][]byte, n)
	for i := range frames {
		rgb := make([]byte, size)
		for j := range rgb {
			ch := j % 3
			v := (float64(x[i*size+j])*in.Std[ch] + in.Mean[ch]) / in.Scale
			if v < -0.01 || v > 255.01 {
				t.Fatalf("golden frame %d value %d: pixel %g is not in 0..255", i, j, v)
			}
			rgb[j] = byte(v + 0.5)
		}
		frames[i] = rgb
	}
	return frames
}

// heldOutClip is one generated clip: its frames (48x48 RGB) and label.
type heldOutClip struct {
	name   string
	label  string
	frames [][]byte
}

var (
	clipsOnce sync.Once
	clipsDir  string
	clipsErr  error
)

// heldOut writes n held-out clips (python -m tfmodels.zoo.clips write DIR
// --n n --seed 1, run once per test binary with the venv's python or
// $EDGEINFER_PYTHON) and reads them back.
func heldOut(t testing.TB, n int) []heldOutClip {
	t.Helper()
	clipsOnce.Do(func() {
		py := os.Getenv("EDGEINFER_PYTHON")
		if py == "" {
			py, _ = filepath.Abs("../../.venv/bin/python")
		}
		if clipsDir, clipsErr = os.MkdirTemp("", "video-clips-"); clipsErr != nil {
			return
		}
		cmd := exec.Command(py, "-m", "tfmodels.zoo.clips", "write", clipsDir, "--n", "60", "--seed", "1")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=2")
		if out, err := cmd.CombinedOutput(); err != nil {
			clipsErr = fmt.Errorf("%s: %v\n%s", cmd, err, out)
		}
	})
	if clipsErr != nil {
		t.Fatal(clipsErr)
	}
	if n > 60 {
		t.Fatalf("heldOut writes 60 clips, %d asked", n)
	}
	b, err := os.ReadFile(filepath.Join(clipsDir, "labels.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Clips []struct {
			Dir, Label string
			Frames     int
		}
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if len(meta.Clips) < n {
		t.Fatalf("labels.json lists %d clips, %d asked", len(meta.Clips), n)
	}
	clips := make([]heldOutClip, n)
	for i := range clips {
		name, label := meta.Clips[i].Dir, meta.Clips[i].Label
		paths, _ := filepath.Glob(filepath.Join(clipsDir, name, "frame_*.png"))
		if len(paths) != meta.Clips[i].Frames {
			t.Fatalf("%d frames in %s, labels.json says %d", len(paths), filepath.Join(clipsDir, name), meta.Clips[i].Frames)
		}
		clips[i] = heldOutClip{name: name, label: label}
		for _, p := range paths {
			clips[i].frames = append(clips[i].frames, readRGB(t, p))
		}
	}
	return clips
}

// readRGB decodes a PNG into packed RGB.
func readRGB(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := img.Bounds()
	rgb := make([]byte, 0, 3*b.Dx()*b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			rgb = append(rgb, byte(r>>8), byte(g>>8), byte(bl>>8))
		}
	}
	return rgb
}

func TestMain(m *testing.M) {
	code := m.Run()
	if clipsDir != "" {
		os.RemoveAll(clipsDir)
	}
	os.Exit(code)
}
