package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// modelRepo is the exported tiny zoo; make test sets EDGEINFER_MODELS.
func modelRepo(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEINFER_MODELS")
	if dir == "" {
		t.Fatal("EDGEINFER_MODELS is not set: point it at the exported model repository (make test does)")
	}
	return dir
}

// Every model version in the repository has a manifest that reads strictly
// and validates.
func TestEveryExportedManifestReadsAndValidates(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(modelRepo(t), "*", "*", File))
	if err != nil {
		t.Fatal(err)
	}
	// The real models edgeinfer-import wrote (make models-real), where made.
	if real := os.Getenv("EDGEINFER_REAL_MODELS"); real != "" {
		more, _ := filepath.Glob(filepath.Join(real, "*", "*", File))
		dirs = append(dirs, more...)
	}
	if len(dirs) == 0 {
		t.Fatalf("no */*/%s under %s: run `make models`", File, modelRepo(t))
	}
	tasks := map[string]bool{}
	for _, p := range dirs {
		dir := filepath.Dir(p)
		m, err := Read(dir)
		if err != nil {
			t.Errorf("Read: %v", err)
			continue
		}
		if err := m.Validate(); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
		tasks[m.Task] = true
	}
	for _, task := range Tasks {
		if !tasks[task] && task != TaskRaw { // raw: imports only
			t.Errorf("no exported model has task %q: the repository should cover every task", task)
		}
	}
}

