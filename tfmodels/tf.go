package tfmodels

// #cgo pkg-config: tensorflow
// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
import "C"

import "unsafe"

// Version is the version string of the linked TensorFlow C library.
func Version() string { return C.GoString(C.TF_Version()) }

// status wraps a TF_Status for one call.
type status struct{ c *C.TF_Status }

func newStatus() status { return status{C.TF_NewStatus()} }

func (s status) free() { C.TF_DeleteStatus(s.c) }

func (s status) code() int { return int(C.TF_GetCode(s.c)) }

func (s status) ok() bool { return C.TF_GetCode(s.c) == C.TF_OK }

func (s status) message() string { return C.GoString(C.TF_Message(s.c)) }

// cStringArray copies Go strings into a C array of C strings; free releases both.
type cStringArray struct {
	ptr **C.char
	n   int
}

func newCStringArray(ss []string) cStringArray {
	if len(ss) == 0 {
		return cStringArray{}
	}
	p := (**C.char)(C.malloc(C.size_t(len(ss)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	arr := unsafe.Slice(p, len(ss))
	for i, s := range ss {
		arr[i] = C.CString(s)
	}
	return cStringArray{p, len(ss)}
}

func (a cStringArray) free() {
	if a.ptr == nil {
		return
	}
	for _, c := range unsafe.Slice(a.ptr, a.n) {
		C.free(unsafe.Pointer(c))
	}
	C.free(unsafe.Pointer(a.ptr))
}
