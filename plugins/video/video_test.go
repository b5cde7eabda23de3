package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin"
	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin/tfplugintest"
	"github.com/edgeinfer/edgeinfer/plugins/common/topk"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// maxAbsDiff is the largest |a[i] - b[i]|.
func maxAbsDiff[T, U float32 | float64](a []T, b []U) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// streamOf is the state of testPipeline's stream from sensor.
func streamOf(t *testing.T, c *classifier, sensor string) *stream {
	t.Helper()
	st := c.streams[streamKey{testPipeline, sensor}]
	if st == nil {
		t.Fatalf("no stream %s/%s", testPipeline, sensor)
	}
	return st
}

// The features the plugin computes for the golden frames (fed as RGB
// through Infer, normalised by tfplugin) equal golden/features_output_features.npy.
func TestFeaturesOfAFrameEqualTheGoldenFeatures(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"stride": 1000}`)
	frames := goldenFrames(t, c)
	want, shape := tfplugintest.ReadFloats(t, filepath.Join(c.Dir, "golden", "features_output_features.npy"))
	wantIn, _ := tfplugintest.ReadFloats(t, filepath.Join(c.Dir, "golden", "features_input_images.npy"))
	if int(shape[0]) != len(frames) || int(shape[1]) != c.dim {
		t.Fatalf("golden features %v for %d frames of D %d", shape, len(frames), c.dim)
	}
	size := len(wantIn) / len(frames)
	worst, worstIn := 0.0, 0.0
	for i, rgb := range frames {
		infer(t, c, frame("cam", uint64(i+1), 48, 48, rgb))
		x, _ := tfmodels.Data[float32](c.Input())
		worstIn = math.Max(worstIn, maxAbsDiff(x, wantIn[i*size:(i+1)*size]))
		st := streamOf(t, c, "cam")
		worst = math.Max(worst, maxAbsDiff(st.buf.at(st.buf.len()-1).vec, want[i*c.dim:(i+1)*c.dim]))
	}
	t.Logf("%d golden frames: input max |Go - Python| %.3g, features %.3g", len(frames), worstIn, worst)
	if worstIn > 1e-6 || worst > 1e-4 {
		t.Errorf("input differs by %g (want <= 1e-6), features by %g (want <= 1e-4)", worstIn, worst)
	}
}

// The clip signature on the golden features (full clips and clips of 5 and
// 3 frames, padded) gives golden/clip_output_logits.npy.
func TestClipLogitsEqualTheGoldenClipLogits(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), "")
	feats, shape := tfplugintest.ReadFloats(t, filepath.Join(c.Dir, "golden", "clip_input_features.npy"))
	want, _ := tfplugintest.ReadFloats(t, filepath.Join(c.Dir, "golden", "clip_output_logits.npy"))
	lengths := []int{8, 8, 5, 3} // golden/clip_input_lengths.npy (train_video.golden_inputs)
	if shape[0] != 4 || int(shape[1]) != c.n || int(shape[2]) != c.dim {
		t.Fatalf("golden clip features %v", shape)
	}
	labels := len(c.Man.Labels)
	for b, n := range lengths {
		clip := make([]*feature, n)
		for i := range clip {
			off := (b*c.n + i) * c.dim
			clip[i] = &feature{vec: feats[off : off+c.dim]}
		}
		got, err := c.clipLogits(clip)
		if err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(got, want[b*labels:(b+1)*labels]); d > 1e-4 {
			t.Errorf("clip %d (%d frames): logits differ from the golden ones by %g > 1e-4", b, n, d)
		}
	}
}

// A clip of 8 frames through the plugin (CNN per frame, buffered, then the
// clip signature) equals the whole model's serving_default on the same 8
// prepared frames, within 1e-4; the clip names the 8 frames.
func TestPluginClipEqualsServingDefault(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"window": 8, "stride": 8, "top_k": 6}`)
	frames := goldenFrames(t, c)
	whole, err := c.TF().Runner(c.Man.Signature, []string{c.Man.Input.Key, c.Man.Input.LengthsKey}, []string{c.Man.Output.Logits})
	if err != nil {
		t.Fatal(err)
	}
	for clip := range 2 { // golden clips 0 and 1 are full (8 frames)
		var prepared []float32
		var out output
		for i := range c.n {
			seq := uint64(clip*c.n + i + 1)
			out = infer(t, c, frame("cam", seq, 48, 48, frames[clip*c.n+i]))
			x, _ := tfmodels.Data[float32](c.Input())
			prepared = append(prepared, x...)
			if i < c.n-1 && out.Clip != nil {
				t.Fatalf("frame %d is no clip point (stride 8) but has a clip %+v", seq, out.Clip)
			}
		}
		if out.Clip == nil || out.Clip.Length != 8 || len(out.Clip.Top) != 6 {
			t.Fatalf("clip %d: %+v", clip, out.Clip)
		}
		wantFrames := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
		for i := range wantFrames {
			wantFrames[i] += uint64(clip * c.n)
		}
		if !slices.Equal(out.Clip.Frames, wantFrames) {
			t.Errorf("clip %d frames %v, want %v", clip, out.Clip.Frames, wantFrames)
		}
		x, _ := tfmodels.NewTensorOf([]int64{1, int64(c.n), 48, 48, 3}, prepared)
		ln, _ := tfmodels.NewTensorOf([]int64{1}, []int32{int32(c.n)})
		outs, err := whole.Run(x, ln)
		x.Close()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		logits, _ := tfmodels.Data[float32](outs[0])
		probs := topk.Softmax([]float64{float64(logits[0]), float64(logits[1]), float64(logits[2]), float64(logits[3]), float64(logits[4]), float64(logits[5])})
		tfplugin.Free(outs)
		for _, e := range out.Clip.Top {
			if d := math.Abs(float64(e.Score) - probs[e.Index]); d > 1e-4 {
				t.Errorf("clip %d label %s: plugin %v, serving_default %v", clip, e.Label, e.Score, probs[e.Index])
			}
		}
		if out.Clip.Label != out.Clip.Top[0].Label || out.Clip.Class != out.Clip.Top[0].Index || out.Clip.Score != out.Clip.Top[0].Score {
			t.Errorf("clip %d: label/class/score %s/%d/%v are not top[0] %+v", clip, out.Clip.Label, out.Clip.Class, out.Clip.Score, out.Clip.Top[0])
		}
	}
}

