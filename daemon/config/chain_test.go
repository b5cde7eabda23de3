package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// manifestOf is an edgeinfer.toml as the zoo exports it, of task with
// labels and outputs (TOML lines of the [output] table).
func manifestOf(task, labels, outputs string) string {
	return `task = "` + task + `"
signature = "serving_default"
labels = ` + labels + `
[input]
key = "images"
height = 96
width = 96
channels = 3
layout = "NHWC"
dtype = "float32"
resize = "stretch"
scale = 0.00392156862745098
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
[output]
` + outputs
}

// chained is the valid config with a detector pipeline "shapes" on the
// inbox and a pipeline "seg" fed by its detections; the repository holds
// both models and lenet5 (no manifest yet).
func chained(t *testing.T) string {
	t.Helper()
	repo, plugins, inbox := fixture(t)
	for model, m := range map[string]string{
		"detector": manifestOf("detect_rcnn", `["circle", "square", "triangle"]`,
			"boxes = \"detection_boxes\"\nscores = \"detection_scores\"\nclasses = \"detection_classes\"\nnum_detections = \"num_detections\"\n"),
		"segmenter": manifestOf("segment", `["background", "circle"]`, "logits = \"logits\"\n"),
	} {
		dir := filepath.Join(repo, model, "1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "edgeinfer.toml"), []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return valid(repo, plugins, inbox) + `
[pipelines.shapes]
sensor = "inbox"
model = "detector"

[pipelines.seg]
from = "shapes"
model = "segmenter"
[pipelines.seg.crop]
classes = ["circle", "square"]
min_score = 0.5
margin = 0.2
min_size = 32
max_crops = 4
`
}

func TestAPipelineFedByAnotherIsReadWithItsCropTable(t *testing.T) {
	base := chained(t)
	c, err := Parse("config.toml", base)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pipelines["seg"]
	want := Crop{Classes: []string{"circle", "square"}, MinScore: 0.5, Margin: 0.2, MinSize: 32, MaxCrops: 4}
	if p.From != "shapes" || p.Sensor != "" || p.Crop == nil || !reflect.DeepEqual(*p.Crop, want) {
		t.Fatalf("pipeline %+v crop %+v", p, p.Crop)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("warnings %q", c.Warnings)
	}
	// Without a crop table: every detection, the defaults.
	c, err = Parse("config.toml", base[:strings.Index(base, "[pipelines.seg.crop]")])
	if err != nil {
		t.Fatal(err)
	}
	if got := *c.Pipelines["seg"].Crop; !reflect.DeepEqual(got, Crop{MinSize: 8, MaxCrops: 10}) {
		t.Fatalf("default crop %+v", got)
	}
	if cc := CropConfig(c.Pipelines["seg"].Crop); cc.MinSize != 8 || cc.MaxCrops != 10 || cc.Classes != nil {
		t.Fatalf("crop config %+v", cc)
	}
}

func TestEachKindOfInvalidChainHasItsOwnMessage(t *testing.T) {
	base := chained(t)
	swap := func(old, new string) func(string) string {
		return func(s string) string { return strings.Replace(s, old, new, 1) }
	}
	refuses(t, base, []invalid{
		{"both sensor and from", swap(`from = "shapes"`, "from = \"shapes\"\nsensor = \"inbox\""),
			"26: pipelines.seg.from: set sensor or from, not both"},
		{"neither sensor nor from", func(s string) string {
			return strings.Replace(s[:strings.Index(s, "[pipelines.seg.crop]")], `from = "shapes"`, "", 1)
		},
			`25: pipelines.seg.sensor: required (or from = "<pipeline>", to take crops of another pipeline's detections)`},
		{"from an unknown pipeline", swap(`from = "shapes"`, `from = "people"`),
			`26: pipelines.seg.from: pipeline "people" is not defined; defined: digits, shapes`},
		{"from itself", swap(`from = "shapes"`, `from = "seg"`),
			"26: pipelines.seg.from: pipelines feed each other in a cycle: seg <- seg"},
		{"a cycle of two", swap("[pipelines.shapes]\nsensor = \"inbox\"", "[pipelines.shapes]\nfrom = \"seg\""),
			"26: pipelines.seg.from: pipelines feed each other in a cycle: seg <- shapes <- seg"},
		{"from a pipeline that does not detect", appended("\n[pipelines.seg2]\nfrom = \"seg\"\nmodel = \"segmenter\"\n"),
			`36: pipelines.seg2.from: pipeline "seg" runs model segmenter, whose task segment makes no detections to crop (a detect_* task does)`},
		{"a crop table without from", appended("[pipelines.digits.crop]\nmargin = 0.1\n"),
			`34: pipelines.digits.crop: only for a pipeline fed by another (from = "<pipeline>")`},
		{"min_score over 1", swap("min_score = 0.5", "min_score = 1.5"), "30: pipelines.seg.crop.min_score: must be in [0, 1], got 1.5"},
		{"a negative margin", swap("margin = 0.2", "margin = -0.1"), "31: pipelines.seg.crop.margin: must be in [0, 10] (a fraction of the box's side), got -0.1"},
		{"min_size 0", swap("min_size = 32", "min_size = 0"), "32: pipelines.seg.crop.min_size: must be >= 1, got 0"},
		{"max_crops 0", swap("max_crops = 4", "max_crops = 0"), "33: pipelines.seg.crop.max_crops: must be >= 1, got 0"},
		{"an empty class", swap(`classes = ["circle", "square"]`, `classes = ["circle", ""]`), "29: pipelines.seg.crop.classes: class 1 is empty"},
		{"a class the detector does not know", swap(`classes = ["circle", "square"]`, `classes = ["circle", "person"]`),
			`29: pipelines.seg.crop.classes: "person" is not a label of model detector; its labels: circle, square, triangle`},
		{"an unknown crop key", swap("margin = 0.2", "margins = 0.2"), "31: pipelines.seg.crop.margins: unknown key"},
		{"classes not a list", swap(`classes = ["circle", "square"]`, `classes = "circle"`),
			"29: pipelines.seg.crop.classes: incompatible types: TOML value has type string; destination has type slice"},
	})
}

// A chain of two steps is allowed when the middle pipeline detects; an
// upstream model whose task cannot be told yet (no manifest) is a warning.
func TestChainsOfDetectorsAreAllowedAndAnUnknownTaskIsAWarning(t *testing.T) {
	base := chained(t)
	c, err := Parse("config.toml", base+"\n[pipelines.parts]\nfrom = \"shapes\"\nmodel = \"detector\"\n[pipelines.partparts]\nfrom = \"parts\"\nmodel = \"segmenter\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Pipelines["partparts"].From != "parts" || len(c.Warnings) != 0 {
		t.Fatalf("pipelines %+v, warnings %q", c.Pipelines, c.Warnings)
	}
	c, err = Parse("config.toml", base+"\n[pipelines.fromdigits]\nfrom = \"digits\"\nmodel = \"segmenter\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "config.toml:36: pipelines.fromdigits.from: cannot tell yet whether model lenet5 of pipeline digits detects: ") {
		t.Fatalf("warnings %q", c.Warnings)
	}
}

// A reload adds, removes and changes pipelines fed by others as it does
// sensors' pipelines; the crop defaults written out change nothing.
func TestDiffNamesTheChainedPipelinesAReloadChanges(t *testing.T) {
	base := chained(t)
	diffs(t, base, []reload{
		{"a crop value: that pipeline", func(s string) string { return strings.Replace(s, "margin = 0.2", "margin = 0.3", 1) },
			Changes{Pipelines: Delta{Changed: []string{"seg"}}}},
		{"from another pipeline: that pipeline", func(s string) string {
			return strings.Replace(s, `from = "shapes"`, `from = "shapes2"`, 1) + "\n[pipelines.shapes2]\nsensor = \"inbox\"\nmodel = \"detector\"\n"
		}, Changes{Pipelines: Delta{Added: []string{"shapes2"}, Changed: []string{"seg"}}}},
		{"a chained pipeline added", appended("\n[pipelines.seg2]\nfrom = \"shapes\"\nmodel = \"segmenter\"\n"),
			Changes{Pipelines: Delta{Added: []string{"seg2"}}}},
		{"a chained pipeline removed", func(s string) string { return s[:strings.Index(s, "[pipelines.seg]")] },
			Changes{Pipelines: Delta{Removed: []string{"seg"}}}},
		{"from a sensor instead", func(s string) string {
			return strings.Replace(s[:strings.Index(s, "[pipelines.seg.crop]")], `from = "shapes"`, `sensor = "inbox"`, 1)
		}, Changes{Pipelines: Delta{Changed: []string{"seg"}}}},
	})
	// Against a config with its crop table left out, the defaults written
	// out change nothing.
	bare, err := Parse("config.toml", base[:strings.Index(base, "[pipelines.seg.crop]")])
	if err != nil {
		t.Fatal(err)
	}
	written, err := Parse("config.toml", base[:strings.Index(base, "[pipelines.seg.crop]")]+"[pipelines.seg.crop]\nmin_size = 8\nmax_crops = 10\n")
	if err != nil {
		t.Fatal(err)
	}
	if ch := Diff(bare, written); !ch.Empty() {
		t.Fatalf("the defaults written out: %+v", ch)
	}
}