func TestReadDecodesEveryTable(t *testing.T) {
	m, err := Read(filepath.Join(modelRepo(t), "yolov3", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Task != TaskDetectYOLO || m.Input.Height != 96 || m.Input.Resize != "letterbox" ||
		len(m.Output.Grids) != 3 || m.Output.Strides[2] != 32 || len(m.Output.Anchors) != 18 || m.Output.Anchors[1] != 3 {
		t.Errorf("yolov3 manifest decoded as %+v", m)
	}
	m, err = Read(filepath.Join(modelRepo(t), "video_lstm", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Input.Frames != 8 || m.Input.LengthsKey != "lengths" || !m.Output.Softmax || len(m.Input.Mean) != 3 {
		t.Errorf("video_lstm manifest decoded as %+v", m)
	}
}

func TestReadNamesAMissingFile(t *testing.T) {
	dir := t.TempDir()
	_, err := Read(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, File)) {
		t.Errorf("Read of an empty dir: %v", err)
	}
}

// Each broken manifest is an exported one with one edit; its error names
// the field (and, for decoding errors, the file).
func TestBrokenManifestsNameTheirProblem(t *testing.T) {
	repo := modelRepo(t)
	for _, tc := range []struct {
		name, model, from, to, want string
	}{
		{"unknown top-level key", "lenet5", `variant = "tiny"`, "variant = \"tiny\"\ncolour = \"red\"", "unknown key colour"},
		{"unknown input key", "lenet5", "height = 32", "height = 32\nheigth = 32", "unknown key input.heigth"},
		{"unknown output key", "lenet5", "softmax = true", "softmax = true\nsoftmx = true", "unknown key output.softmx"},
		{"wrong type", "lenet5", "height = 32", `height = "32"`, "input.height"},
		{"unknown task", "lenet5", `task = "classify"`, `task = "x"`, `task "x" is not one of classify, detect_yolo, detect_rcnn, detect_rows, detect_anchorfree, segment, embed, siamese, video, raw`},
		{"variant", "lenet5", `variant = "tiny"`, `variant = "small"`, `variant "small" is not tiny or full`},
		{"no signature", "lenet5", `signature = "serving_default"`, "", "signature is required"},
		{"no labels", "lenet5", `labels = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]`, "", `labels are required for task "classify"`},
		{"empty label", "lenet5", `"3", "4"`, `"", "4"`, "labels[3] is empty"},
		{"no input key", "lenet5", `key = "images"`, "", "input.key is required"},
		{"negative height", "lenet5", "height = 32", "height = -1", "input.height must be >= 0"},
		{"one size zero", "lenet5", "width = 32", "width = 0", "input.height is 32 and input.width 0"},
		{"channels", "lenet5", "channels = 1", "channels = 2", "input.channels must be 1 or 3, got 2"},
		{"layout", "lenet5", `layout = "NHWC"`, `layout = "NCHW"`, `input.layout "NCHW" is not NHWC`},
		{"dtype", "lenet5", `dtype = "float32"`, `dtype = "uint8"`, `input.dtype "uint8" is not float32`},
		{"resize", "lenet5", `resize = "stretch"`, `resize = "crop"`, `input.resize "crop" is not stretch or letterbox`},
		{"letterbox any size", "vgg16_fcn", `resize = "stretch"`, `resize = "letterbox"`, `input.resize "letterbox" needs input.height and input.width > 0`},
		{"no scale", "lenet5", "scale = 0.00392156862745098", "", "input.scale must be > 0"},
		{"negative batch", "lenet5", `dtype = "float32"`, "dtype = \"float32\"\nbatch = -1", "input.batch must be >= 0 (0: any), got -1"},
		{"negative tolerance", "lenet5", `[input]`, "[validation]\ntolerance = -0.1\n[input]", "validation.tolerance must be >= 0, got -0.1"},
		{"mean count", "resnet50", "mean = [0.485, 0.456, 0.406]", "mean = [0.485, 0.456]", "input.mean has 2 values, input.channels is 3"},
		{"std count", "lenet5", "std = [1.0]", "std = []", "input.std has 0 values, input.channels is 1"},
		{"std zero", "resnet50", "std = [0.229, 0.224, 0.225]", "std = [0.229, 0.0, 0.225]", "input.std[1] must be > 0"},
		{"no logits", "lenet5", `logits = "logits"`, "", "output.logits is required for task classify"},
		{"no pair key", "siamese", `pair_key = "right"`, "", "input.pair_key is required for task siamese"},
		{"no pair embedding", "siamese", `pair_embedding = "embedding_right"`, "", "output.pair_embedding is required for task siamese"},
		{"video frames", "video_lstm", "frames = 8", "frames = 0", "input.frames must be > 0 for task video"},
		{"video lengths", "video_lstm", `lengths_key = "lengths"`, "", "input.lengths_key is required for task video"},
		{"video table on another task", "lenet5", `[input]`, "[video]\nfeatures_signature = \"f\"\n[input]", `[video] is for task video, task is "classify"`},
		{"video table incomplete", "video_lstm", `[input]`, "[video]\nclip_signature = \"clip\"\n[input]", "video.features_signature is required when [video] is given"},
		{"unknown video key", "video_lstm", `[input]`, "[video]\nclip = \"clip\"\n[input]", "unknown key video.clip"},
		{"embed dim", "facenet", "dim = 128", "", "output.dim must be > 0 for task embed"},
		{"rcnn outputs", "faster_rcnn", `num_detections = "num_detections"`, "", "output.num_detections is required for task detect_rcnn"},
		{"rcnn label offset", "faster_rcnn", "label_offset = 1", "label_offset = -1", "output.label_offset must be >= 0"},
		{"yolo grids", "yolov3", `grids = ["grid_s8", "grid_s16", "grid_s32"]`, "", "output.grids is required for task detect_yolo"},
		{"yolo strides", "yolov3", "strides = [8, 16, 32]", "strides = [8, 16]", "output.strides has 2 values, output.grids 3"},
		{"yolo anchors", "yolov3", "anchors = [2, 3,", "anchors = [3,", "output.anchors must hold (w, h) pairs, got 17 values"},
		{"yolo anchor mask", "yolov3", "anchor_masks = [0, 1, 2, 3, 4, 5, 6, 7, 8]", "anchor_masks = [0, 1, 2, 3, 4, 5, 6, 7, 9]", "output.anchor_masks[8] is 9, output.anchors holds 9 anchors"},
		{"yolo mask count", "yolov3", "anchor_masks = [0, 1, 2, 3, 4, 5, 6, 7, 8]", "anchor_masks = [0, 1, 2, 3, 4, 5, 6, 7]", "output.anchor_masks has 8 values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(repo, tc.model, "1", File))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(src), tc.from) {
				t.Fatalf("%s's manifest has no %q", tc.model, tc.from)
			}
			dir := t.TempDir()
			path := filepath.Join(dir, File)
			if err := os.WriteFile(path, []byte(strings.Replace(string(src), tc.from, tc.to, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := Read(dir)
			if err == nil {
				err = m.Validate()
			} else if !strings.Contains(err.Error(), path) {
				t.Errorf("decoding error does not name the file %s: %v", path, err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v\nwant one containing %q", err, tc.want)
			}
		})
	}
}

// Validate reports every problem at once, not just the first.
func TestValidateReportsEveryProblem(t *testing.T) {
	m := Manifest{Task: TaskClassify, Labels: []string{"a"}, Input: Input{Channels: 3, Layout: "NHWC", DType: "float32", Resize: "stretch", Scale: 1, Mean: []float64{0}, Std: []float64{1, 1, 1}}}
	err := m.Validate()
	if err == nil {
		t.Fatal("an incomplete manifest validated")
	}
	for _, want := range []string{"signature is required", "input.key is required", "input.mean has 1 values, input.channels is 3", "output.logits is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// The [video] table is optional; Missing names the first field not set, in
// the order the README lists them.
func TestVideoTableNamesItsMissingField(t *testing.T) {
	full := Video{FeaturesSignature: "features", FeaturesInput: "images", FeaturesOutput: "features",
		ClipSignature: "clip", ClipFeatures: "features", ClipLengths: "lengths", ClipLogits: "logits"}
	if f := full.Missing(); f != "" {
		t.Errorf("a full table misses %s", f)
	}
	if f := (Video{}).Missing(); f != "video.features_signature" {
		t.Errorf("an empty table misses %s", f)
	}
	part := full
	part.ClipLengths = ""
	if f := part.Missing(); f != "video.clip_lengths" {
		t.Errorf("no clip_lengths: %s", f)
	}
	if errs := (Video{}).validate(TaskVideo); errs != nil {
		t.Errorf("no table is valid (the plugin decides whether it needs one): %v", errs)
	}
	m, err := Read(filepath.Join(modelRepo(t), "clips_video", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Video != full {
		t.Errorf("clips_video's [video] decoded as %+v, want %+v", m.Video, full)
	}
}

// The daemon starts edgeinfer-<Plugin(task)>: the detection tasks share
// edgeinfer-detect, every other task has its own binary (video:
// edgeinfer-video).
func TestPluginNamesTheBinaryOfEachTask(t *testing.T) {
	for task, want := range map[string]string{TaskClassify: "classify", TaskDetectYOLO: "detect", TaskDetectRCNN: "detect",
		TaskDetectRows: "detect", TaskDetectAnchorFree: "detect", TaskSegment: "segment", TaskEmbed: "embed", TaskVideo: "video"} {
		if got := Plugin(task); got != want {
			t.Errorf("Plugin(%q) = %q, want %q", task, got, want)
		}
	}
}
