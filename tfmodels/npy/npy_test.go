package npy

import (
	"encoding/binary"
	"math"
	"reflect"
	"strings"
	"testing"
)

// encode builds a version-1 .npy file the way numpy.save writes one.
func encode(header string, data []byte) []byte {
	h := header
	for (10+len(h)+1)%64 != 0 {
		h += " "
	}
	h += "\n"
	b := []byte("\x93NUMPY\x01\x00")
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h)))
	return append(append(b, h...), data...)
}

func TestDecodeReadsShapeDtypeAndValues(t *testing.T) {
	data := make([]byte, 0, 24)
	for _, v := range []float32{1, -2.5, 3, 0, math.MaxFloat32, 7} {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	a, err := Decode(encode("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Shape, []int64{2, 3}) {
		t.Errorf("shape %v", a.Shape)
	}
	got, err := a.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []float32{1, -2.5, 3, 0, math.MaxFloat32, 7}) {
		t.Errorf("values %v", got)
	}
	if _, err := a.Int64s(); err == nil {
		t.Error("float32 array decoded as int64")
	}
}

func TestDecodeScalarAndOneDimensionalShapes(t *testing.T) {
	a, err := Decode(encode("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", make([]byte, 8)))
	if err != nil || len(a.Shape) != 0 || a.NumElements() != 1 {
		t.Fatalf("scalar: %v %+v", err, a)
	}
	a, err = Decode(encode("{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }", []byte{1, 2, 3, 4, 5}))
	if err != nil || !reflect.DeepEqual(a.Shape, []int64{5}) {
		t.Fatalf("1-d: %v %+v", err, a)
	}
}

func TestDecodeRejectsBadFiles(t *testing.T) {
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"not npy", []byte("hello world, not numpy"), "not a .npy file"},
		{"truncated data", encode("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", make([]byte, 12)), "needs 16 bytes, file has 12"},
		{"fortran order", encode("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", make([]byte, 4)), "fortran"},
		{"unknown dtype", encode("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", make([]byte, 16)), "needs"},
		{"truncated header", []byte("\x93NUMPY\x01\x00\xff\x00{'descr'"), "truncated header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestRowsSlicesTheFirstDimensionAndRefusesRowsPastTheEnd(t *testing.T) {
	a := &Array{Descr: "<i4", Shape: []int64{3, 2}, Data: []byte{
		1, 0, 0, 0, 2, 0, 0, 0,
		3, 0, 0, 0, 4, 0, 0, 0,
		5, 0, 0, 0, 6, 0, 0, 0,
	}}
	r, err := a.Rows(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.Int32s()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Shape) != 2 || r.Shape[0] != 2 || r.Shape[1] != 2 || len(v) != 4 || v[0] != 3 || v[3] != 6 {
		t.Fatalf("rows 1..3: shape %v values %v", r.Shape, v)
	}
	if _, err := a.Rows(2, 2); err == nil {
		t.Fatal("rows 2..4 of 3: no error")
	}
}
