package tfmodels

// #include "tensorflow/c/c_api.h"
import "C"

import (
	"fmt"
	"unsafe"
)

// Runner runs one signature with a fixed list of inputs and outputs whose
// graph operations were resolved when it was made. It is safe for
// concurrent use and allocates only the returned tensors per call.
type Runner struct {
	m       *Model
	sig     *Signature
	inputs  []TensorInfo
	outputs []TensorInfo
	inOps   []C.TF_Output
	outOps  []C.TF_Output
}

// Runner prepares a signature for running. inputs must name every input of
// the signature (nil means all, sorted by key); outputs may be a subset (nil
// means all, sorted by key). Run takes and returns tensors in this order.
func (m *Model) Runner(signature string, inputs, outputs []string) (*Runner, error) {
	sig, err := m.Signature(signature)
	if err != nil {
		return nil, err
	}
	if inputs == nil {
		inputs = keys(sig.Inputs)
	}
	if outputs == nil {
		outputs = keys(sig.Outputs)
	}
	if len(inputs) != len(sig.Inputs) {
		return nil, &Error{Kind: ErrInvalidInput, Model: m.dir, Signature: signature,
			Msg: fmt.Sprintf("signature takes inputs %s, got %s", quoteList(keys(sig.Inputs)), quoteList(inputs))}
	}
	r := &Runner{m: m, sig: sig}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.session == nil {
		return nil, &Error{Kind: ErrClosed, Model: m.dir, Signature: signature}
	}
	seen := map[string]bool{}
	for _, k := range inputs {
		if seen[k] {
			return nil, &Error{Kind: ErrInvalidInput, Model: m.dir, Signature: signature, Tensor: k, Msg: "input named twice"}
		}
		seen[k] = true
		info, ok := sig.Input(k)
		if !ok {
			return nil, &Error{Kind: ErrUnknownTensor, Model: m.dir, Signature: signature, Tensor: k,
				Msg: "inputs are " + quoteList(keys(sig.Inputs))}
		}
		r.inputs = append(r.inputs, info)
		r.inOps = append(r.inOps, m.ops[info.Name])
	}
	for _, k := range outputs {
		info, ok := sig.Output(k)
		if !ok {
			return nil, &Error{Kind: ErrUnknownTensor, Model: m.dir, Signature: signature, Tensor: k,
				Msg: "outputs are " + quoteList(keys(sig.Outputs))}
		}
		r.outputs = append(r.outputs, info)
		r.outOps = append(r.outOps, m.ops[info.Name])
	}
	return r, nil
}

// resolveAll finds the graph operation of every signature tensor once, so a
// signature naming a missing operation fails the load, not a later run.
func (m *Model) resolveAll() error {
	m.ops = map[string]C.TF_Output{}
	for _, sig := range m.sigs {
		for _, infos := range [][]TensorInfo{sig.Inputs, sig.Outputs} {
			for _, info := range infos {
				if _, done := m.ops[info.Name]; done {
					continue
				}
				op, err := m.resolve(info)
				if err != nil {
					err.Signature = sig.Key
					return err
				}
				m.ops[info.Name] = op
			}
		}
	}
	return nil
}

func (m *Model) resolve(info TensorInfo) (C.TF_Output, *Error) {
	name, idx, err := parseTensorName(info.Name)
	if err != nil {
		return C.TF_Output{}, &Error{Kind: ErrInvalidModel, Model: m.dir, Tensor: info.Key, Msg: err.Error()}
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	op := C.TF_GraphOperationByName(m.graph, cname)
	if op == nil {
		return C.TF_Output{}, &Error{Kind: ErrInvalidModel, Model: m.dir, Tensor: info.Key,
			Msg: fmt.Sprintf("graph has no operation %q", name)}
	}
	if n := int(C.TF_OperationNumOutputs(op)); idx >= n {
		return C.TF_Output{}, &Error{Kind: ErrInvalidModel, Model: m.dir, Tensor: info.Key,
			Msg: fmt.Sprintf("operation %q has %d outputs, signature names output %d", name, n, idx)}
	}
	return C.TF_Output{oper: op, index: C.int(idx)}, nil
}

// Inputs are the inputs Run takes, in order.
func (r *Runner) Inputs() []TensorInfo { return r.inputs }

// Outputs are the outputs Run returns, in order.
func (r *Runner) Outputs() []TensorInfo { return r.outputs }

// Run feeds inputs (in Inputs() order) and returns new output tensors (in
// Outputs() order) that the caller must Close. Inputs are checked against the
// signature's dtypes and known dimensions before TensorFlow sees them.
func (r *Runner) Run(inputs ...*Tensor) ([]*Tensor, error) {
	if len(inputs) != len(r.inputs) {
		return nil, r.err(ErrInvalidInput, "", fmt.Sprintf("want %d input tensors %s, got %d", len(r.inputs), quoteList(keys(r.inputs)), len(inputs)))
	}
	for i, t := range inputs {
		if err := r.check(r.inputs[i], t); err != nil {
			return nil, err
		}
	}
	inVals := make([]*C.TF_Tensor, len(inputs))
	for i, t := range inputs {
		inVals[i] = t.c
	}
	outVals := make([]*C.TF_Tensor, len(r.outOps))

	r.m.mu.RLock()
	defer r.m.mu.RUnlock()
	if r.m.session == nil {
		return nil, r.err(ErrClosed, "", "")
	}
	st := newStatus()
	defer st.free()
	C.TF_SessionRun(r.m.session, nil,
		first(r.inOps), first(inVals), C.int(len(inVals)),
		first(r.outOps), first(outVals), C.int(len(outVals)),
		nil, 0, nil, st.c)
	outs := make([]*Tensor, len(outVals))
	for i, c := range outVals {
		if c != nil {
			outs[i] = newTensorFromC(c)
		}
	}
	if !st.ok() {
		for _, o := range outs {
			if o != nil {
				o.Close()
			}
		}
		e := r.err(ErrRun, "", st.message())
		e.TFCode = st.code()
		return nil, e
	}
	return outs, nil
}

func (r *Runner) err(kind error, tensor, msg string) *Error {
	return &Error{Kind: kind, Model: r.m.dir, Signature: r.sig.Key, Tensor: tensor, Msg: msg}
}

// check validates one input tensor against the signature.
func (r *Runner) check(info TensorInfo, t *Tensor) error {
	if t == nil || t.c == nil {
		return r.err(ErrInvalidInput, info.Key, "tensor is nil or closed")
	}
	if t.dtype != info.DType {
		return r.err(ErrInvalidInput, info.Key, fmt.Sprintf("dtype %s, signature wants %s", t.dtype, info.DType))
	}
	if info.UnknownRank {
		return nil
	}
	if len(t.shape) != len(info.Shape) {
		return r.err(ErrInvalidInput, info.Key, fmt.Sprintf("rank %d (shape %v), signature wants rank %d %v", len(t.shape), t.shape, len(info.Shape), info.Shape))
	}
	for i, want := range info.Shape {
		if want >= 0 && t.shape[i] != want {
			what := "size"
			if i == 0 {
				what = "batch size"
			}
			return r.err(ErrInvalidInput, info.Key, fmt.Sprintf("%s %d in dimension %d (shape %v), signature wants %v", what, t.shape[i], i, t.shape, info.Shape))
		}
	}
	return nil
}

// first points at s[0], or is nil for an empty slice (C takes NULL then).
func first[T any](s []T) *T {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}
