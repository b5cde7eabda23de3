package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// The video plugin (plugins/video) through edgeinferd and Mosquitto:
// held-out generated clips (tfmodels/zoo/clips.py, seed 1) encoded
// losslessly by ffmpeg (FFV1, as the tracker test's clip) and played by
// the video sensors (ffmpeg, file) into pipelines on clips_video.

// videoFPS is the rate the clips are encoded at and the sensors take.
const videoFPS = 12

// clipsVideoRepo is a repository of its own holding the newest version of
// clips_video in $EDGEINFER_MODELS, copied, so that a version installed
// there while a test runs cannot swap the model (and reset the plugin's
// counters) under it.
func clipsVideoRepo(t *testing.T) string {
	t.Helper()
	src := filepath.Join(models(t), "clips_video")
	entries, _ := os.ReadDir(src)
	version := -1
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() && n > version {
			version = n
		}
	}
	if version < 0 {
		t.Fatalf("%s has no version: the video tests need clips_video; run `make models-trained` (tfmodels/zoo/train_video.py)", src)
	}
	dir := filepath.Join(src, strconv.Itoa(version))
	if _, err := os.Stat(filepath.Join(dir, "edgeinfer.toml")); err != nil {
		t.Fatalf("clips_video is not installed (%v): run `make models-trained` (tfmodels/zoo/train_video.py)", err)
	}
	repo := t.TempDir()
	if err := os.Mkdir(filepath.Join(repo, "clips_video"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyVersion(t, dir, filepath.Join(repo, "clips_video", strconv.Itoa(version)), nil)
	return repo
}

// clipsModels settles the copied version quickly.
const clipsModels = "settle = \"200ms\"\n"

// heldOutClip is one clip of labels.json.
type heldOutClip struct {
	Dir    string `json:"dir"`
	Label  string `json:"label"`
	Frames int    `json:"frames"`
}

// writeHeldOutClips runs `python -m tfmodels.zoo.clips write DIR --n n
// --seed 1` (the venv's python, or $EDGEINFER_PYTHON, as script does) and
// returns DIR and its labels.json.
func writeHeldOutClips(t *testing.T, n int) (string, []heldOutClip) {
	t.Helper()
	py := os.Getenv("EDGEINFER_PYTHON")
	if py == "" {
		py = "../../.venv/bin/python"
	}
	py, _ = filepath.Abs(py) // relative to the package, not to cmd.Dir
	dir := t.TempDir()
	cmd := exec.Command(py, "-m", "tfmodels.zoo.clips", "write", dir, "--n", strconv.Itoa(n), "--seed", "1")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "labels.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Clips []heldOutClip `json:"clips"`
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if len(meta.Clips) != n {
		t.Fatalf("labels.json lists %d clips, want %d", len(meta.Clips), n)
	}
	return dir, meta.Clips
}

// encodeFFV1 encodes the first frames PNGs of a clip folder (frame_NNN.png)
// into out, a lossless FFV1 Matroska video at videoFPS (RGB as bgr0: no
// chroma subsampling), the way shapes_video.py makes the tracker's clip.
func encodeFFV1(t *testing.T, clipDir string, frames int, out string) {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-framerate", strconv.Itoa(videoFPS), "-i", filepath.Join(clipDir, "frame_%03d.png"),
		"-frames:v", strconv.Itoa(frames), "-c:v", "ffv1", "-pix_fmt", "bgr0", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
}

// checkLossless decodes video back to RGB with ffmpeg and compares it with
// the clip's PNGs, pixel for pixel.
func checkLossless(t *testing.T, clipDir, video string, frames int) {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", video,
		"-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1").Output()
	if err != nil {
		t.Fatalf("decode %s: %v", video, err)
	}
	var want []byte
	for i := range frames {
		b, err := os.ReadFile(filepath.Join(clipDir, fmt.Sprintf("frame_%03d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r := img.Bounds()
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				cr, cg, cb, _ := img.At(x, y).RGBA()
				want = append(want, byte(cr>>8), byte(cg>>8), byte(cb>>8))
			}
		}
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("%s decodes to %d bytes that are not the %d frames' %d bytes of RGB: not lossless", video, len(out), frames, len(want))
	}
}

// videoClip is a clip classification as the video plugin publishes it.
type videoClip struct {
	Label  string   `json:"label"`
	Class  int      `json:"class"`
	Score  float64  `json:"score"`
	Frames []uint64 `json:"frames"`
	Length int      `json:"length"`
}

// videoFile is the whole-file classification (whole_file = true).
type videoFile struct {
	Source     string `json:"source"`
	FramesSeen uint64 `json:"frames_seen"`
	Kept       int    `json:"kept"`
	videoClip
}

// videoResult is a result of the video plugin with its output decoded.
type videoResult struct {
	payload.Result
	Out struct {
		FeaturesComputed uint64     `json:"features_computed"`
		ProcessComputed  uint64     `json:"features_computed_process"`
		Buffered         int        `json:"buffered"`
		Clip             *videoClip `json:"clip"`
		File             *videoFile `json:"file"`
	}
}

func videoResults(t *testing.T, w *watcher, pipeline string) []videoResult {
	t.Helper()
	var out []videoResult
	for _, r := range w.results(t, pipeline) {
		v := videoResult{Result: r}
		if err := json.Unmarshal(r.Output, &v.Out); err != nil {
			t.Fatalf("%s: output %s: %v", pipeline, r.Output, err)
		}
		if r.Task != "video" || r.Model.Name != "clips_video" || r.Width != 48 || r.Height != 48 {
			t.Fatalf("%s: result envelope %+v", pipeline, r)
		}
		out = append(out, v)
	}
	return out
}

// noPluginTrouble fails the test if the plugin restarted or failed a frame.
func noPluginTrouble(t *testing.T, w *watcher) {
	t.Helper()
	for _, typ := range []string{payload.EventPluginRestarted, payload.EventPluginFailed, payload.EventInferenceFailed, payload.EventVersionRejected} {
		if es := w.eventsOf(t, typ); len(es) > 0 {
			t.Fatalf("%d %s events, the first: %+v", len(es), typ, es[0])
		}
	}
}

// 30 held-out clips of 24 frames, each encoded into a lossless video and
// played by an ffmpeg sensor of its own into a video pipeline on
// clips_video (whole_file, and an even clip every 24 frames): the label of
// each file's last result is its clip's label for >= 90% of them, and the
// frame CNN runs exactly once per frame the sensors delivered, per stream
// and in the one plugin process.
func TestHeldOutClipVideosThroughTheDaemonAreLabelledPerFileWithOneCNNRunPerFrame(t *testing.T) {
	const n, frames = 30, 24
	repo := clipsVideoRepo(t)
	dir, clips := writeHeldOutClips(t, n)
	var sensors, pipelines strings.Builder
	videos := make([]string, n)
	for i, c := range clips {
		if c.Frames != frames {
			t.Fatalf("%s has %d frames, want %d", c.Dir, c.Frames, frames)
		}
		videos[i] = filepath.Join(dir, c.Dir+".mkv")
		encodeFFV1(t, filepath.Join(dir, c.Dir), frames, videos[i])
		fmt.Fprintf(&sensors, "[sensors.v%02d]\nkind = \"ffmpeg\"\ninput = %q\nfps = %d\nwidth = 48\nheight = 48\n", i, videos[i], videoFPS)
		fmt.Fprintf(&pipelines, "[pipelines.p%02d]\nsensor = \"v%02d\"\nmodel = \"clips_video\"\n"+
			"[pipelines.p%02d.options]\nwhole_file = true\nsampling = \"even\"\nwindow = %d\nstride = %d\n", i, i, i, frames, frames)
	}
	checkLossless(t, filepath.Join(dir, clips[0].Dir), videos[0], frames)

	start := time.Now()
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensors.String(), extra: pipelines.String(), repo: repo, models: clipsModels})
	w.serving(t, proc, "clips_video", "p00")
	waitFor(t, proc, 2*time.Minute, "24 results per clip", func() bool {
		for i := range n {
			if len(w.all(fmt.Sprintf("p%02d/result", i))) < frames {
				return false
			}
		}
		return true
	})
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive now
	elapsed := time.Since(start)
	noPluginTrouble(t, w)

	all := map[string][]videoResult{}
	for i := range n {
		all[fmt.Sprintf("p%02d", i)] = videoResults(t, w, fmt.Sprintf("p%02d", i))
	}

	t.Run("the whole-file label of >= 90% of the clips is right", func(t *testing.T) {
		correct := 0
		var wrong []string
		for i, c := range clips {
			rs := all[fmt.Sprintf("p%02d", i)]
			last := rs[len(rs)-1].Out
			f := last.File
			want := []uint64{1, 4, 8, 11, 14, 17, 21, 24} // 8 of 24 as the model was trained
			if f == nil || f.Source != videos[i] || f.FramesSeen != frames || f.Kept != frames || f.Length != 8 || !slices.Equal(f.Frames, want) {
				t.Fatalf("%s: the last result's file %+v, want all %d frames of %s with frames %v", c.Dir, f, frames, videos[i], want)
			}
			// The even clip at frame 24 spreads over the same frames: the same label.
			if last.Clip == nil || !slices.Equal(last.Clip.Frames, want) || last.Clip.Label != f.Label {
				t.Fatalf("%s: the clip at frame 24 %+v differs from the whole file's %+v", c.Dir, last.Clip, f)
			}
			if f.Label == c.Label {
				correct++
			} else {
				wrong = append(wrong, fmt.Sprintf("%s: %s %.2f, truth %s", c.Dir, f.Label, f.Score, c.Label))
			}
		}
		acc := float64(correct) / float64(n)
		t.Logf("whole-file accuracy over %d held-out clip videos through edgeinferd: %.3f (%d/%d) in %s; wrong: %v",
			n, acc, correct, n, elapsed.Round(time.Millisecond), wrong)
		if acc < 0.9 {
			t.Errorf("whole-file accuracy %.3f < 0.9", acc)
		}
	})

	t.Run("the CNN runs once per frame delivered", func(t *testing.T) {
		var process []uint64
		for i := range n {
			name := fmt.Sprintf("p%02d", i)
			rs := all[name]
			if len(rs) != frames {
				t.Fatalf("%s: %d results, the video has %d frames", name, len(rs), frames)
			}
			for j, r := range rs {
				seq := uint64(j + 1)
				// Frame j of the file is the sensor's frame seq j+1; the
				// stream's counter is the frames delivered so far.
				if r.Seq != seq || r.Source != fmt.Sprintf("%s#%d", videos[i], j) || r.Sensor != fmt.Sprintf("v%02d", i) {
					t.Fatalf("%s: result %d is seq %d of %q (sensor %s)", name, j, r.Seq, r.Source, r.Sensor)
				}
				if r.Out.FeaturesComputed != seq || r.Out.Buffered != j+1 {
					t.Fatalf("%s: at frame %d features_computed %d, buffered %d: want one CNN run per frame delivered",
						name, seq, r.Out.FeaturesComputed, r.Out.Buffered)
				}
				if (r.Out.Clip != nil) != (seq == frames) || r.Out.File == nil || r.Out.File.FramesSeen != seq {
					t.Fatalf("%s: at frame %d clip %+v, file %+v", name, seq, r.Out.Clip, r.Out.File)
				}
				process = append(process, r.Out.ProcessComputed)
			}
		}
		// One process serves all 30 pipelines: its counter took each value
		// 1..720 exactly once, one per frame of any stream.
		slices.Sort(process)
		for k, v := range process {
			if v != uint64(k+1) {
				t.Fatalf("features_computed_process values sorted: position %d is %d, want %d (each of 1..%d once)", k, v, k+1, n*frames)
			}
		}
		t.Logf("%d frames delivered by %d sensors, %d CNN runs in the plugin process", n*frames, n, process[len(process)-1])
	})
}

