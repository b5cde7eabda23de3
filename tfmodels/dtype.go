package tfmodels

// #include "tensorflow/c/c_api.h"
import "C"

import "fmt"

// DType is a tensor element type. Its values are TensorFlow's DataType enum
// (the same numbers in TF_DataType and in the protobufs).
type DType int

// The element types tfmodels creates and reads. Signatures may name others;
// they are reported by name but cannot be fed.
const (
	Float32 DType = C.TF_FLOAT
	Float64 DType = C.TF_DOUBLE
	Int32   DType = C.TF_INT32
	Uint8   DType = C.TF_UINT8
	Int16   DType = C.TF_INT16
	Int8    DType = C.TF_INT8
	String  DType = C.TF_STRING
	Int64   DType = C.TF_INT64
	Bool    DType = C.TF_BOOL
)

var dtypeNames = map[DType]string{
	Float32: "float32", Float64: "float64", Int32: "int32", Uint8: "uint8",
	Int16: "int16", Int8: "int8", String: "string", Int64: "int64", Bool: "bool",
}

func (d DType) String() string {
	if n, ok := dtypeNames[d]; ok {
		return n
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// size is the byte size of one element, 0 for String (TF_TString) handled apart.
func (d DType) size() int {
	switch d {
	case Uint8, Int8, Bool:
		return 1
	case Int16:
		return 2
	case Float32, Int32:
		return 4
	case Float64, Int64:
		return 8
	}
	return 0
}

// Elem is a Go element type that maps one to one onto a DType.
type Elem interface {
	float32 | float64 | int32 | uint8 | int16 | int8 | int64 | bool
}

// dtypeOf returns the DType of a Go element type.
func dtypeOf[T Elem]() DType {
	var z T
	switch any(z).(type) {
	case float32:
		return Float32
	case float64:
		return Float64
	case int32:
		return Int32
	case uint8:
		return Uint8
	case int16:
		return Int16
	case int8:
		return Int8
	case int64:
		return Int64
	case bool:
		return Bool
	}
	panic("unreachable")
}
