package tfmodels

// #include <stdlib.h>
// #include <string.h>
// #include "tensorflow/c/c_api.h"
// #include "tensorflow/c/tf_tstring.h"
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

// Tensor is a dense tensor in C memory owned by TensorFlow's allocator.
// Close frees it; slices returned by Data or Strings view that memory and
// must not be used after Close.
type Tensor struct {
	c     *C.TF_Tensor
	dtype DType
	shape []int64
	// ownsStrings is set for string tensors this package initialised: their
	// TF_TStrings must be released before the buffer.
	ownsStrings bool
}

// NewTensor allocates a zeroed tensor of the given type and shape. The buffer
// is 64-byte aligned (TensorFlow's allocator), so running it copies nothing.
func NewTensor(dt DType, shape ...int64) (*Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	var elem int
	switch {
	case dt == String:
		elem = int(C.sizeof_TF_TString)
	case dt.size() > 0:
		elem = dt.size()
	default:
		return nil, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("cannot allocate tensors of %s", dt)}
	}
	if n > math.MaxInt/elem {
		return nil, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("shape %v is too large", shape)}
	}
	size := n * elem
	var dims *C.int64_t
	if len(shape) > 0 {
		dims = (*C.int64_t)(unsafe.Pointer(&shape[0]))
	}
	c := C.TF_AllocateTensor(C.TF_DataType(dt), dims, C.int(len(shape)), C.size_t(size))
	if c == nil {
		return nil, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("TF_AllocateTensor(%s, %v) failed", dt, shape)}
	}
	if size > 0 {
		C.memset(C.TF_TensorData(c), 0, C.size_t(size))
	}
	t := &Tensor{c: c, dtype: dt, shape: append([]int64(nil), shape...)}
	if dt == String {
		for i := range t.tstrings() {
			C.TF_StringInit(&t.tstrings()[i])
		}
		t.ownsStrings = true
	}
	runtime.SetFinalizer(t, (*Tensor).Close)
	return t, nil
}

// NewTensorOf allocates a tensor of shape and copies values into it.
func NewTensorOf[T Elem](shape []int64, values []T) (*Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if n != len(values) {
		return nil, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("shape %v holds %d elements, got %d values", shape, n, len(values))}
	}
	t, err := NewTensor(dtypeOf[T](), shape...)
	if err != nil {
		return nil, err
	}
	d, _ := Data[T](t)
	copy(d, values)
	return t, nil
}

// NewStrings allocates a string tensor of shape holding values.
func NewStrings(shape []int64, values []string) (*Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if n != len(values) {
		return nil, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("shape %v holds %d elements, got %d strings", shape, n, len(values))}
	}
	t, err := NewTensor(String, shape...)
	if err != nil {
		return nil, err
	}
	ts := t.tstrings()
	for i, s := range values {
		cs := C.CString(s)
		C.TF_StringCopy(&ts[i], cs, C.size_t(len(s)))
		C.free(unsafe.Pointer(cs))
	}
	return t, nil
}

// newTensorFromC takes ownership of a tensor returned by TensorFlow.
func newTensorFromC(c *C.TF_Tensor) *Tensor {
	nd := int(C.TF_NumDims(c))
	shape := make([]int64, nd)
	for i := range shape {
		shape[i] = int64(C.TF_Dim(c, C.int(i)))
	}
	t := &Tensor{c: c, dtype: DType(C.TF_TensorType(c)), shape: shape}
	runtime.SetFinalizer(t, (*Tensor).Close)
	return t
}

// DType returns the element type.
func (t *Tensor) DType() DType { return t.dtype }

// Shape returns a copy of the dimensions.
func (t *Tensor) Shape() []int64 { return append([]int64(nil), t.shape...) }

// NumElements is the product of the dimensions.
func (t *Tensor) NumElements() int {
	n := 1
	for _, d := range t.shape {
		n *= int(d)
	}
	return n
}

// Close frees the tensor's memory. It is safe to call more than once.
func (t *Tensor) Close() error {
	if t.c == nil {
		return nil
	}
	if t.ownsStrings {
		ts := t.tstrings()
		for i := range ts {
			C.TF_StringDealloc(&ts[i])
		}
	}
	C.TF_DeleteTensor(t.c)
	t.c = nil
	runtime.SetFinalizer(t, nil)
	return nil
}

// Data returns the tensor's elements as a slice over its C memory.
func Data[T Elem](t *Tensor) ([]T, error) {
	if t.c == nil {
		return nil, &Error{Kind: ErrClosed, Msg: "tensor used after Close"}
	}
	if want := dtypeOf[T](); t.dtype != want {
		return nil, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("tensor is %s, not %s", t.dtype, want)}
	}
	n := t.NumElements()
	if n == 0 {
		return []T{}, nil
	}
	return unsafe.Slice((*T)(C.TF_TensorData(t.c)), n), nil
}

// Strings returns a copy of a string tensor's elements.
func (t *Tensor) Strings() ([]string, error) {
	if t.c == nil {
		return nil, &Error{Kind: ErrClosed, Msg: "tensor used after Close"}
	}
	if t.dtype != String {
		return nil, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("tensor is %s, not string", t.dtype)}
	}
	ts := t.tstrings()
	out := make([]string, len(ts))
	for i := range ts {
		out[i] = C.GoStringN(C.TF_StringGetDataPointer(&ts[i]), C.int(C.TF_StringGetSize(&ts[i])))
	}
	return out, nil
}

// dataPointer is the start of the tensor's buffer (alignment checks).
func (t *Tensor) dataPointer() uintptr { return uintptr(C.TF_TensorData(t.c)) }

// bytes views the buffer of a numeric tensor.
func (t *Tensor) bytes() []byte {
	n := int(C.TF_TensorByteSize(t.c))
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(C.TF_TensorData(t.c)), n)
}

func (t *Tensor) tstrings() []C.TF_TString {
	n := t.NumElements()
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*C.TF_TString)(C.TF_TensorData(t.c)), n)
}

func numElements(shape []int64) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("negative dimension in shape %v", shape)}
		}
		if d > 0 && n > math.MaxInt/int(d) {
			return 0, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("shape %v is too large", shape)}
		}
		n *= int(d)
	}
	return n, nil
}
