// Package snapshot draws a result onto the frame it came from — boxes and
// labels of detections, masks tinted in their class's colour, the label of
// a classification, clip or identity — and encodes it as a JPEG for
// <prefix>/<pipeline>/snapshot ([pipelines.<name>.snapshot]). Snapshots
// are rate-limited per pipeline, as Frigate's are, and drawn off the
// pipeline's goroutine: a pipeline never waits for one.
package snapshot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"sync"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/edgeinfer/edgeinfer/plugins/common/masks"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// Palette colours classes by their index (class % len): well apart from
// each other, readable under white text.
var Palette = []color.RGBA{
	{230, 25, 75, 255}, {60, 180, 75, 255}, {0, 130, 200, 255}, {245, 130, 48, 255},
	{145, 30, 180, 255}, {70, 150, 150, 255}, {240, 50, 230, 255}, {128, 128, 0, 255},
	{0, 0, 128, 255}, {170, 110, 40, 255}, {128, 0, 0, 255}, {0, 128, 128, 255},
}

// Tint is how much of a mask pixel is its class's colour.
const Tint = 0.45

// Snapshots renders and publishes one pipeline's snapshots, at most one
// per Interval. It is safe for concurrent use.
type Snapshots struct {
	Interval time.Duration
	Quality  int               // JPEG quality, 1..100
	Publish  func(jpeg []byte) // called from the drawing goroutine
	Failed   func(err error)   // a result that could not be drawn
	mu       sync.Mutex
	next     time.Time // no snapshot before
	busy     bool      // one is being drawn
}

// Offer takes a result for a snapshot when Interval has passed since the
// last one taken and none is being drawn; it copies rgb (w x h, packed
// RGB) and draws on a goroutine of its own. It reports whether it took it.
func (s *Snapshots) Offer(now time.Time, task string, output json.RawMessage, w, h int, rgb []byte) bool {
	s.mu.Lock()
	if s.busy || now.Before(s.next) {
		s.mu.Unlock()
		return false
	}
	s.busy, s.next = true, now.Add(s.Interval)
	s.mu.Unlock()
	pix := bytes.Clone(rgb)
	go func() {
		defer func() { s.mu.Lock(); s.busy = false; s.mu.Unlock() }()
		b, err := Render(pix, w, h, task, output, s.Quality)
		if err != nil {
			if s.Failed != nil {
				s.Failed(err)
			}
			return
		}
		s.Publish(b)
	}()
	return true
}

