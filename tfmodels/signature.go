package tfmodels

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgeinfer/edgeinfer/tfmodels/pbwire"
)

// TensorInfo describes one input or output of a signature.
type TensorInfo struct {
	Key         string  // the signature's key for it, e.g. "images"
	Name        string  // graph tensor, e.g. "serving_default_images:0"
	DType       DType   //
	Shape       []int64 // -1 for an unknown dimension; nil when UnknownRank
	UnknownRank bool
}

// Signature is one SignatureDef of the loaded MetaGraphDef.
type Signature struct {
	Key        string
	MethodName string
	Inputs     []TensorInfo // sorted by Key
	Outputs    []TensorInfo // sorted by Key
}

// Input returns the input with the given key.
func (s *Signature) Input(key string) (TensorInfo, bool) { return find(s.Inputs, key) }

// Output returns the output with the given key.
func (s *Signature) Output(key string) (TensorInfo, bool) { return find(s.Outputs, key) }

func find(ts []TensorInfo, key string) (TensorInfo, bool) {
	for _, t := range ts {
		if t.Key == key {
			return t, true
		}
	}
	return TensorInfo{}, false
}

func keys(ts []TensorInfo) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Key
	}
	return out
}

// String renders the shape the way TensorFlow prints it, e.g. (-1, 32, 32, 1).
func (t TensorInfo) String() string {
	if t.UnknownRank {
		return fmt.Sprintf("%s %s <unknown rank>", t.Key, t.DType)
	}
	dims := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		dims[i] = strconv.FormatInt(d, 10)
	}
	return fmt.Sprintf("%s %s (%s)", t.Key, t.DType, strings.Join(dims, ", "))
}

// Field numbers of the protobuf messages read here (tensorflow/core/protobuf).
const (
	metaGraphSignatureDef = 5 // MetaGraphDef.signature_def: map<string, SignatureDef>
	mapKey                = 1
	mapValue              = 2
	sigInputs             = 1 // SignatureDef.inputs: map<string, TensorInfo>
	sigOutputs            = 2 // SignatureDef.outputs
	sigMethodName         = 3 // SignatureDef.method_name
	infoName              = 1 // TensorInfo.name
	infoDType             = 2 // TensorInfo.dtype
	infoShape             = 3 // TensorInfo.tensor_shape: TensorShapeProto
	shapeDim              = 2 // TensorShapeProto.dim
	shapeUnknownRank      = 3 // TensorShapeProto.unknown_rank
	dimSize               = 1 // TensorShapeProto.Dim.size
)

// initOpSignature is the entry TF2 uses to name the SavedModel's init op; it
// is not a servable signature (TensorFlow Serving skips it too).
const initOpSignature = "__saved_model_init_op"

var errTruncated = errors.New("truncated or malformed protobuf")

// fields calls fn for each field of a serialised message. fn receives the
// field number, wire type and the raw value (bytes for length-delimited
// fields, the varint otherwise).
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, val []byte, v uint64) error) error {
	var bad error
	err := pbwire.Each(b, func(f pbwire.Field) error {
		bad = fn(f.Num, f.Type, f.Bytes, f.Varint)
		return bad
	})
	if err != nil && err != bad {
		return errTruncated
	}
	return err
}

// parseSignatures reads every SignatureDef from a serialised MetaGraphDef.
func parseSignatures(metaGraph []byte) (map[string]*Signature, error) {
	sigs := map[string]*Signature{}
	err := fields(metaGraph, func(num protowire.Number, typ protowire.Type, val []byte, _ uint64) error {
		if num != metaGraphSignatureDef || typ != protowire.BytesType {
			return nil
		}
		key, value, err := mapEntry(val)
		if err != nil {
			return err
		}
		if key == initOpSignature {
			return nil
		}
		s, err := parseSignatureDef(key, value)
		if err != nil {
			return fmt.Errorf("signature %q: %w", key, err)
		}
		sigs[key] = s
		return nil
	})
	return sigs, err
}

func mapEntry(b []byte) (key string, value []byte, err error) {
	err = fields(b, func(num protowire.Number, typ protowire.Type, val []byte, _ uint64) error {
		switch {
		case num == mapKey && typ == protowire.BytesType:
			key = string(val)
		case num == mapValue && typ == protowire.BytesType:
			value = val
		}
		return nil
	})
	return key, value, err
}

func parseSignatureDef(key string, b []byte) (*Signature, error) {
	s := &Signature{Key: key}
	err := fields(b, func(num protowire.Number, typ protowire.Type, val []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case sigMethodName:
			s.MethodName = string(val)
		case sigInputs, sigOutputs:
			k, v, err := mapEntry(val)
			if err != nil {
				return err
			}
			info, err := parseTensorInfo(k, v)
			if err != nil {
				return fmt.Errorf("tensor %q: %w", k, err)
			}
			if num == sigInputs {
				s.Inputs = append(s.Inputs, info)
			} else {
				s.Outputs = append(s.Outputs, info)
			}
		}
		return nil
	})
	sort.Slice(s.Inputs, func(i, j int) bool { return s.Inputs[i].Key < s.Inputs[j].Key })
	sort.Slice(s.Outputs, func(i, j int) bool { return s.Outputs[i].Key < s.Outputs[j].Key })
	return s, err
}

func parseTensorInfo(key string, b []byte) (TensorInfo, error) {
	t := TensorInfo{Key: key, UnknownRank: true}
	err := fields(b, func(num protowire.Number, typ protowire.Type, val []byte, v uint64) error {
		switch {
		case num == infoName && typ == protowire.BytesType:
			t.Name = string(val)
		case num == infoDType && typ == protowire.VarintType:
			t.DType = DType(v)
		case num == infoShape && typ == protowire.BytesType:
			t.UnknownRank = false
			t.Shape = []int64{}
			return fields(val, func(num protowire.Number, typ protowire.Type, val []byte, v uint64) error {
				switch {
				case num == shapeUnknownRank && typ == protowire.VarintType && v != 0:
					t.UnknownRank = true
				case num == shapeDim && typ == protowire.BytesType:
					size := int64(0) // proto3 default
					if err := fields(val, func(num protowire.Number, typ protowire.Type, _ []byte, v uint64) error {
						if num == dimSize && typ == protowire.VarintType {
							size = int64(v)
						}
						return nil
					}); err != nil {
						return err
					}
					t.Shape = append(t.Shape, size)
				}
				return nil
			})
		}
		return nil
	})
	if t.UnknownRank {
		t.Shape = nil
	}
	return t, err
}

// parseTensorName splits "op:1" into ("op", 1); a bare "op" is output 0.
func parseTensorName(name string) (string, int, error) {
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return name, 0, nil
	}
	idx, err := strconv.Atoi(name[i+1:])
	if err != nil || idx < 0 {
		return "", 0, fmt.Errorf("bad tensor name %q", name)
	}
	return name[:i], idx, nil
}
