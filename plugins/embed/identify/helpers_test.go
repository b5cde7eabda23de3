package identify

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// meanColour is the fake model of these tests: an image's embedding is
// its mean colour (R, G, B in [0, 1]), so a black image is a zero vector.
// A 1-pixel-wide image is refused and a 2-pixel-wide one gives NaN.
type meanColour struct {
	calls atomic.Int64
	// permute, if set, reorders the channels: another "model version".
	permute bool
}

func (m *meanColour) Embed(img image.Image) ([]float32, error) {
	m.calls.Add(1)
	b := img.Bounds()
	switch b.Dx() {
	case 1:
		return nil, errors.New("image too small")
	case 2:
		return []float32{float32(math.NaN()), 0, 0}, nil
	}
	var sum [3]float64
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			sum[0] += float64(r) / 0xffff
			sum[1] += float64(g) / 0xffff
			sum[2] += float64(bl) / 0xffff
		}
	}
	n := float64(b.Dx() * b.Dy())
	e := []float32{float32(sum[0] / n), float32(sum[1] / n), float32(sum[2] / n)}
	if m.permute {
		e[0], e[1], e[2] = e[2], e[0], e[1]
	}
	return e, nil
}

// uniform is a w x 4 image of one colour.
func uniform(w int, c color.RGBA) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, 4))
	for y := range 4 {
		for x := range w {
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jpegBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// embedOf is what meanColour gives for img, for probes.
func embedOf(t testing.TB, img image.Image) []float32 {
	t.Helper()
	e, err := (&meanColour{}).Embed(img)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// testGallery builds a gallery from 2-D or 3-D vectors (normalised here).
func testGallery(t testing.TB, pos, neg map[string][][]float64, thresholds map[string]float64) *Gallery {
	t.Helper()
	g := &Gallery{dir: "/gallery", identities: map[string]*galleryIdentity{}, thresholds: thresholds}
	unitAll := func(vs [][]float64) [][]float64 {
		var out [][]float64
		for _, v := range vs {
			u := clone(v)
			if err := normalise(u); err != nil {
				t.Fatal(err)
			}
			g.dim = len(u)
			out = append(out, u)
		}
		return out
	}
	for name, vs := range pos {
		g.identities[name] = &galleryIdentity{positives: unitAll(vs), negatives: unitAll(neg[name])}
	}
	return g
}

func newTestIdentifier(t testing.TB, opts Options) *Identifier {
	t.Helper()
	if opts.Threshold == 0 {
		opts.Threshold = 0.7
	}
	if opts.ClusterThreshold == 0 {
		opts.ClusterThreshold = 0.7
	}
	if opts.Exemplars == 0 {
		opts.Exemplars = 4
	}
	if opts.StateDir != "" && opts.Space == "" {
		opts.Space = "mean-colour@1"
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	id, problems, err := Open(opts, &meanColour{})
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	return id
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func nearVec(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !near(a[i], b[i]) {
			return false
		}
	}
	return true
}

func colorRGBA(r, g, b uint8) color.RGBA { return color.RGBA{r, g, b, 255} }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
