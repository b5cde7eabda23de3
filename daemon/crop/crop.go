// Package crop turns the detections of an upstream pipeline's result into
// the frames of a pipeline fed by it ([pipelines.<name>] from): it chooses
// detections (classes, min_score), widens each box by the margin, clips it
// to the frame, leaves out those under min_size, keeps the best max_crops
// by score and copies their pixels out. It is pure; daemon/router delivers
// what it makes.
package crop

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// Config is a pipeline's [pipelines.<name>.crop] table, defaults applied.
type Config struct {
	Classes  []string // labels to crop; empty: all
	MinScore float64  // detections scoring less are not cropped
	Margin   float64  // fraction of the box's width (height) added left and right (above and below)
	MinSize  int      // crops narrower or lower than this (after the margin and clipping) are left out
	MaxCrops int      // per upstream frame, best score first
}

// Crop is one detection to cut out.
type Crop struct {
	Index int // in the result's output.detections
	Det   payload.Detection
	Rect  payload.Rect // the box with the margin, clipped to the frame, in whole pixels
}

// Choice is what Choose took from one result and what it left out.
type Choice struct {
	Crops    []Crop // best score first (the lower index first on a tie)
	TooSmall int    // chosen by class and score, but under MinSize
	OverMax  int    // beyond MaxCrops
	// Bad holds one error per chosen detection whose box is inverted,
	// naming its index.
	Bad []error
}

// Choose reads output.detections of a result on a width x height frame and
// returns the crops cfg takes. An output without detections gives none;
// one that is not a JSON object with a detections array is an error.
func Choose(cfg Config, output json.RawMessage, width, height int) (Choice, error) {
	var res struct {
		Detections []payload.Detection `json:"detections"`
	}
	if err := json.Unmarshal(output, &res); err != nil {
		return Choice{}, fmt.Errorf("crop: the upstream result's detections: %w", err)
	}
	var ch Choice
	for i, d := range res.Detections {
		if len(cfg.Classes) > 0 && !slices.Contains(cfg.Classes, d.Label) || d.Score < cfg.MinScore {
			continue
		}
		b := d.Box
		if b.X2 < b.X1 || b.Y2 < b.Y1 { // JSON has no NaN or infinity
			ch.Bad = append(ch.Bad, fmt.Errorf("detection %d: box %+v is inverted", i, b))
			continue
		}
		r := Widen(b, cfg.Margin, width, height)
		if r.Dx() < max(cfg.MinSize, 1) || r.Dy() < max(cfg.MinSize, 1) {
			ch.TooSmall++
			continue
		}
		ch.Crops = append(ch.Crops, Crop{Index: i, Det: d, Rect: r})
	}
	slices.SortStableFunc(ch.Crops, func(a, b Crop) int { return cmp.Compare(b.Det.Score, a.Det.Score) })
	if len(ch.Crops) > cfg.MaxCrops {
		ch.OverMax = len(ch.Crops) - cfg.MaxCrops
		ch.Crops = ch.Crops[:cfg.MaxCrops]
	}
	return ch, nil
}

// Widen adds margin times the box's width on the left and on the right
// (its height above and below), takes the whole pixels it touches and
// clips them to the frame.
func Widen(b payload.Box, margin float64, width, height int) payload.Rect {
	mx, my := margin*(b.X2-b.X1), margin*(b.Y2-b.Y1)
	clip := func(v float64, hi int) int { return int(min(max(v, 0), float64(hi))) }
	return payload.Rect{
		X1: clip(math.Floor(b.X1-mx), width), Y1: clip(math.Floor(b.Y1-my), height),
		X2: clip(math.Ceil(b.X2+mx), width), Y2: clip(math.Ceil(b.Y2+my), height),
	}
}

// Cut copies the rectangle r out of an RGB frame width pixels wide.
func Cut(rgb []byte, width int, r payload.Rect) []byte {
	out := make([]byte, 0, r.Dx()*r.Dy()*3)
	for y := r.Y1; y < r.Y2; y++ {
		row := (y*width + r.X1) * 3
		out = append(out, rgb[row:row+r.Dx()*3]...)
	}
	return out
}