// Held-out generated clips, each fed in order as one stream (sensor = the
// clip), classified from the clip at its last frame (8 frames evenly over
// its 24): accuracy >= 0.9. Every stream's CNN ran once per frame.
func TestHeldOutClipAccuracyThroughThePlugin(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"sampling": "even", "window": 24, "stride": 4}`)
	clips := heldOut(t, 60)
	correct, frames := 0, 0
	for _, cl := range clips {
		var out output
		for j, rgb := range cl.frames {
			out = infer(t, c, frame(cl.name, uint64(j+1), 48, 48, rgb))
			frames++
			if (out.Clip != nil) != ((j+1)%4 == 0) {
				t.Fatalf("%s frame %d: clip %+v, want one every 4 frames", cl.name, j+1, out.Clip)
			}
		}
		if out.FeaturesComputed != uint64(len(cl.frames)) || out.ProcessComputed != uint64(frames) {
			t.Errorf("%s: features_computed %d (process %d) after %d frames (%d in all)", cl.name, out.FeaturesComputed, out.ProcessComputed, len(cl.frames), frames)
		}
		if !slices.Equal(out.Clip.Frames, []uint64{1, 4, 8, 11, 14, 17, 21, 24}) {
			t.Errorf("%s: last clip's frames %v, want 8 evenly of 24", cl.name, out.Clip.Frames)
		}
		if out.Clip.Label == cl.label {
			correct++
		}
	}
	acc := float64(correct) / float64(len(clips))
	t.Logf("held-out clips through the plugin: accuracy %.3f (%d/%d), %d frames, %d CNN runs, %d clip runs", acc, correct, len(clips), frames, c.computed, c.clips)
	if acc < 0.9 {
		t.Errorf("accuracy %.3f < 0.9", acc)
	}
	if c.computed != uint64(frames) {
		t.Errorf("the CNN ran %d times for %d frames", c.computed, frames)
	}
}

// The CNN runs exactly once per frame however often the frame is in a
// clip: with a clip at every frame and the whole-file clip too, every frame
// is in up to 16 clips, and the counter still equals the frames fed.
func TestCNNRunsOncePerFrame(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"stride": 1, "whole_file": true}`)
	cl := heldOut(t, 1)[0]
	for j, rgb := range cl.frames {
		f := frame("cam", uint64(j+1), 48, 48, rgb)
		f.Source = "clip.mp4"
		out := infer(t, c, f)
		if out.FeaturesComputed != uint64(j+1) || out.ProcessComputed != uint64(j+1) || out.Clip == nil || out.File == nil {
			t.Fatalf("frame %d: %+v", j+1, out)
		}
	}
	n := uint64(len(cl.frames))
	if c.computed != n || c.clips != 2*n {
		t.Errorf("%d frames: %d CNN runs (want %d), %d clip runs (want %d)", n, c.computed, n, c.clips, 2*n)
	}
}

