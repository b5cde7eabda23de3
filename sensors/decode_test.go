package sensors

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"strings"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

func encode(t *testing.T, w, h int, asJPEG bool) []byte {
	t.Helper()
	img := gradient(w, h)
	var b bytes.Buffer
	var err error
	if asJPEG {
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 90})
	} else {
		err = png.Encode(&b, img)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDecodeImageGivesPackedRGB(t *testing.T) {
	w, h, rgb, err := DecodeImage(encode(t, 40, 30, false), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if w != 40 || h != 30 || len(rgb) != 40*30*3 {
		t.Fatalf("%dx%d, %d bytes", w, h, len(rgb))
	}
	// PNG is lossless: pixel (x=7, y=5) is (7, 5, 12).
	if got := rgb[(5*40+7)*3:][:3]; got[0] != 7 || got[1] != 5 || got[2] != 12 {
		t.Fatalf("pixel (7,5) = %v", got)
	}
	gray := image.NewGray(image.Rect(0, 0, 9, 9))
	gray.Pix[10] = 200
	var b bytes.Buffer
	png.Encode(&b, gray)
	_, _, rgb, err = DecodeImage(b.Bytes(), DefaultLimits)
	if err != nil || rgb[30] != 200 || rgb[31] != 200 || rgb[32] != 200 {
		t.Fatalf("gray pixel 10 = %v (%v)", rgb[30:33], err)
	}
	if _, _, _, err := DecodeImage(encode(t, 64, 48, true), DefaultLimits); err != nil {
		t.Fatalf("jpeg: %v", err)
	}
}

func TestDecodeImageNamesWhatIsWrong(t *testing.T) {
	jpg := encode(t, 64, 64, true)
	lim := Limits{MaxBytes: 1 << 20, MaxPixels: 100 * 100, MinSide: 8}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty (0 bytes)"},
		{"text", []byte("hello, world\n"), `not a JPEG, PNG, GIF, BMP, TIFF or WebP image (13 bytes starting "hello, w")`},
		{"truncated gif", gifOf(t)[:40], "gif is truncated (40 bytes)"},
		{"truncated header", jpg[:20], "jpeg is truncated (20 bytes)"},
		{"truncated pixels", jpg[:len(jpg)-200], "64x64 jpeg is truncated"},
		{"too small", encode(t, 1, 1, false), "png of 1x1 pixels is under the minimum side of 8 pixels"},
		{"too large", encode(t, 200, 100, false), "png of 200x100 pixels is over the limit of 10000 pixels"},
		{"too many bytes", append([]byte{0xff, 0xd8, 0xff}, make([]byte, 2<<20)...), "2097155 bytes is over the limit of 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := DecodeImage(tc.data, lim)
			if !errors.Is(err, ErrBadImage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// gradient is the w x h image whose pixel (x, y) is (x, y, x+y);
// testdata/gradient.webp holds it at 40x30 (written losslessly by Pillow:
// Image.new("RGB", (40, 30)) with those pixels, save(lossless=True)).
func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	return img
}

// gifOf encodes a gradient as a GIF.
func gifOf(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := gif.Encode(&b, gradient(40, 30), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDecodeImageReadsGIFBMPTIFFAndWebPPixelForPixel(t *testing.T) {
	encoded := func(enc func(*bytes.Buffer) error) []byte {
		var b bytes.Buffer
		if err := enc(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	webp, err := os.ReadFile("testdata/gradient.webp")
	if err != nil {
		t.Fatal(err)
	}
	// A GIF's palette (Plan 9's 256 colours here) does not hold every
	// pixel: the GIF is compared with what the palette gives.
	src := gradient(40, 30)
	paletted := image.NewPaletted(src.Bounds(), palette.Plan9)
	for y := range 30 {
		for x := range 40 {
			paletted.Set(x, y, src.At(x, y))
		}
	}
	for _, tc := range []struct {
		name string
		data []byte
		want image.Image
	}{
		{"gif", encoded(func(b *bytes.Buffer) error { return gif.Encode(b, paletted, nil) }), paletted},
		{"bmp", encoded(func(b *bytes.Buffer) error { return bmp.Encode(b, src) }), src},
		{"tiff", encoded(func(b *bytes.Buffer) error { return tiff.Encode(b, src, &tiff.Options{Compression: tiff.Deflate}) }), src},
		{"webp (lossless)", webp, src},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, h, rgb, err := DecodeImage(tc.data, DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if w != 40 || h != 30 {
				t.Fatalf("%dx%d, want 40x30", w, h)
			}
			for y := range h {
				for x := range w {
					r, g, b, _ := tc.want.At(x, y).RGBA()
					if got := rgb[(y*w+x)*3:][:3]; got[0] != uint8(r>>8) || got[1] != uint8(g>>8) || got[2] != uint8(b>>8) {
						t.Fatalf("pixel (%d,%d) = %v, want %d %d %d", x, y, got, r>>8, g>>8, b>>8)
					}
				}
			}
		})
	}
}
