// Package pbwire walks the fields of a serialised protobuf message without
// generated code. The SavedModel, MetaGraphDef, GraphDef and checkpoint
// bundle readers of tfmodels, tfmodels/graphcheck and daemon/repo read only
// the few fields they need through it, by number, as their proto files
// define them.
package pbwire

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field is one field of a message: its number and wire type, and its value:
// Bytes for a length-delimited field, Varint for a varint field (the other
// wire types are skipped over and carry neither).
type Field struct {
	Num    protowire.Number
	Type   protowire.Type
	Bytes  []byte
	Varint uint64
}

// Each calls fn for every field of the serialised message b, in order, and
// stops at fn's first error, which it returns. A malformed message is an
// error naming the field number where it could be told, wrapping
// protowire's parse error.
func Each(b []byte, fn func(Field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		f := Field{Num: num, Type: typ}
		switch typ {
		case protowire.BytesType:
			f.Bytes, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			f.Varint, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}