// even: N frames evenly over the newest window frames; a window shorter
// than N gives a shorter clip (padded, lengths = its frames).
func TestEvenSamplingSpreadsNFramesOverTheWindow(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"window": 16, "stride": 10}`)
	configure(t, c, map[string]string{testPipeline: `{"window": 16, "stride": 10}`, "short": `{"window": 5, "stride": 10}`})
	cl := heldOut(t, 1)[0]
	var out, short output
	for j := range 20 {
		out = infer(t, c, frame("cam", uint64(100+j), 48, 48, cl.frames[j]))
		f := frame("cam", uint64(100+j), 48, 48, cl.frames[j])
		f.Pipeline = "short"
		short = infer(t, c, f)
	}
	// frames 104..119 are the window; round(k * 15 / 7) = 0 2 4 6 9 11 13 15
	if want := []uint64{104, 106, 108, 110, 113, 115, 117, 119}; out.Clip == nil || !slices.Equal(out.Clip.Frames, want) || out.Clip.Length != 8 {
		t.Errorf("window 16: clip %+v, want frames %v", out.Clip, want)
	}
	if want := []uint64{115, 116, 117, 118, 119}; short.Clip == nil || !slices.Equal(short.Clip.Frames, want) || short.Clip.Length != 5 {
		t.Errorf("window 5: clip %+v, want frames %v (padded to 8)", short.Clip, want)
	}
}

// per_second: frames captured every 100 ms (10 fps) sampled at 2 per
// second take every 5th frame, ending at the newest; a 4 fps sampling of a
// 1 fps source takes each frame once (a shorter clip); a gap in capture
// gives no frame for its times, and nothing older than N/fps seconds is taken.
func TestPerSecondSamplingTakesFramesByCaptureTime(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"sampling": "per_second", "fps": 2, "stride": 40}`)
	cl := heldOut(t, 2)
	var out output
	for j := range 40 {
		f := frame("cam", uint64(j+1), 48, 48, cl[j/24].frames[j%24])
		f.Time = t0.Add(time.Duration(j) * 100 * time.Millisecond)
		out = infer(t, c, f)
	}
	if want := []uint64{5, 10, 15, 20, 25, 30, 35, 40}; out.Clip == nil || !slices.Equal(out.Clip.Frames, want) {
		t.Errorf("10 fps sampled at 2 per second: clip %+v, want frames %v", out.Clip, want)
	}

	// by hand on the buffer: 1 fps source at 4 fps; a gap of 3 s
	r := newRing(64)
	for i, s := range []float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10} {
		r.push(feature{seq: uint64(i), time: t0.Add(time.Duration(s * float64(time.Second))), vec: []float32{1}})
	}
	if got := samplePerSecond(&r, 4, 8); !slices.Equal(got, []int{9, 10}) {
		t.Errorf("1 fps at 4 per second over 2 s: ring indices %v, want [9 10]", got)
	}
	r = newRing(64)
	for i, s := range []float64{0, 0.5, 1, 1.5, 2, 5, 5.5, 6} {
		r.push(feature{seq: uint64(i), time: t0.Add(time.Duration(s * float64(time.Second))), vec: []float32{1}})
	}
	if got := samplePerSecond(&r, 2, 8); !slices.Equal(got, []int{5, 6, 7}) {
		t.Errorf("2 per second over 2.5 .. 6 s with a gap from 2 s to 5 s: ring indices %v, want [5 6 7]", got)
	}
	// a source at exactly twice the rate (12 fps, its clock computed as
	// n/12 s, at 6 per second): every 2nd frame, ending at the newest; the
	// oldest frame, half a period after the target before it, is not taken
	// for that target as well as its neighbour for its own
	for _, newest := range []int{7, 8} {
		r = newRing(64)
		for i := range newest + 1 {
			r.push(feature{seq: uint64(i + 1), time: t0.Add(time.Duration(float64(i) / 12 * float64(time.Second))), vec: []float32{1}})
		}
		var seqs []uint64
		for _, i := range samplePerSecond(&r, 6, 8) {
			seqs = append(seqs, r.at(i).seq)
		}
		want := map[int][]uint64{7: {2, 4, 6, 8}, 8: {1, 3, 5, 7, 9}}[newest]
		if !slices.Equal(seqs, want) {
			t.Errorf("12 fps at 6 per second, frames 1..%d: %v, want %v", newest+1, seqs, want)
		}
	}
	if got := samplePerSecond(&ring{}, 2, 8); got != nil {
		t.Errorf("empty buffer: %v", got)
	}

	// a frame without a capture time cannot be sampled per second
	_, err := c.Infer(context.Background(), frame("cam", 41, 48, 48, cl[0].frames[0]))
	if !errors.Is(err, sdk.ErrBadFrame) || !strings.Contains(err.Error(), "no capture time") {
		t.Errorf("frame without Time: %v", err)
	}
}

