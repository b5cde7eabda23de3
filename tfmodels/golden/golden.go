// Package golden checks an exported model version against the references
// Python TensorFlow wrote beside it (see tfmodels/zoo/common.py): the outputs
// for a fixed input (golden/input_<key>.npy, golden/output_<key>.npy) and the
// signatures as TensorFlow's protobuf classes read them (signatures.json).
// Verify does the output comparison on a model already loaded (a plugin
// validating the version it serves); Check loads the model and adds the
// signature comparison (a test of tfmodels itself).
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

// Tolerance is the largest absolute difference from Python accepted unless
// the caller gives its own.
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
	MaxAbsDiff  float64 // +Inf when the shape differs or a value is NaN
	ShapeDiffer bool
	Tolerance   float64 // what MaxAbsDiff is held to
}

// OK reports whether the output matches within its tolerance.
func (o Output) OK() bool { return !o.ShapeDiffer && o.MaxAbsDiff <= o.Tolerance }

// Report is the result of checking one model version.
type Report struct {
	Dir       string
	Samples   int     // golden samples run: the golden input's batch; 0 when the version has no golden/
	Tolerance float64 // the largest absolute difference accepted
	Outputs   []Output
}

// OK reports whether outputs were compared and every one matched.
func (r Report) OK() bool {
	return len(r.Outputs) > 0 && r.Err() == nil
}

// MaxAbsDiff is the largest absolute difference over every output.
func (r Report) MaxAbsDiff() float64 {
	d := 0.0
	for _, o := range r.Outputs {
		d = math.Max(d, o.MaxAbsDiff)
	}
	return d
}

// Err names the first output that differs from its golden file, with its
// max abs difference and the tolerance; nil when none does (also when
// there was nothing to compare: see Samples).
func (r Report) Err() error {
	for _, o := range r.Outputs {
		file := filepath.Join(r.Dir, "golden", "output_"+o.Key+".npy")
		switch {
		case o.ShapeDiffer:
			return fmt.Errorf("output %q is %v, %s differs in shape", o.Key, o.Shape, file)
		case !o.OK():
			return fmt.Errorf("output %q differs from %s: max abs difference %.3g > tolerance %.3g", o.Key, file, o.MaxAbsDiff, o.Tolerance)
		}
	}
	return nil
}

// Check loads the model in dir, checks tfmodels' reading of its signatures
// against TensorFlow's (golden/signatures.json) and verifies its golden
// outputs within Tolerance. A version without golden/ is an error here.
func Check(dir string) (Report, error) {
	rep := Report{Dir: dir, Tolerance: Tolerance}
	man, err := readManifest(dir)
	if err != nil {
		return rep, err
	}
	if _, err := os.Stat(filepath.Join(dir, "golden")); err != nil {
		return rep, fmt.Errorf("%s: no golden samples to check against: %w", dir, err)
	}
	m, err := tfmodels.Load(dir, tfmodels.Options{})
	if err != nil {
		return rep, err
	}
	defer m.Close()
	if err := checkSignatures(dir, m); err != nil {
		return rep, err
	}
	return Verify(dir, m, man, Tolerance)
}

// Verify feeds the golden inputs of the version in dir (golden/input_<key>.npy)
// to m, already loaded from dir, through the signature man names, and
// compares every output with golden/output_<key>.npy within tol (0 means
// Tolerance), or within the manifest's validation.tolerance where that is
// larger. A model with a fixed input batch (input.batch) is fed the samples
// that many at a time. A version without golden/ gives a Report with Samples
// 0 and no error. An error means the comparison could not be made; a
// mismatch is in the Report (Report.Err).
func Verify(dir string, m *tfmodels.Model, man manifest.Manifest, tol float64) (Report, error) {
	if tol == 0 {
		tol = Tolerance
	}
	tol = math.Max(tol, man.Validation.Tolerance)
	rep := Report{Dir: dir, Tolerance: tol}
	if _, err := os.Stat(filepath.Join(dir, "golden")); errors.Is(err, fs.ErrNotExist) {
		return rep, nil
	} else if err != nil {
		return rep, err
	}
	sig, err := m.Signature(man.Signature)
	if err != nil {
		return rep, err
	}
	if in, ok := sig.Input(man.Input.Key); !ok || in.DType.String() != man.Input.DType {
		return rep, fmt.Errorf("%s: edgeinfer.toml input %q (%s) is not among the signature's inputs %v", dir, man.Input.Key, man.Input.DType, sig.Inputs)
	}
	arrays := map[string]*npy.Array{}
	samples := 0
	for _, info := range sig.Inputs {
		a, err := npy.Read(filepath.Join(dir, "golden", "input_"+info.Key+".npy"))
		if err != nil {
			return rep, err
		}
		if info.Key == man.Input.Key {
			samples = 1
			if len(a.Shape) > 0 {
				samples = int(a.Shape[0])
			}
		}
		arrays[info.Key] = a
	}
	chunk := samples
	if man.Input.Batch > 0 && man.Input.Batch < samples {
		if samples%man.Input.Batch != 0 {
			return rep, fmt.Errorf("%s: golden input holds %d samples, not a multiple of input.batch %d", dir, samples, man.Input.Batch)
		}
		chunk = man.Input.Batch
	}
	outputs := map[string]*Output{}
	for from := 0; from < samples || from == 0; from += chunk {
		if err := verifyRows(dir, m, man, arrays, from, chunk, samples, outputs); err != nil {
			return rep, err
		}
		if chunk == 0 {
			break
		}
	}
	keys := make([]string, 0, len(outputs))
	for k := range outputs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o := outputs[k]
		o.Tolerance = tol
		rep.Outputs = append(rep.Outputs, *o)
	}
	rep.Samples = samples
	return rep, nil
}

// verifyRows runs golden rows [from, from+n) (every row when the inputs
// hold samples rows and n == samples) and folds the outputs' differences
// into outputs.
func verifyRows(dir string, m *tfmodels.Model, man manifest.Manifest, arrays map[string]*npy.Array, from, n, samples int, outputs map[string]*Output) error {
	inputs := map[string]*tfmodels.Tensor{}
	defer func() {
		for _, t := range inputs {
			t.Close()
		}
	}()
	for k, a := range arrays {
		if n != samples {
			var err error
			if a, err = a.Rows(from, n); err != nil {
				return fmt.Errorf("%s: golden input %q: %w", dir, k, err)
			}
		}
		t, err := tfmodels.FromNpy(a)
		if err != nil {
			return err
		}
		inputs[k] = t
	}
	outs, err := m.Run(man.Signature, inputs)
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range outs {
			t.Close()
		}
	}()
	for k, got := range outs {
		want, err := npy.Read(filepath.Join(dir, "golden", "output_"+k+".npy"))
		if err != nil {
			return err
		}
		o := outputs[k]
		if o == nil {
			o = &Output{Key: k, Shape: want.Shape}
			outputs[k] = o
		}
		if n != samples {
			if want, err = want.Rows(from, n); err != nil {
				return fmt.Errorf("%s: golden output %q: %w", dir, k, err)
			}
		}
		if o.ShapeDiffer {
			continue
		}
		if !slices.Equal(got.Shape(), want.Shape) {
			o.Shape, o.ShapeDiffer, o.MaxAbsDiff = got.Shape(), true, math.Inf(1)
			continue
		}
		d, err := maxAbsDiff(got, want)
		if err != nil {
			return fmt.Errorf("%s: output %q: %w", dir, k, err)
		}
		o.MaxAbsDiff = math.Max(o.MaxAbsDiff, d)
	}
	return nil
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
