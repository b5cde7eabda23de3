package sensors

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"
)

func encode(t *testing.T, w, h int, asJPEG bool) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
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
		{"text", []byte("hello, world\n"), `not a JPEG or PNG image (13 bytes starting "hello, w")`},
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