// scene: 20 held-out clips fed one after the other as one stream: the
// scene changes exactly at each clip's first frame (the default threshold),
// and the clip at each clip's last frame holds only that clip's frames.
func TestSceneSamplingCutsBetweenClips(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"sampling": "scene", "stride": 24}`)
	clips := heldOut(t, 20)
	seq, correct := uint64(0), 0
	for i, cl := range clips {
		var out output
		for j, rgb := range cl.frames {
			seq++
			out = infer(t, c, frame("cam", seq, 48, 48, rgb))
			if out.Scene == nil || *out.Scene != i {
				t.Fatalf("%s frame %d (seq %d): scene %v, want %d", cl.name, j, seq, out.Scene, i)
			}
		}
		first := seq - uint64(len(cl.frames)) + 1
		if out.Clip == nil || out.Clip.Scene == nil || *out.Clip.Scene != i || out.Clip.Frames[0] != first || out.Clip.Frames[7] != seq {
			t.Fatalf("%s: clip %+v, want scene %d over frames %d..%d", cl.name, out.Clip, i, first, seq)
		}
		if out.Clip.Label == cl.label {
			correct++
		}
	}
	t.Logf("scene clips: %d/%d labelled right", correct, len(clips))
	if correct < 18 {
		t.Errorf("%d of %d scene clips labelled right", correct, len(clips))
	}

	// by hand: the scene's frames only, N evenly; a scene longer than the buffer
	r := newRing(10)
	for i := range 14 {
		r.push(feature{seq: uint64(i), scene: min(i/6, 1)})
	}
	if got := sampleScene(&r, 8); !slices.Equal(got, []int{2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Errorf("scene of frames 6..13 in a ring of 10: %v", got)
	}
}

// whole_file: every result carries the classification of N frames spread
// over all frames of its source so far; a new source starts over, so the
// last result of each file is the whole file's label.
func TestWholeFileClassifiesAllFramesOfTheSource(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"whole_file": true, "stride": 1000}`)
	clips := heldOut(t, 2)
	seq := uint64(0)
	for _, cl := range clips {
		var out output
		for j, rgb := range cl.frames {
			seq++
			f := frame("cam", seq, 48, 48, rgb)
			f.Source = "videos/" + cl.name + ".mp4"
			out = infer(t, c, f)
			if out.File == nil || out.File.FramesSeen != uint64(j+1) || out.File.Length != min(j+1, 8) {
				t.Fatalf("%s frame %d: file %+v", cl.name, j, out.File)
			}
		}
		first := seq - 23
		want := []uint64{first, first + 3, first + 7, first + 10, first + 13, first + 16, first + 20, first + 23}
		if out.File.Source != "videos/"+cl.name+".mp4" || !slices.Equal(out.File.Frames, want) || out.File.Label != cl.label || out.File.Kept != 24 {
			t.Errorf("%s: last file result %+v, want frames %v and label %s", cl.name, out.File, want, cl.label)
		}
	}
}