// per_second sampling through the daemon takes frames by their capture
// time, which a lossless video file's frames get from the video's own
// clock (the sensor's fps: frame n at n/12 s), however fast they are
// decoded: at 12 frames per second, 4 per second takes every 3rd frame and
// 6 per second every 2nd, ending at the newest.
func TestPerSecondSamplingThroughTheDaemonSpacesClipFramesByTheVideosClock(t *testing.T) {
	const frames = 24
	repo := clipsVideoRepo(t)
	dir, clips := writeHeldOutClips(t, 1)
	video := filepath.Join(dir, "clip.mkv")
	encodeFFV1(t, filepath.Join(dir, clips[0].Dir), frames, video)
	sensor := fmt.Sprintf("[sensors.clip]\nkind = \"ffmpeg\"\ninput = %q\nfps = %d\nwidth = 48\nheight = 48\n", video, videoFPS)
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensor, repo: repo, models: clipsModels, extra: `
[pipelines.four]
sensor = "clip"
model = "clips_video"
[pipelines.four.options]
sampling = "per_second"
fps = 4
stride = 8
[pipelines.six]
sensor = "clip"
model = "clips_video"
[pipelines.six.options]
sampling = "per_second"
fps = 6
stride = 8
`})
	w.serving(t, proc, "clips_video", "four")
	waitFor(t, proc, time.Minute, "a result per frame in both pipelines", func() bool {
		return len(w.all("four/result")) >= frames && len(w.all("six/result")) >= frames
	})
	noPluginTrouble(t, w)

	for _, c := range []struct {
		pipeline string
		want     map[uint64][]uint64 // clip frames at each clip point (every 8 frames)
	}{
		{"four", map[uint64][]uint64{8: {2, 5, 8}, 16: {1, 4, 7, 10, 13, 16}, 24: {3, 6, 9, 12, 15, 18, 21, 24}}},
		{"six", map[uint64][]uint64{8: {2, 4, 6, 8}, 16: {2, 4, 6, 8, 10, 12, 14, 16}, 24: {10, 12, 14, 16, 18, 20, 22, 24}}},
	} {
		rs := videoResults(t, w, c.pipeline)
		if len(rs) != frames {
			t.Fatalf("%s: %d results for %d frames", c.pipeline, len(rs), frames)
		}
		first := rs[0].CapturedAt
		for _, r := range rs {
			// The video's clock: frame seq was captured (seq-1)/12 s after the first.
			at := r.CapturedAt.Sub(first)
			if want := time.Duration(r.Seq-1) * time.Second / videoFPS; (at - want).Abs() > time.Millisecond {
				t.Fatalf("%s: frame %d captured %s after frame 1, want %s (the video's clock at %d fps)", c.pipeline, r.Seq, at, want, videoFPS)
			}
			want, point := c.want[r.Seq]
			switch {
			case !point && r.Out.Clip != nil:
				t.Fatalf("%s: a clip at frame %d, between clip points", c.pipeline, r.Seq)
			case point && (r.Out.Clip == nil || !slices.Equal(r.Out.Clip.Frames, want) || r.Out.Clip.Length != len(want)):
				t.Fatalf("%s: the clip at frame %d is %+v, want frames %v (spaced %d/%s by capture time)",
					c.pipeline, r.Seq, r.Out.Clip, want, videoFPS, c.pipeline)
			case point:
				t.Logf("%s per second: the clip at frame %d takes frames %v (captured %s apart): %s %.2f",
					c.pipeline, r.Seq, r.Out.Clip.Frames, time.Duration(want[1]-want[0])*time.Second/videoFPS, r.Out.Clip.Label, r.Out.Clip.Score)
			}
		}
		last := rs[len(rs)-1].Out.Clip
		if last.Label != clips[0].Label {
			t.Errorf("%s: the last clip says %s, the clip is %s", c.pipeline, last.Label, clips[0].Label)
		}
		if d := rs[len(rs)-1].Result.Timings; d.Total <= 0 {
			t.Fatalf("%s: timings %+v", c.pipeline, d)
		}
	}
}