// Render draws output on the w x h packed RGB frame and encodes it as a
// JPEG of the given quality.
func Render(rgb []byte, w, h int, task string, output json.RawMessage, quality int) ([]byte, error) {
	if len(rgb) != w*h*3 {
		return nil, fmt.Errorf("snapshot: %d bytes for a %dx%d frame", len(rgb), w, h)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i, j := 0, 0; i < len(rgb); i, j = i+3, j+4 {
		img.Pix[j], img.Pix[j+1], img.Pix[j+2], img.Pix[j+3] = rgb[i], rgb[i+1], rgb[i+2], 255
	}
	if err := Draw(img, task, output); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: quality}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

type box struct{ X1, Y1, X2, Y2 float64 }

// Draw draws a task's output on img: detections (masks tinted, then boxes
// and "label score #track" tags), segment classes (masks tinted, a tag at
// each class's box), or the label of a classification, clip or identity at
// the top left.
func Draw(img *image.RGBA, task string, output json.RawMessage) error {
	switch {
	case manifest.Plugin(task) == "detect":
		var o struct {
			Detections []struct {
				Label   string       `json:"label"`
				Class   int          `json:"class"`
				Score   float64      `json:"score"`
				Box     box          `json:"box"`
				Mask    *masks.RLE   `json:"mask"`
				TrackID *json.Number `json:"track_id"`
			} `json:"detections"`
		}
		if err := json.Unmarshal(output, &o); err != nil {
			return fmt.Errorf("snapshot: detect output: %w", err)
		}
		for _, d := range o.Detections {
			if d.Mask != nil {
				if err := tint(img, *d.Mask, colour(d.Class)); err != nil {
					return err
				}
			}
		}
		for _, d := range o.Detections {
			tag := fmt.Sprintf("%s %.2f", d.Label, d.Score)
			if d.TrackID != nil {
				tag += " #" + d.TrackID.String()
			}
			rectangle(img, d.Box, colour(d.Class))
			label(img, int(d.Box.X1), int(d.Box.Y1), tag, colour(d.Class))
		}
	case task == "segment":
		var o struct {
			Classes []struct {
				Label string    `json:"label"`
				Class int       `json:"class"`
				Share float64   `json:"share"`
				Box   box       `json:"box"`
				Mask  masks.RLE `json:"mask"`
			} `json:"classes"`
		}
		if err := json.Unmarshal(output, &o); err != nil {
			return fmt.Errorf("snapshot: segment output: %w", err)
		}
		for _, c := range o.Classes {
			if c.Mask.Counts != "" {
				if err := tint(img, c.Mask, colour(c.Class)); err != nil {
					return err
				}
			}
			label(img, int(c.Box.X1), int(c.Box.Y1), fmt.Sprintf("%s %.0f%%", c.Label, 100*c.Share), colour(c.Class))
		}
	default:
		tag, err := headline(task, output)
		if err != nil {
			return err
		}
		if tag != "" {
			label(img, 0, 0, tag, Palette[0])
		}
	}
	return nil
}

// headline is the one line a classification, a clip or an identity says.
func headline(task string, output json.RawMessage) (string, error) {
	type scored struct {
		Label string  `json:"label"`
		Score float64 `json:"score"`
	}
	switch task {
	case "classify":
		var o struct{ Top []scored }
		if err := json.Unmarshal(output, &o); err != nil {
			return "", fmt.Errorf("snapshot: classify output: %w", err)
		}
		if len(o.Top) > 0 {
			return fmt.Sprintf("%s %.2f", o.Top[0].Label, o.Top[0].Score), nil
		}
	case "video":
		var o struct{ Clip *scored }
		if err := json.Unmarshal(output, &o); err != nil {
			return "", fmt.Errorf("snapshot: video output: %w", err)
		}
		if o.Clip != nil {
			return fmt.Sprintf("%s %.2f", o.Clip.Label, o.Clip.Score), nil
		}
	case "embed", "siamese":
		var o struct {
			Identity *string
			Distance *float64
			Cluster  *struct{ ID int }
		}
		if err := json.Unmarshal(output, &o); err != nil {
			return "", fmt.Errorf("snapshot: embed output: %w", err)
		}
		switch {
		case o.Identity != nil && o.Distance != nil:
			return fmt.Sprintf("%s %.3f", *o.Identity, *o.Distance), nil
		case o.Cluster != nil:
			return fmt.Sprintf("unknown #%d", o.Cluster.ID), nil
		}
		return "unknown", nil
	default:
		return "", fmt.Errorf("snapshot: task %q cannot be drawn", task)
	}
	return "", nil
}

func colour(class int) color.RGBA { return Palette[((class%len(Palette))+len(Palette))%len(Palette)] }

// tint blends c into the pixels of img the mask covers.
func tint(img *image.RGBA, r masks.RLE, c color.RGBA) error {
	b := img.Bounds()
	if r.Size != [2]int{b.Dy(), b.Dx()} {
		return fmt.Errorf("snapshot: a mask of %dx%d on a %dx%d frame", r.Size[1], r.Size[0], b.Dx(), b.Dy())
	}
	m, err := masks.Decode(r)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	cs := [3]float64{float64(c.R), float64(c.G), float64(c.B)}
	for i, on := range m {
		if !on {
			continue
		}
		p := img.Pix[4*i : 4*i+3]
		for k := range p {
			p[k] = uint8(float64(p[k])*(1-Tint) + cs[k]*Tint + 0.5)
		}
	}
	return nil
}

// rectangle draws b's outline, 2 pixels wide, inside the frame.
func rectangle(img *image.RGBA, b box, c color.RGBA) {
	r := image.Rect(int(b.X1), int(b.Y1), int(b.X2+0.5), int(b.Y2+0.5)).Intersect(img.Bounds())
	if r.Empty() {
		return
	}
	for _, edge := range []image.Rectangle{
		image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+2), image.Rect(r.Min.X, r.Max.Y-2, r.Max.X, r.Max.Y),
		image.Rect(r.Min.X, r.Min.Y, r.Min.X+2, r.Max.Y), image.Rect(r.Max.X-2, r.Min.Y, r.Max.X, r.Max.Y),
	} {
		fill(img, edge.Intersect(r), c)
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// face is the 7x13 fixed font the tags are written in.
var face = basicfont.Face7x13

// label writes text in white on a c-coloured tag whose top left is at
// (x, y), moved inside the frame where it would leave it.
func label(img *image.RGBA, x, y int, text string, c color.RGBA) {
	w, h := font.MeasureString(face, text).Ceil()+4, face.Height+2
	b := img.Bounds()
	x = max(b.Min.X, min(x, b.Max.X-w))
	y = max(b.Min.Y, min(y, b.Max.Y-h))
	fill(img, image.Rect(x, y, x+w, y+h).Intersect(b), c)
	d := font.Drawer{Dst: img, Src: image.NewUniform(color.White), Face: face,
		Dot: fixed.P(x+2, y+1+face.Ascent)}
	d.DrawString(text)
}
