package sensors

import (
	"bytes"
	"errors"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

// fuzzLimits are smaller than the defaults, so that the fuzzer meets every
// limit often and spends no time on large images.
var fuzzLimits = Limits{MaxBytes: 1 << 20, MaxPixels: 1 << 16, MinSide: 8}

// FuzzDecodeImage feeds arbitrary bytes to DecodeImage: each is refused
// with an ErrBadImage, or becomes packed RGB of an image within the
// limits, never a panic; a refused input gives no pixels.
func FuzzDecodeImage(f *testing.F) {
	src := gradient(16, 12)
	for _, enc := range []func(*bytes.Buffer) error{
		func(b *bytes.Buffer) error { return png.Encode(b, src) },
		func(b *bytes.Buffer) error { return jpeg.Encode(b, src, &jpeg.Options{Quality: 75}) },
		func(b *bytes.Buffer) error { return gif.Encode(b, src, nil) },
		func(b *bytes.Buffer) error { return bmp.Encode(b, src) },
		func(b *bytes.Buffer) error { return tiff.Encode(b, src, nil) },
		func(b *bytes.Buffer) error {
			return tiff.Encode(b, src, &tiff.Options{Compression: tiff.Deflate, Predictor: true})
		},
	} {
		var b bytes.Buffer
		if err := enc(&b); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	for _, p := range []string{"testdata/gradient.webp", "../testdata/digits/digit-000.png"} {
		b, err := os.ReadFile(filepath.FromSlash(p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, h, rgb, err := DecodeImage(data, fuzzLimits)
		if err != nil {
			if !errors.Is(err, ErrBadImage) || rgb != nil {
				t.Fatalf("refused with %v (not an ErrBadImage) and %d bytes of pixels", err, len(rgb))
			}
			return
		}
		if w < fuzzLimits.MinSide || h < fuzzLimits.MinSide || w*h > fuzzLimits.MaxPixels {
			t.Fatalf("a %dx%d image passed the limits %+v", w, h, fuzzLimits)
		}
		if len(rgb) != 3*w*h {
			t.Fatalf("%dx%d image, %d bytes of RGB", w, h, len(rgb))
		}
	})
}