// A video of 3 frames, shorter than the model's clip of 8, played by the
// file sensor: the clip at its 3rd frame and the whole file are classified
// from its 3 frames (the rest padded and masked by lengths), nothing fails
// and the plugin is not restarted.
func TestAVideoShorterThanAClipIsClassifiedFromItsFramesPadded(t *testing.T) {
	repo := clipsVideoRepo(t)
	dir, clips := writeHeldOutClips(t, 1)
	video := filepath.Join(dir, "short.mkv")
	encodeFFV1(t, filepath.Join(dir, clips[0].Dir), 3, video)
	sensor := fmt.Sprintf("[sensors.short]\nkind = \"file\"\npath = %q\nfps = %d\n", video, videoFPS)
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensor, repo: repo, models: clipsModels, extra: `
[pipelines.short]
sensor = "short"
model = "clips_video"
[pipelines.short.options]
stride = 3
whole_file = true
`})
	w.serving(t, proc, "clips_video", "short")
	waitFor(t, proc, time.Minute, "3 results", func() bool { return len(w.all("short/result")) >= 3 })
	time.Sleep(300 * time.Millisecond) // anything more would arrive now
	noPluginTrouble(t, w)
	if es := w.eventsOf(t, payload.EventSensorFailed); len(es) > 0 {
		t.Fatalf("the short video failed its sensor: %+v", es[0])
	}
	rs := videoResults(t, w, "short")
	if len(rs) != 3 {
		t.Fatalf("%d results for a video of 3 frames", len(rs))
	}
	for i, r := range rs {
		f := r.Out.File
		if r.Seq != uint64(i+1) || r.Out.FeaturesComputed != uint64(i+1) || f == nil || f.Source != video ||
			f.Length != i+1 || f.FramesSeen != uint64(i+1) || (r.Out.Clip != nil) != (i == 2) {
			t.Fatalf("frame %d: %+v, file %+v, clip %+v", i+1, r.Out, f, r.Out.Clip)
		}
	}
	last := rs[2].Out
	want := []uint64{1, 2, 3}
	if last.Clip.Length != 3 || !slices.Equal(last.Clip.Frames, want) || last.File.Length != 3 || !slices.Equal(last.File.Frames, want) || last.File.Kept != 3 {
		t.Fatalf("3-frame video: clip %+v, file %+v, want length 3 of frames %v", last.Clip, last.File, want)
	}
	t.Logf("3-frame video (truth %s): clip of length %d says %s %.2f, whole file %s %.2f",
		clips[0].Label, last.Clip.Length, last.Clip.Label, last.Clip.Score, last.File.Label, last.File.Score)
	if !proc.running() {
		t.Fatal("edgeinferd exited")
	}
}