// A source's feature vectors stay bounded by file_frames: past it, every
// other one is dropped, so what is kept stays evenly spread over the file,
// and the newest frame always ends the file's clip.
func TestWholeFileBufferIsBoundedAndEven(t *testing.T) {
	var ff fileFeatures
	for i := range 1000 {
		ff.add("a.mp4", feature{seq: uint64(i), vec: []float32{float32(i)}}, 10)
		if len(ff.kept) > 10 {
			t.Fatalf("after %d frames %d kept > 10", i+1, len(ff.kept))
		}
	}
	for i, f := range ff.kept {
		if f.seq != uint64(i)*ff.step {
			t.Fatalf("kept[%d] is frame %d, want %d (every %d-th)", i, f.seq, uint64(i)*ff.step, ff.step)
		}
	}
	s := ff.sample(8)
	if len(s) != 8 || s[0].seq != 0 || s[7].seq != 999 || s[7].vec[0] != 999 {
		t.Errorf("sample of 1000 frames kept every %d: first %d, last %d", ff.step, s[0].seq, s[len(s)-1].seq)
	}
	ff.add("b.mp4", feature{seq: 5000, vec: []float32{1}}, 10)
	if ff.seen != 1 || len(ff.kept) != 1 || ff.source != "b.mp4" {
		t.Errorf("a new source did not start over: %+v", ff)
	}
}

