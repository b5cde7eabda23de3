package tfmodels

import (
	"fmt"

	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

var npyDTypes = map[string]DType{
	"<f4": Float32, "<f8": Float64, "<i4": Int32, "<i8": Int64, "|u1": Uint8, "|i1": Int8, "|b1": Bool,
}

// FromNpy copies a decoded .npy array into a new tensor of the same dtype and shape.
func FromNpy(a *npy.Array) (*Tensor, error) {
	dt, ok := npyDTypes[a.Descr]
	if !ok {
		return nil, &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("no tensor dtype for .npy descr %q", a.Descr)}
	}
	t, err := NewTensor(dt, a.Shape...)
	if err != nil {
		return nil, err
	}
	copy(t.bytes(), a.Data)
	return t, nil
}