// An empty video file (played by the file sensor) is a bad_input event
// naming it, a corrupt one (played by the ffmpeg sensor) an ffmpeg_restart
// event each time ffmpeg fails on it, and neither gives a result nor stops
// the daemon: a third pipeline on a good video, played in a loop, keeps
// getting results and right clip labels after the events, and the daemon
// exits 0 when stopped.
func TestAnEmptyOrCorruptVideoFileIsAnEventAndTheDaemonKeepsServingTheOtherPipeline(t *testing.T) {
	const frames = 24
	repo := clipsVideoRepo(t)
	dir, clips := writeHeldOutClips(t, 1)
	good := filepath.Join(dir, "good.mkv")
	encodeFFV1(t, filepath.Join(dir, clips[0].Dir), frames, good)
	empty := filepath.Join(dir, "empty.mkv")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "corrupt.mkv")
	junk := bytes.Repeat([]byte("this is not a video, only bytes that say so. "), 200)
	if err := os.WriteFile(corrupt, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	sensors := fmt.Sprintf(`
[sensors.empty]
kind = "file"
path = %[1]q
fps = %[4]d
[sensors.corrupt]
kind = "ffmpeg"
input = %[2]q
fps = %[4]d
width = 48
height = 48
restart_backoff = "200ms"
max_backoff = "400ms"
[sensors.good]
kind = "file"
path = %[3]q
fps = %[4]d
loop = true
`, empty, corrupt, good, videoFPS)
	var pipelines strings.Builder
	for _, name := range []string{"empty", "corrupt", "good"} {
		fmt.Fprintf(&pipelines, "[pipelines.%[1]s]\nsensor = %[1]q\nmodel = \"clips_video\"\n[pipelines.%[1]s.options]\nwindow = %[2]d\nstride = %[2]d\n", name, frames)
	}
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensors, extra: pipelines.String(), repo: repo, models: clipsModels})
	w.serving(t, proc, "clips_video", "good")
	waitFor(t, proc, time.Minute, "a bad_input for the empty video and 2 ffmpeg_restart for the corrupt one", func() bool {
		bad, restarts := 0, 0
		for _, e := range w.eventsOf(t, payload.EventBadInput) {
			if e.Sensor == "empty" && e.Source == empty {
				bad++
			}
		}
		for _, e := range w.eventsOf(t, "ffmpeg_restart") {
			if e.Sensor == "corrupt" && e.Attrs["input"] == corrupt {
				restarts++
			}
		}
		return bad > 0 && restarts >= 2
	})
	bad := w.eventsOf(t, payload.EventBadInput)[0]
	restart := w.eventsOf(t, "ffmpeg_restart")[0]
	t.Logf("empty video: %s: %s", bad.Type, bad.Message)
	t.Logf("corrupt video: %s: %s", restart.Type, restart.Message)

	// The good pipeline is served on: two whole loops more of its video.
	before := len(w.all("good/result"))
	waitFor(t, proc, time.Minute, "two more loops of the good video", func() bool { return len(w.all("good/result")) >= before+2*frames })
	noPluginTrouble(t, w)
	for _, name := range []string{"empty", "corrupt"} {
		if n := len(w.all(name + "/result")); n != 0 {
			t.Fatalf("%d results for the %s video", n, name)
		}
	}
	rs := videoResults(t, w, "good")
	clipsSeen := 0
	for _, r := range rs {
		if r.Out.FeaturesComputed != r.Seq {
			t.Fatalf("good: frame %d: features_computed %d", r.Seq, r.Out.FeaturesComputed)
		}
		if r.Seq%frames != 0 {
			continue
		}
		// A loop of the video ends at every 24th frame: its clip is the whole clip.
		if r.Out.Clip == nil || r.Out.Clip.Frames[0] != r.Seq-frames+1 || r.Out.Clip.Label != clips[0].Label {
			t.Fatalf("good: the clip at frame %d is %+v, want the loop's frames labelled %s", r.Seq, r.Out.Clip, clips[0].Label)
		}
		clipsSeen++
	}
	t.Logf("good video (%s): %d results, %d clips, all labelled %s, while the other two failed", filepath.Base(good), len(rs), clipsSeen, clips[0].Label)
	if status := w.last("status"); status != "online" {
		t.Fatalf("status %q", status)
	}
	if code := proc.stop(t); code != 0 {
		t.Fatalf("edgeinferd exited %d", code)
	}
}
