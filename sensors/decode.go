package sensors

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/gif"  // GIF decoder for DecodeImage (the first frame)
	_ "image/jpeg" // JPEG decoder for DecodeImage
	_ "image/png"  // PNG decoder for DecodeImage
	"io"

	_ "golang.org/x/image/bmp"  // BMP decoder for DecodeImage
	_ "golang.org/x/image/tiff" // TIFF decoder for DecodeImage
	_ "golang.org/x/image/webp" // WebP decoder for DecodeImage
)

// Formats names the image formats DecodeImage reads, for messages.
const Formats = "JPEG, PNG, GIF, BMP, TIFF or WebP"

// Extensions are the file name extensions of those formats, lower case.
var Extensions = []string{".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}

// Limits bound what a sensor accepts as an image. They protect the daemon
// from a file or payload that would take too much memory or cannot be a
// useful picture.
type Limits struct {
	MaxBytes  int // largest encoded image or payload, in bytes
	MaxPixels int // largest width*height
	MinSide   int // smallest width or height
}

// DefaultLimits are used where config.toml sets none.
var DefaultLimits = Limits{MaxBytes: 32 << 20, MaxPixels: 40_000_000, MinSide: 8}

// ErrBadImage is wrapped by every error DecodeImage returns.
var ErrBadImage = errors.New("bad image")

// DecodeImage decodes a JPEG, PNG, GIF (its first frame), BMP, TIFF or WebP
// into packed RGB. The header is read first, so an image over the pixel
// limit is refused before any pixel is decoded.
func DecodeImage(data []byte, lim Limits) (w, h int, rgb []byte, err error) {
	if len(data) == 0 {
		return 0, 0, nil, fmt.Errorf("%w: empty (0 bytes)", ErrBadImage)
	}
	if lim.MaxBytes > 0 && len(data) > lim.MaxBytes {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes is over the limit of %d bytes", ErrBadImage, len(data), lim.MaxBytes)
	}
	format := sniff(data)
	if format == "" {
		return 0, 0, nil, fmt.Errorf("%w: not a %s image (%d bytes starting %q)", ErrBadImage, Formats, len(data), data[:min(len(data), 8)])
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("%w: %s", ErrBadImage, corrupt(format, data, err))
	}
	if lim.MaxPixels > 0 && cfg.Width*cfg.Height > lim.MaxPixels {
		return 0, 0, nil, fmt.Errorf("%w: %s of %dx%d pixels is over the limit of %d pixels", ErrBadImage, format, cfg.Width, cfg.Height, lim.MaxPixels)
	}
	if cfg.Width < lim.MinSide || cfg.Height < lim.MinSide {
		return 0, 0, nil, fmt.Errorf("%w: %s of %dx%d pixels is under the minimum side of %d pixels", ErrBadImage, format, cfg.Width, cfg.Height, lim.MinSide)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("%w: %dx%d %s", ErrBadImage, cfg.Width, cfg.Height, corrupt(format, data, err))
	}
	// A GIF's first frame may be smaller than its logical screen, which
	// is all the header tells.
	if b := img.Bounds(); b.Dx() < lim.MinSide || b.Dy() < lim.MinSide {
		return 0, 0, nil, fmt.Errorf("%w: %s of %dx%d pixels has a first frame of %dx%d pixels, under the minimum side of %d pixels",
			ErrBadImage, format, cfg.Width, cfg.Height, b.Dx(), b.Dy(), lim.MinSide)
	}
	w, h, rgb = toRGB(img)
	return w, h, rgb, nil
}

// sniff names the format from the first bytes: "jpeg", "png", "gif",
// "bmp", "tiff", "webp" or "".
func sniff(data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte{0xff, 0xd8, 0xff}):
		return "jpeg"
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return "gif"
	case bytes.HasPrefix(data, []byte("BM")):
		return "bmp"
	case bytes.HasPrefix(data, []byte("II*\x00")), bytes.HasPrefix(data, []byte("MM\x00*")):
		return "tiff"
	case len(data) >= 12 && bytes.HasPrefix(data, []byte("RIFF")) && string(data[8:12]) == "WEBP":
		return "webp"
	}
	return ""
}

// corrupt says why an image did not decode, calling a cut-off file
// truncated: one that ends early for its decoder, or a JPEG, PNG or GIF
// without its end marker (EOI, the IEND chunk, the trailer byte).
func corrupt(format string, data []byte, err error) string {
	size := len(data)
	ended := true
	switch format {
	case "jpeg":
		ended = bytes.HasSuffix(data, []byte{0xff, 0xd9})
	case "png":
		ended = bytes.HasSuffix(data, []byte("IEND\xaeB`\x82"))
	case "gif":
		ended = bytes.HasSuffix(data, []byte{0x3b})
	}
	if !ended || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Sprintf("%s is truncated (%d bytes): %v", format, size, err)
	}
	return fmt.Sprintf("%s is corrupt: %v", format, err)
}

// toRGB packs any image into RGB bytes.
func toRGB(img image.Image) (w, h int, rgb []byte) {
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	rgb = make([]byte, w*h*3)
	switch m := img.(type) {
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			o := rgb[y*w*3:]
			for x, v := range row {
				o[3*x], o[3*x+1], o[3*x+2] = v, v, v
			}
		}
	case *image.RGBA: // what the PNG decoder gives for opaque RGB
		packRGBA(rgb, m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, w, h)
	default:
		rgba := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.Draw(rgba, rgba.Bounds(), img, b.Min, draw.Src)
		packRGBA(rgb, rgba.Pix, rgba.Stride, w, h)
	}
	return w, h, rgb
}

// packRGBA drops the alpha bytes of w x h RGBA pixels into rgb.
func packRGBA(rgb, pix []byte, stride, w, h int) {
	for y := 0; y < h; y++ {
		row, o := pix[y*stride:y*stride+4*w], rgb[y*w*3:]
		for i, j := 0, 0; i < len(row); i, j = i+4, j+3 {
			o[j], o[j+1], o[j+2] = row[i], row[i+1], row[i+2]
		}
	}
}
