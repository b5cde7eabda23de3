package snapshot

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"strings"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
)

const fw, fh = 96, 64

func grey() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, fw, fh))
	for i := range img.Pix {
		img.Pix[i] = 100
		if i%4 == 3 {
			img.Pix[i] = 255
		}
	}
	return img
}

// rle is the mask of the rectangle [x1, x2) x [y1, y2) of the frame.
func rle(x1, y1, x2, y2 int) masks.RLE {
	m := make([]bool, fw*fh)
	for y := y1; y < y2; y++ {
		for x := x1; x < x2; x++ {
			m[y*fw+x] = true
		}
	}
	return masks.Encode(m, fw, fh)
}

func at(img *image.RGBA, x, y int) color.RGBA { return img.RGBAAt(x, y) }

var plain = color.RGBA{100, 100, 100, 255}

func tinted(c color.RGBA) color.RGBA {
	f := func(v uint8) uint8 { return uint8(100*(1-Tint) + float64(v)*Tint + 0.5) }
	return color.RGBA{f(c.R), f(c.G), f(c.B), 255}
}

// tagged reports whether the w x h area at (x, y) is a tag of colour c
// with white text in it.
func tagged(img *image.RGBA, x, y, w, h int, c color.RGBA) bool {
	white := 0
	for yy := y; yy < y+h; yy++ {
		for xx := x; xx < x+w; xx++ {
			switch at(img, xx, yy) {
			case c:
			case color.RGBA{255, 255, 255, 255}:
				white++
			default:
				return false
			}
		}
	}
	return white > 0
}

func TestADetectionGetsItsBoxItsTintedMaskAndATagInItsClassColour(t *testing.T) {
	img := grey()
	out, _ := json.Marshal(map[string]any{"detections": []map[string]any{{
		"label": "tri", "class": 2, "score": 0.93, "track_id": 7,
		"box":  map[string]float64{"x1": 10, "y1": 20, "x2": 60, "y2": 50},
		"mask": rle(30, 35, 50, 45),
	}}})
	if err := Draw(img, "detect_rcnn", out); err != nil {
		t.Fatal(err)
	}
	c := Palette[2]
	for _, p := range []image.Point{{10, 40}, {11, 40}, {59, 40}, {30, 49}} { // left, right and bottom edges
		if got := at(img, p.X, p.Y); got != c {
			t.Errorf("box edge %v = %v, want %v", p, got, c)
		}
	}
	if got := at(img, 40, 40); got != tinted(c) {
		t.Errorf("mask pixel = %v, want %v", got, tinted(c))
	}
	for _, p := range []image.Point{{20, 40}, {80, 10}, {12, 40}, {40, 47}} { // in the box off the mask, outside, beside the edges
		if got := at(img, p.X, p.Y); got != plain {
			t.Errorf("pixel %v = %v, want it untouched", p, got)
		}
	}
	// "tri 0.93 #7": 11 characters of 7 px + 4, 15 px high, at the box's corner.
	if !tagged(img, 10, 20, 11*7+4, 15, c) {
		t.Errorf("no tag in the class colour with white text at the box's corner")
	}
}

func TestSegmentClassesAreTintedAndTaggedAndHeadlinesGoTopLeft(t *testing.T) {
	img := grey()
	out, _ := json.Marshal(map[string]any{"classes": []map[string]any{{
		"label": "dot", "class": 3, "share": 0.03, "box": map[string]float64{"x1": 70, "y1": 50, "x2": 80, "y2": 60},
		"mask": rle(70, 50, 80, 60),
	}}})
	if err := Draw(img, "segment", out); err != nil {
		t.Fatal(err)
	}
	if got := at(img, 75, 62-3); got != tinted(Palette[3]) && got != Palette[3] && got != (color.RGBA{255, 255, 255, 255}) {
		t.Errorf("class pixel = %v", got)
	}
	if got := at(img, 72, 45); got != plain {
		t.Errorf("pixel above the class = %v", got)
	}
	// "dot 3%": the tag moved left and up to stay inside the frame.
	if !tagged(img, fw-(6*7+4), fh-15, 6*7+4, 15, Palette[3]) {
		t.Errorf("no tag for the class")
	}

	for _, tc := range []struct{ task, output, text string }{
		{"classify", `{"top": [{"label": "7", "index": 7, "score": 0.98}]}`, "7 0.98"},
		{"video", `{"clip": {"label": "left", "score": 0.5}}`, "left 0.50"},
		{"embed", `{"identity": "alice", "distance": 0.25}`, "alice 0.250"},
		{"embed", `{"identity": null, "distance": null, "cluster": {"id": 4}}`, "unknown #4"},
	} {
		img := grey()
		if err := Draw(img, tc.task, json.RawMessage(tc.output)); err != nil {
			t.Fatal(err)
		}
		if !tagged(img, 0, 0, len(tc.text)*7+4, 15, Palette[0]) || at(img, len(tc.text)*7+4, 0) != plain {
			t.Errorf("%s %s: no tag of %q at the top left", tc.task, tc.output, tc.text)
		}
	}
	img = grey()
	if err := Draw(img, "video", json.RawMessage(`{"features_computed": 3}`)); err != nil || at(img, 1, 1) != plain {
		t.Errorf("a video frame without a clip: %v, pixel %v", err, at(img, 1, 1))
	}
}

func TestWhatCannotBeDrawnIsAnError(t *testing.T) {
	small := masks.Encode(make([]bool, 4), 2, 2)
	bad, _ := json.Marshal(map[string]any{"detections": []map[string]any{{"label": "x", "box": map[string]float64{}, "mask": small}}})
	for _, tc := range []struct{ task, output, want string }{
		{"detect", string(bad), "a mask of 2x2 on a 96x64 frame"},
		{"detect", `{"detections": 5}`, "detect output"},
		{"sort", `{}`, `task "sort" cannot be drawn`},
	} {
		if err := Draw(grey(), tc.task, json.RawMessage(tc.output)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v, want %q", tc.task, tc.output, err, tc.want)
		}
	}
	if _, err := Render(make([]byte, 10), fw, fh, "classify", nil, 80); err == nil {
		t.Error("a frame of the wrong size was rendered")
	}
}

func TestSnapshotsAreJPEGsAtMostOnePerIntervalAndNeverQueued(t *testing.T) {
	published := make(chan []byte)
	s := &Snapshots{Interval: time.Second, Quality: 80, Publish: func(b []byte) { published <- b }}
	rgb := bytes.Repeat([]byte{100}, fw*fh*3)
	out := json.RawMessage(`{"top": [{"label": "7", "score": 0.98}]}`)
	t0 := time.Now()
	if !s.Offer(t0, "classify", out, fw, fh, rgb) {
		t.Fatal("the first result was not taken")
	}
	// While it is drawn and published, and within the interval, none is taken.
	if s.Offer(t0.Add(2*time.Second), "classify", out, fw, fh, rgb) {
		t.Fatal("a result was taken while one was being published")
	}
	b := <-published
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds().Dx() != fw || img.Bounds().Dy() != fh {
		t.Fatalf("snapshot: %v, %v", err, img)
	}
	time.Sleep(10 * time.Millisecond) // the goroutine marks itself done after Publish
	if s.Offer(t0.Add(999*time.Millisecond), "classify", out, fw, fh, rgb) {
		t.Fatal("a result within the interval was taken")
	}
	if !s.Offer(t0.Add(time.Second), "classify", out, fw, fh, rgb) {
		t.Fatal("a result after the interval was not taken")
	}
	<-published
}
