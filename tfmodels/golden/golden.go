// Package golden checks an exported model version against the references
// Python TensorFlow wrote beside it (see tfmodels/zoo/common.py): the outputs
// for a fixed input (golden/input_<key>.npy, golden/output_<key>.npy) and the
// signatures as TensorFlow's protobuf classes read them (signatures.json).
package golden

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// Tolerance is the largest absolute difference from Python accepted.
const Tolerance = 1e-4

// readManifest reads and validates <dir>/edgeinfer.toml.
func readManifest(dir string) (manifest.Manifest, error) {
	man, err := manifest.Read(dir)
	if err != nil {
		return man, err
	}
	if err := man.Validate(); err != nil {
		return man, fmt.Errorf("%s: %w", filepath.Join(dir, manifest.File), err)
	}
	return man, nil
}

// Output is the comparison of one output tensor.
type Output struct {
	Key         string
	Shape       []int64
	MaxAbsDiff  float64
	ShapeDiffer bool
}

// OK reports whether the output matches within Tolerance.
func (o Output) OK() bool { return !o.ShapeDiffer && o.MaxAbsDiff <= Tolerance }

// Report is the result of checking one model version.
type Report struct {
	Dir     string
	Outputs []Output
}

// OK reports whether every output matched.
func (r Report) OK() bool {
	for _, o := range r.Outputs {
		if !o.OK() {
			return false
		}
	}
	return len(r.Outputs) > 0
}

// Check loads the model in dir, feeds its golden inputs to the signature
// named in edgeinfer.toml and compares every output with Python's.
func Check(dir string) (Report, error) {
	rep := Report{Dir: dir}
	man, err := readManifest(dir)
	if err != nil {
		return rep, err
	}
	m, err := tfmodels.Load(dir, tfmodels.Options{})
	if err != nil {
		return rep, err
	}
	defer m.Close()
	if err := checkSignatures(dir, m); err != nil {
		return rep, err
	}
	sig, err := m.Signature(man.Signature)
	if err != nil {
		return rep, err
	}
	if in, ok := sig.Input(man.Input.Key); !ok || in.DType.String() != man.Input.DType {
		return rep, fmt.Errorf("%s: edgeinfer.toml input %q (%s) is not among the signature's inputs %v", dir, man.Input.Key, man.Input.DType, sig.Inputs)
	}
	inputs := map[string]*tfmodels.Tensor{}
	for _, info := range sig.Inputs {
		a, err := npy.Read(filepath.Join(dir, "golden", "input_"+info.Key+".npy"))
		if err != nil {
			return rep, err
		}
		t, err := tfmodels.FromNpy(a)
		if err != nil {
			return rep, err
		}
		defer t.Close()
		inputs[info.Key] = t
	}
	outs, err := m.Run(man.Signature, inputs)
	if err != nil {
		return rep, err
	}
	defer func() {
		for _, t := range outs {
			t.Close()
		}
	}()
	keys := make([]string, 0, len(outs))
	for k := range outs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want, err := npy.Read(filepath.Join(dir, "golden", "output_"+k+".npy"))
		if err != nil {
			return rep, err
		}
		o := Output{Key: k, Shape: outs[k].Shape()}
		if !slices.Equal(o.Shape, want.Shape) {
			o.ShapeDiffer, o.MaxAbsDiff = true, math.Inf(1)
		} else if o.MaxAbsDiff, err = maxAbsDiff(outs[k], want); err != nil {
			return rep, fmt.Errorf("%s: output %q: %w", dir, k, err)
		}
		rep.Outputs = append(rep.Outputs, o)
	}
	return rep, nil
}

// refTensor and refSignature mirror golden/signatures.json.
type refTensor struct {
	Name  string  `json:"name"`
	DType int     `json:"dtype"`
	Shape []int64 `json:"shape"` // nil: unknown rank
}

type refSignature struct {
	MethodName string               `json:"method_name"`
	Inputs     map[string]refTensor `json:"inputs"`
	Outputs    map[string]refTensor `json:"outputs"`
}

// checkSignatures compares tfmodels' protowire reading of the MetaGraphDef
// with golden/signatures.json, written from TensorFlow's own protobuf
// classes. A version without the file is not checked.
func checkSignatures(dir string, m *tfmodels.Model) error {
	b, err := os.ReadFile(filepath.Join(dir, "golden", "signatures.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var ref map[string]refSignature
	if err := json.Unmarshal(b, &ref); err != nil {
		return fmt.Errorf("%s: golden/signatures.json: %w", dir, err)
	}
	got := m.Signatures()
	if len(got) != len(ref) {
		return fmt.Errorf("%s: tfmodels read %d signatures, TensorFlow %d", dir, len(got), len(ref))
	}
	for _, s := range got {
		want, ok := ref[s.Key]
		if !ok {
			return fmt.Errorf("%s: signature %q is not in TensorFlow's reading", dir, s.Key)
		}
		if s.MethodName != want.MethodName {
			return fmt.Errorf("%s: signature %q method %q, TensorFlow %q", dir, s.Key, s.MethodName, want.MethodName)
		}
		for _, side := range []struct {
			got  []tfmodels.TensorInfo
			want map[string]refTensor
		}{{s.Inputs, want.Inputs}, {s.Outputs, want.Outputs}} {
			if len(side.got) != len(side.want) {
				return fmt.Errorf("%s: signature %q has %d tensors on one side, TensorFlow %d", dir, s.Key, len(side.got), len(side.want))
			}
			for _, t := range side.got {
				w, ok := side.want[t.Key]
				if !ok || t.Name != w.Name || int(t.DType) != w.DType || t.UnknownRank != (w.Shape == nil) || !slices.Equal(t.Shape, w.Shape) {
					return fmt.Errorf("%s: signature %q tensor %q: tfmodels read %s %v, TensorFlow %+v", dir, s.Key, t.Key, t.Name, t, w)
				}
			}
		}
	}
	return nil
}

func maxAbsDiff(got *tfmodels.Tensor, want *npy.Array) (float64, error) {
	var g, w []float64
	var err error
	switch got.DType() {
	case tfmodels.Float32:
		g, err = floats(tfmodels.Data[float32](got))
	case tfmodels.Int32:
		g, err = floats(tfmodels.Data[int32](got))
	case tfmodels.Int64:
		g, err = floats(tfmodels.Data[int64](got))
	default:
		return 0, fmt.Errorf("output dtype %s not compared", got.DType())
	}
	if err != nil {
		return 0, err
	}
	switch want.Descr {
	case "<f4":
		w, err = floats(want.Float32s())
	case "<i4":
		w, err = floats(want.Int32s())
	case "<i8":
		w, err = floats(want.Int64s())
	default:
		return 0, fmt.Errorf("golden dtype %s not compared", want.Descr)
	}
	if err != nil {
		return 0, err
	}
	if len(g) != len(w) {
		return math.Inf(1), nil
	}
	d := 0.0
	for i := range g {
		if math.IsNaN(g[i]) || math.IsNaN(w[i]) {
			return math.Inf(1), nil
		}
		d = math.Max(d, math.Abs(g[i]-w[i]))
	}
	return d, nil
}

func floats[T float32 | int32 | int64](v []T, err error) ([]float64, error) {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, err
}