// The sensors name a video's frames "<path>#<n>" (ffmpeg, file) and MQTT
// messages "<topic>#<seq>": whole_file groups the frames by the file, so
// every frame of a video is in its file's clip (a Source per frame would
// start over at every frame, and the last result would be one frame's
// label). A file played again (its numbers start over) starts over too.
func TestWholeFileGroupsASensorsNumberedFramesByTheirFile(t *testing.T) {
	for source, want := range map[string]struct {
		file string
		n    int64
	}{
		"/v/clip.mkv#0": {"/v/clip.mkv", 0}, "/v/clip.mkv#23": {"/v/clip.mkv", 23}, "a#b.mkv#7": {"a#b.mkv", 7},
		"/in/digit-001.png": {"/in/digit-001.png", -1}, "x#": {"x#", -1}, "x#-1": {"x#-1", -1}, "x#+1": {"x#+1", -1}, "x#1a": {"x#1a", -1},
	} {
		if file, n := sourceFile(source); file != want.file || n != want.n {
			t.Errorf("sourceFile(%q) = %q, %d, want %q, %d", source, file, n, want.file, want.n)
		}
	}

	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"whole_file": true, "stride": 1000}`)
	clips := heldOut(t, 2)
	seq := uint64(0)
	play := func(cl heldOutClip, path string, frames int) output {
		var out output
		for j := range frames {
			seq++
			f := frame("cam", seq, 48, 48, cl.frames[j])
			f.Source = fmt.Sprintf("%s#%d", path, j)
			out = infer(t, c, f)
			if out.File == nil || out.File.Source != path || out.File.FramesSeen != uint64(j+1) || out.File.Length != min(j+1, 8) {
				t.Fatalf("%s frame %d: file %+v", path, j, out.File)
			}
		}
		return out
	}
	for _, cl := range clips {
		out := play(cl, "/videos/"+cl.name+".mkv", 24)
		first := seq - 23
		want := []uint64{first, first + 3, first + 7, first + 10, first + 13, first + 16, first + 20, first + 23}
		if !slices.Equal(out.File.Frames, want) || out.File.Label != cl.label || out.File.Kept != 24 {
			t.Errorf("%s: last file result %+v, want frames %v and label %s", cl.name, out.File, want, cl.label)
		}
	}
	// The same file again (a restarted ffmpeg): its frame 0 starts over.
	if out := play(clips[1], "/videos/"+clips[1].name+".mkv", 3); out.File.Frames[0] != seq-2 {
		t.Errorf("a replay of the file kept the previous play's frames: %+v", out.File)
	}
}

// Each model version is its own process, so a new version starts with
// empty buffers: its first clip uses only frames it computed itself, never
// features of the version before.
func TestANewVersionsFirstClipUsesOnlyItsOwnFrames(t *testing.T) {
	dir := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video")
	cl := heldOut(t, 2)
	old := load(t, dir, `{"stride": 1}`)
	for j := range 20 {
		infer(t, old, frame("cam", uint64(j+1), 48, 48, cl[0].frames[j]))
	}
	fresh := load(t, dir, `{"stride": 1}`)
	for j := range 3 {
		seq := uint64(21 + j)
		out := infer(t, fresh, frame("cam", seq, 48, 48, cl[1].frames[j]))
		if out.Buffered != j+1 || out.FeaturesComputed != uint64(j+1) || out.Clip == nil || out.Clip.Length != j+1 || out.Clip.Frames[0] != 21 {
			t.Fatalf("fresh plugin, frame %d: %+v (clip %+v), want only frames 21..%d", seq, out, out.Clip, seq)
		}
	}
}

// A stream shorter than N is classified from what it has (padded, masked
// by lengths), and that equals serving_default on the same frames with the
// same length; a clip of no frames is never run (no clip).
func TestShortStreamsArePaddedAndEmptyClipsAreNotRun(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"stride": 1, "top_k": 6}`)
	frames := goldenFrames(t, c)
	want, _ := tfplugintest.ReadFloats(t, filepath.Join(c.Dir, "golden", "output_logits.npy"))
	var out output
	for i := range 3 { // golden clip 3: its first 3 frames, length 3
		out = infer(t, c, frame("cam", uint64(i+1), 48, 48, frames[3*c.n+i]))
	}
	if out.Clip == nil || out.Clip.Length != 3 || !slices.Equal(out.Clip.Frames, []uint64{1, 2, 3}) {
		t.Fatalf("3-frame stream: clip %+v", out.Clip)
	}
	probs := topk.Softmax([]float64{float64(want[18]), float64(want[19]), float64(want[20]), float64(want[21]), float64(want[22]), float64(want[23])})
	for _, e := range out.Clip.Top {
		if d := math.Abs(float64(e.Score) - probs[e.Index]); d > 1e-4 {
			t.Errorf("label %s: %v, golden serving_default (length 3) %v", e.Label, e.Score, probs[e.Index])
		}
	}
	runs := c.clips
	if res, err := c.classify(nil, 3); res != nil || err != nil || c.clips != runs {
		t.Errorf("empty clip: %+v, %v, %d clip runs (was %d)", res, err, c.clips, runs)
	}
	if _, err := c.clipLogits(nil); err == nil || !strings.Contains(err.Error(), "clip of 0 frames") {
		t.Errorf("clipLogits of no frames: %v", err)
	}
}

// Features holding NaN are refused naming the frame, and not buffered: a
// manifest whose scale overflows float32 makes the CNN's input infinite.
func TestNaNFeaturesAreRefusedNamingTheFrame(t *testing.T) {
	dir := tfplugintest.EditedCopy(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `s/^scale = .*/scale = 1e38/`)
	c := load(t, dir, `{"stride": 1}`)
	black := infer(t, c, frame("cam", 1, 48, 48, make([]byte, 48*48*3))) // 0 * 1e38: finite
	if black.Clip == nil {
		t.Fatalf("black frame: %+v", black)
	}
	cl := heldOut(t, 1)[0]
	f := frame("cam", 7, 48, 48, cl.frames[0])
	f.Source = "cam.mp4"
	_, err := c.Infer(context.Background(), f)
	if err == nil || !strings.Contains(err.Error(), "frame 7") || !strings.Contains(err.Error(), "NaN") || !strings.Contains(err.Error(), "not buffered") {
		t.Fatalf("NaN features: %v", err)
	}
	if st := streamOf(t, c, "cam"); st.buf.len() != 1 || st.computed != 2 {
		t.Errorf("after the NaN frame: %d buffered (want 1), %d computed (want 2)", st.buf.len(), st.computed)
	}
	if err := checkFinite([]float32{1, float32(math.Inf(1)), 2}); err == nil || !strings.Contains(err.Error(), "1 of 3 values are NaN or infinite (the first, [1], is +Inf)") {
		t.Errorf("checkFinite: %v", err)
	}
}

