package crop

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

func det(label string, score, x1, y1, x2, y2 float64) map[string]any {
	return map[string]any{"label": label, "score": score, "box": map[string]float64{"x1": x1, "y1": y1, "x2": x2, "y2": y2}}
}

func output(dets ...map[string]any) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"detections": dets})
	return b
}

// Choose on a 100x50 frame: which detections become crops, in which order,
// cut where.
func TestChooseTakesTheDetectionsTheTableAsksFor(t *testing.T) {
	all := Config{MinSize: 1, MaxCrops: 10}
	with := func(f func(*Config)) Config { c := all; f(&c); return c }
	cases := []struct {
		name string
		cfg  Config
		out  json.RawMessage
		want []string // "index rect" in order
		// left out
		tooSmall, overMax, bad int
	}{
		{"a box as it is, its fractions widened to whole pixels", all,
			output(det("a", 0.9, 10.5, 5.2, 20.1, 15)),
			[]string{"0 {10 5 21 15}"}, 0, 0, 0},
		{"the margin widens each side by its fraction of the box", with(func(c *Config) { c.Margin = 0.2 }),
			output(det("a", 0.9, 40, 20, 50, 30)),
			[]string{"0 {38 18 52 32}"}, 0, 0, 0},
		{"the margin is clipped at every edge of the frame", with(func(c *Config) { c.Margin = 0.5 }),
			output(det("a", 0.9, 2, 1, 12, 11), det("b", 0.8, 90, 40, 100, 50)),
			[]string{"0 {0 0 17 16}", "1 {85 35 100 50}"}, 0, 0, 0},
		{"a box outside the frame clips to nothing: too small", all,
			output(det("a", 0.9, 120, 60, 130, 70)), nil, 1, 0, 0},
		{"min_size applies after the margin, to either side", with(func(c *Config) { c.MinSize = 12; c.Margin = 0.1 }),
			output(det("wide", 0.9, 0, 0, 40, 10), det("ok", 0.8, 50, 10, 60, 20), det("tall", 0.7, 72, 0, 80, 40)),
			[]string{"1 {49 9 61 21}"}, 2, 0, 0},
		{"only the classes asked for", with(func(c *Config) { c.Classes = []string{"circle", "square"} }),
			output(det("circle", 0.5, 0, 0, 10, 10), det("triangle", 0.9, 0, 0, 10, 10), det("square", 0.6, 0, 0, 10, 10)),
			[]string{"2 {0 0 10 10}", "0 {0 0 10 10}"}, 0, 0, 0},
		{"no classes: all", all,
			output(det("circle", 0.5, 0, 0, 10, 10), det("triangle", 0.9, 0, 0, 10, 10)),
			[]string{"1 {0 0 10 10}", "0 {0 0 10 10}"}, 0, 0, 0},
		{"min_score leaves out the weaker, an equal score is in", with(func(c *Config) { c.MinScore = 0.5 }),
			output(det("a", 0.49, 0, 0, 10, 10), det("a", 0.5, 0, 0, 10, 10)),
			[]string{"1 {0 0 10 10}"}, 0, 0, 0},
		{"max_crops keeps the best scores, the earlier on a tie", with(func(c *Config) { c.MaxCrops = 2 }),
			output(det("a", 0.3, 0, 0, 10, 10), det("a", 0.7, 0, 0, 10, 10), det("a", 0.9, 0, 0, 10, 10), det("a", 0.7, 1, 1, 10, 10)),
			[]string{"2 {0 0 10 10}", "1 {0 0 10 10}"}, 0, 2, 0},
		{"too small ones do not take a place under max_crops", with(func(c *Config) { c.MaxCrops = 1; c.MinSize = 5 }),
			output(det("a", 0.9, 0, 0, 2, 2), det("a", 0.5, 0, 0, 10, 10)),
			[]string{"1 {0 0 10 10}"}, 1, 0, 0},
		{"an inverted box is bad, the others are cut", all,
			output(det("a", 0.9, 20, 0, 10, 10), det("a", 0.5, 0, 0, 10, 10)),
			[]string{"1 {0 0 10 10}"}, 0, 0, 1},
		{"a result without detections gives none", all, json.RawMessage(`{"top":[{"label":"x"}]}`), nil, 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := Choose(tc.cfg, tc.out, 100, 50)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range ch.Crops {
				got = append(got, fmt.Sprintf("%d %v", c.Index, c.Rect))
			}
			if !slices.Equal(got, tc.want) || ch.TooSmall != tc.tooSmall || ch.OverMax != tc.overMax || len(ch.Bad) != tc.bad {
				t.Fatalf("crops %q, too small %d, over max %d, bad %v\nwant %q, %d, %d, %d bad", got, ch.TooSmall, ch.OverMax, ch.Bad,
					tc.want, tc.tooSmall, tc.overMax, tc.bad)
			}
		})
	}
}

func TestChooseKeepsWhatTheDetectionSaid(t *testing.T) {
	ch, err := Choose(Config{MinSize: 1, MaxCrops: 1},
		json.RawMessage(`{"detections":[{"label":"square","class":2,"score":0.75,"box":{"x1":1,"y1":2,"x2":8,"y2":9},"track_id":7}]}`), 10, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := payload.Detection{Label: "square", Class: 2, Score: 0.75, Box: payload.Box{X1: 1, Y1: 2, X2: 8, Y2: 9}, TrackID: 7}
	if len(ch.Crops) != 1 || ch.Crops[0].Det != want {
		t.Fatalf("crops %+v, want the detection %+v", ch.Crops, want)
	}
}

func TestAResultThatIsNotAnObjectIsAnError(t *testing.T) {
	if _, err := Choose(Config{MaxCrops: 1}, json.RawMessage(`[1,2]`), 10, 10); err == nil {
		t.Fatal("no error")
	}
}

// Cut copies the rectangle's rows out of the frame, pixel for pixel.
func TestCutCopiesTheRectanglesPixels(t *testing.T) {
	const w, h = 5, 4
	rgb := make([]byte, w*h*3)
	for i := range rgb {
		rgb[i] = byte(i)
	}
	r := payload.Rect{X1: 1, Y1: 2, X2: 4, Y2: 4}
	got := Cut(rgb, w, r)
	var want []byte
	for y := 2; y < 4; y++ {
		for x := 1; x < 4; x++ {
			p := (y*w + x) * 3
			want = append(want, rgb[p], rgb[p+1], rgb[p+2])
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("cut %v, want %v", got, want)
	}
	got[0] = 255
	if rgb[(2*w+1)*3] == 255 {
		t.Fatal("the crop shares the frame's memory")
	}
}
