// Package npy reads NumPy .npy files (format versions 1-3, little-endian,
// C order), the format of the zoo's golden inputs and outputs.
package npy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Array is a decoded .npy file: its dtype descriptor (e.g. "<f4"), shape and
// raw little-endian data.
type Array struct {
	Descr string
	Shape []int64
	Data  []byte
}

var (
	descrRe = regexp.MustCompile(`'descr':\s*'([^']+)'`)
	orderRe = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	shapeRe = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// Read loads a .npy file.
func Read(path string) (*Array, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	a, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// Decode parses the bytes of a .npy file.
func Decode(b []byte) (*Array, error) {
	if len(b) < 10 || !bytes.Equal(b[:6], []byte("\x93NUMPY")) {
		return nil, fmt.Errorf("not a .npy file")
	}
	var hlen, off int
	switch b[6] {
	case 1:
		hlen, off = int(binary.LittleEndian.Uint16(b[8:10])), 10
	case 2, 3:
		if len(b) < 12 {
			return nil, fmt.Errorf("truncated header")
		}
		hlen, off = int(binary.LittleEndian.Uint32(b[8:12])), 12
	default:
		return nil, fmt.Errorf("unsupported .npy version %d", b[6])
	}
	if off+hlen > len(b) {
		return nil, fmt.Errorf("truncated header")
	}
	h := string(b[off : off+hlen])
	m := descrRe.FindStringSubmatch(h)
	o := orderRe.FindStringSubmatch(h)
	s := shapeRe.FindStringSubmatch(h)
	if m == nil || o == nil || s == nil {
		return nil, fmt.Errorf("bad header %q", h)
	}
	if o[1] == "True" {
		return nil, fmt.Errorf("fortran order is not supported")
	}
	a := &Array{Descr: m[1], Shape: []int64{}, Data: b[off+hlen:]}
	for _, d := range strings.Split(s[1], ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad shape %q", s[1])
		}
		a.Shape = append(a.Shape, n)
	}
	if want := a.NumElements() * a.ItemSize(); a.ItemSize() == 0 || want != len(a.Data) {
		return nil, fmt.Errorf("dtype %s shape %v needs %d bytes, file has %d", a.Descr, a.Shape, want, len(a.Data))
	}
	return a, nil
}

// NumElements is the product of the shape.
func (a *Array) NumElements() int {
	n := 1
	for _, d := range a.Shape {
		n *= int(d)
	}
	return n
}

// ItemSize is the element size in bytes, 0 for descriptors this package does not know.
func (a *Array) ItemSize() int {
	switch a.Descr {
	case "|u1", "|i1", "|b1":
		return 1
	case "<f4", "<i4", "<u4":
		return 4
	case "<f8", "<i8", "<u8":
		return 8
	}
	return 0
}

// Float32s decodes a float32 array.
func (a *Array) Float32s() ([]float32, error) {
	if a.Descr != "<f4" {
		return nil, fmt.Errorf("array is %s, not float32", a.Descr)
	}
	out := make([]float32, a.NumElements())
	return out, binary.Read(bytes.NewReader(a.Data), binary.LittleEndian, out)
}

// Int64s decodes an int64 array.
func (a *Array) Int64s() ([]int64, error) {
	if a.Descr != "<i8" {
		return nil, fmt.Errorf("array is %s, not int64", a.Descr)
	}
	out := make([]int64, a.NumElements())
	return out, binary.Read(bytes.NewReader(a.Data), binary.LittleEndian, out)
}

// Int32s decodes an int32 array.
func (a *Array) Int32s() ([]int32, error) {
	if a.Descr != "<i4" {
		return nil, fmt.Errorf("array is %s, not int32", a.Descr)
	}
	out := make([]int32, a.NumElements())
	return out, binary.Read(bytes.NewReader(a.Data), binary.LittleEndian, out)
}

// Uint8s returns a uint8 array's bytes.
func (a *Array) Uint8s() ([]uint8, error) {
	if a.Descr != "|u1" {
		return nil, fmt.Errorf("array is %s, not uint8", a.Descr)
	}
	return a.Data, nil
}

// Rows returns rows [from, from+n) of the first dimension, sharing a's data.
func (a *Array) Rows(from, n int) (*Array, error) {
	if len(a.Shape) == 0 || from < 0 || n < 0 || int64(from+n) > a.Shape[0] {
		return nil, fmt.Errorf("rows %d..%d of an array of shape %v", from, from+n, a.Shape)
	}
	row := a.ItemSize()
	for _, d := range a.Shape[1:] {
		row *= int(d)
	}
	shape := append([]int64{int64(n)}, a.Shape[1:]...)
	return &Array{Descr: a.Descr, Shape: shape, Data: a.Data[from*row : (from+n)*row]}, nil
}