// Frames whose pixels do not match their size are sdk.ErrBadFrame; the
// plugin then still serves.
func TestBadFramesAreErrBadFrame(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), "")
	tfplugintest.CheckBadFrames(t, c, testPipeline)
	out := infer(t, c, frame("cam", 1, 64, 40, make([]byte, 64*40*3)))
	if out.FeaturesComputed != 1 {
		t.Errorf("a 64x40 frame (resized) after the bad ones: %+v", out)
	}
}

// Models the plugin cannot serve are refused at Load, naming why: a video
// model without the [video] table (the zoo's video_lstm, one frames ->
// logits signature) names the missing field.
func TestLoadRefusesModelsItCannotServe(t *testing.T) {
	clips := tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video")
	for _, tc := range []struct{ name, dir, want string }{
		{"video_lstm has no features signature", tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "video_lstm"), "video.features_signature is missing: the video plugin runs the frame CNN once per frame"},
		{"classify model", tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "lenet5"), `task is "classify", this plugin serves video`},
		{"unknown features signature", tfplugintest.EditedCopy(t, clips, `s/^features_signature = .*/features_signature = "feats"/`), `"feats"`},
		{"features output is the clip's", tfplugintest.EditedCopy(t, clips, `s/^features_output = .*/features_output = "logits"/`), `"logits"`},
		{"lengths fed as features", tfplugintest.EditedCopy(t, tfplugintest.EditedCopy(t, clips, `s/^clip_features = .*/clip_features = "lengths"/`),
			`s/^clip_lengths = .*/clip_lengths = "features"/`), `input is lengths int32`},
		{"frames differ from the clip signature", tfplugintest.EditedCopy(t, clips, `s/^frames = .*/frames = 6/`), "want float32 [batch, 6, 36] (video.clip_features"},
		{"more labels than logits", tfplugintest.EditedCopy(t, clips, `s/"shrink"]/"shrink", "spin"]/`), "want float32 [batch, 7] (video.clip_logits"},
		{"input size differs", tfplugintest.EditedCopy(t, clips, `s/^height = .*/height = 32/`), "edgeinfer.toml says float32 [batch, 32, 48, 3]"},
		{"half a video table", tfplugintest.EditedCopy(t, clips, `s/^clip_logits = .*//`), "video.clip_logits is required when [video] is given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClassifier()
			defer c.Close()
			_, err := c.Load(context.Background(), sdk.LoadRequest{ModelDir: tc.dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
}

// Options are checked and named; defaults follow the model's N.
func TestOptionsAreCheckedAndNamed(t *testing.T) {
	man := manifest.Manifest{Labels: []string{"a", "b", "c"}, Input: manifest.Input{Frames: 8}}
	o, err := parseOptions(nil, man)
	if err != nil || o != (options{Sampling: "even", Stride: 4, Window: 24, FPS: 4, SceneThreshold: 0.003, Buffer: 256, TopK: 3, FileFrames: 4096}) {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	if o, err := parseOptions(json.RawMessage(`{"buffer": 10}`), man); err != nil || o.Window != 10 {
		t.Errorf("window defaults to at most the buffer: %+v, %v", o, err)
	}
	for _, tc := range []struct{ js, want string }{
		{`{"sampling": "random"}`, `sampling is "random", must be even, per_second or scene`},
		{`{"stride": -1}`, "stride is -1, must be >= 1"},
		{`{"buffer": 4}`, "buffer is 4, must be 8 (input.frames) .. 100000"},
		{`{"window": 300}`, "window is 300, must be 1 .. buffer (256)"},
		{`{"sampling": "per_second", "fps": -2}`, "fps is -2, must be > 0"},
		{`{"sampling": "scene", "scene_threshold": 3}`, "scene_threshold is 3, must be in (0, 2]"},
		{`{"fps": 2}`, `fps is for sampling "per_second", sampling is "even"`},
		{`{"sampling": "scene", "window": 8}`, `window is for sampling "even", sampling is "scene"`},
		{`{"scene_threshold": 0.1}`, `scene_threshold is for sampling "scene"`},
		{`{"file_frames": 100}`, "file_frames is for whole_file = true"},
		{`{"whole_file": true, "file_frames": 3}`, "file_frames is 3, must be 8 (input.frames) .. 1000000"},
		{`{"top_k": 4}`, "top_k is 4, must be 1..3"},
		{`{"stide": 4}`, `unknown field "stide"`},
	} {
		if _, err := parseOptions(json.RawMessage(tc.js), man); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.js, err, tc.want)
		}
	}
}

// Configure names a bad pipeline and changes nothing; a pipeline dropped
// takes its streams with it, and a smaller buffer keeps the newest features.
func TestConfigureDropsStreamsOfPipelinesGone(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), `{"stride": 100}`)
	configure(t, c, map[string]string{testPipeline: `{"stride": 100}`, "other": `{}`})
	cl := heldOut(t, 1)[0]
	for j := range 12 {
		infer(t, c, frame("cam", uint64(j+1), 48, 48, cl.frames[j]))
		f := frame("cam", uint64(j+1), 48, 48, cl.frames[j])
		f.Pipeline = "other"
		if _, err := c.Infer(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Configure(context.Background(), map[string]json.RawMessage{testPipeline: json.RawMessage(`{"stride": 0.5}`)})
	if err == nil || !strings.Contains(err.Error(), "pipeline p:") || len(c.streams) != 2 {
		t.Fatalf("bad Configure: %v, %d streams", err, len(c.streams))
	}
	configure(t, c, map[string]string{testPipeline: `{"buffer": 8, "window": 8}`})
	if _, ok := c.streams[streamKey{"other", "cam"}]; ok || len(c.streams) != 1 {
		t.Errorf("streams after dropping pipeline other: %v", c.streams)
	}
	st := streamOf(t, c, "cam")
	if st.buf.len() != 8 || st.buf.at(0).seq != 5 || st.buf.at(7).seq != 12 || st.computed != 12 {
		t.Errorf("buffer 8 keeps frames %d..%d (%d), computed %d", st.buf.at(0).seq, st.buf.at(st.buf.len()-1).seq, st.buf.len(), st.computed)
	}
}

// The ring keeps the newest entries in order and reuses its vectors.
func TestRingKeepsTheNewest(t *testing.T) {
	r := newRing(3)
	for i := range 5 {
		r.push(feature{seq: uint64(i), vec: []float32{float32(i)}})
	}
	if r.len() != 3 || r.at(0).seq != 2 || r.at(2).seq != 4 || r.at(0).vec[0] != 2 || r.at(2).vec[0] != 4 {
		t.Errorf("ring: %+v", r)
	}
	if got := evenly(24, 8); !slices.Equal(got, []int{0, 3, 7, 10, 13, 16, 20, 23}) {
		t.Errorf("evenly(24, 8) = %v, want train_video's even8", got)
	}
	if got := evenly(5, 1); !slices.Equal(got, []int{4}) {
		t.Errorf("evenly(5, 1) = %v", got)
	}
}

// Validate runs the golden samples (serving_default: the same weights as
// the features and clip signatures).
func TestValidatePassesOnTheExport(t *testing.T) {
	c := load(t, tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video"), "")
	v, err := c.Validate(context.Background())
	if err != nil || v.Samples != 4 {
		t.Errorf("Validate: %+v, %v", v, err)
	}
}

// sample.conf is what the binary embeds, and its options are valid for the
// model it names.
func TestSampleConfIsEmbeddedAndValid(t *testing.T) {
	b, err := os.ReadFile("sample.conf")
	if err != nil || string(b) != sampleConfig {
		t.Fatalf("embedded sample.conf differs from the file (%v)", err)
	}
	tfplugintest.CheckSampleConf(t, map[string]string{"clips_video": tfplugintest.ModelDir(t, "EDGEINFER_MODELS", "clips_video")},
		func(raw json.RawMessage, man manifest.Manifest) error {
			_, err := parseOptions(raw, man)
			return err
		})
}
