package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
)

// rgbOf packs img into RGB bytes (a frame's layout), its alpha ignored.
func rgbOf(img image.Image) (rgb []byte, w, h int) {
	b := img.Bounds()
	rgb = make([]byte, 0, 3*b.Dx()*b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			rgb = append(rgb, c.R, c.G, c.B)
		}
	}
	return rgb, b.Dx(), b.Dy()
}

// pngOf encodes packed RGB bytes as an opaque PNG (fast compression: it
// is done on the frame path), which rgbOf turns back into the same bytes.
func pngOf(rgb []byte, w, h int) ([]byte, error) {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range w * h {
		copy(img.Pix[4*i:], rgb[3*i:3*i+3])
		img.Pix[4*i+3] = 255
	}
	var buf bytes.Buffer
	err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img)
	return buf.Bytes(), err
}
