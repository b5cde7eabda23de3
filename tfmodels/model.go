package tfmodels

// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
import "C"

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unsafe"
)

// Model is a loaded SavedModel: one TensorFlow session and its signatures.
type Model struct {
	dir  string
	sigs map[string]*Signature
	ops  map[string]C.TF_Output // graph tensor name -> operation output, resolved at load

	mu      sync.RWMutex // Run holds it shared, Close exclusively
	graph   *C.TF_Graph
	session *C.TF_Session
}

// Load loads the SavedModel in dir.
func Load(dir string, opts Options) (*Model, error) {
	if err := opts.validate(); err != nil {
		err.Model = dir
		return nil, err
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}

	st := newStatus()
	defer st.free()
	so := C.TF_NewSessionOptions()
	defer C.TF_DeleteSessionOptions(so)
	if cfg := opts.configProto(); len(cfg) > 0 {
		C.TF_SetConfig(so, unsafe.Pointer(&cfg[0]), C.size_t(len(cfg)), st.c)
		if !st.ok() {
			return nil, &Error{Kind: ErrInvalidArgument, Model: dir, TFCode: st.code(), Msg: "session config: " + st.message()}
		}
	}

	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	tags := newCStringArray(opts.tags())
	defer tags.free()
	graph := C.TF_NewGraph()
	meta := C.TF_NewBuffer()
	defer C.TF_DeleteBuffer(meta)

	session := C.TF_LoadSessionFromSavedModel(so, nil, cdir, tags.ptr, C.int(tags.n), graph, meta, st.c)
	if !st.ok() {
		C.TF_DeleteGraph(graph)
		return nil, &Error{Kind: ErrInvalidModel, Model: dir, TFCode: st.code(),
			Msg: fmt.Sprintf("loading with tags %v: %s", opts.tags(), st.message())}
	}
	m := &Model{dir: dir, graph: graph, session: session}
	if err := m.checkVariablesRestored(); err != nil {
		m.Close()
		return nil, err
	}
	metaBytes := C.GoBytes(meta.data, C.int(meta.length))
	sigs, err := parseSignatures(metaBytes)
	if err != nil {
		m.Close()
		return nil, &Error{Kind: ErrInvalidModel, Model: dir, Msg: "reading signatures from MetaGraphDef: " + err.Error()}
	}
	m.sigs = sigs
	if err := m.resolveAll(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// checkDir reports a missing or empty model directory before TensorFlow sees it.
func checkDir(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &Error{Kind: ErrNotFound, Model: dir, Msg: "directory does not exist"}
		}
		return &Error{Kind: ErrNotFound, Model: dir, Msg: err.Error()}
	}
	if !info.IsDir() {
		return &Error{Kind: ErrNotFound, Model: dir, Msg: "not a directory"}
	}
	for _, name := range []string{"saved_model.pb", "saved_model.pbtxt"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return nil
		}
	}
	return &Error{Kind: ErrNotFound, Model: dir, Msg: "no saved_model.pb in directory"}
}

// checkVariablesRestored catches a model whose variables/ folder is missing:
// TensorFlow then loads it without restoring anything and only fails at the
// first run ("uninitialized value"), so it is reported at load instead.
func (m *Model) checkVariablesRestored() error {
	if _, err := os.Stat(filepath.Join(m.dir, "variables", "variables.index")); err == nil {
		return nil
	}
	var pos C.size_t
	for op := C.TF_GraphNextOperation(m.graph, &pos); op != nil; op = C.TF_GraphNextOperation(m.graph, &pos) {
		switch C.GoString(C.TF_OperationOpType(op)) {
		case "VarHandleOp", "VariableV2":
			return &Error{Kind: ErrInvalidModel, Model: m.dir,
				Msg: fmt.Sprintf("graph has variables (%s) but variables/variables.index is missing", C.GoString(C.TF_OperationName(op)))}
		}
	}
	return nil
}

// Dir is the directory the model was loaded from.
func (m *Model) Dir() string { return m.dir }

// Signatures lists the model's signatures sorted by key.
func (m *Model) Signatures() []*Signature {
	out := make([]*Signature, 0, len(m.sigs))
	for _, s := range m.sigs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Signature returns the signature with the given key.
func (m *Model) Signature(key string) (*Signature, error) {
	s, ok := m.sigs[key]
	if !ok {
		known := make([]string, 0, len(m.sigs))
		for k := range m.sigs {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, &Error{Kind: ErrUnknownSignature, Model: m.dir, Signature: key,
			Msg: "model has " + quoteList(known)}
	}
	return s, nil
}

// Close ends the session and frees the graph, after runs in flight finish.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.session == nil {
		return nil
	}
	st := newStatus()
	defer st.free()
	C.TF_CloseSession(m.session, st.c)
	C.TF_DeleteSession(m.session, st.c)
	C.TF_DeleteGraph(m.graph)
	m.session, m.graph = nil, nil
	if !st.ok() {
		return &Error{Kind: ErrRun, Model: m.dir, TFCode: st.code(), Msg: "closing session: " + st.message()}
	}
	return nil
}

// Run runs a signature on named inputs and returns every output by key. It
// builds a Runner per call; the hot path should keep a Runner instead.
func (m *Model) Run(signature string, inputs map[string]*Tensor) (map[string]*Tensor, error) {
	inKeys := make([]string, 0, len(inputs))
	for k := range inputs {
		inKeys = append(inKeys, k)
	}
	sort.Strings(inKeys)
	r, err := m.Runner(signature, inKeys, nil)
	if err != nil {
		return nil, err
	}
	in := make([]*Tensor, len(inKeys))
	for i, k := range inKeys {
		in[i] = inputs[k]
	}
	outs, err := r.Run(in...)
	if err != nil {
		return nil, err
	}
	res := make(map[string]*Tensor, len(outs))
	for i, o := range r.Outputs() {
		res[o.Key] = outs[i]
	}
	return res, nil
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
