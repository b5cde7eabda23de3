// Package graphcheck vets the ops of a SavedModel before anything loads it.
//
// A SavedModel is a program, and some of TensorFlow's ops reach outside the
// process: they read and write files (ReadFile, WriteFile, dataset readers,
// summary writers), talk over the network (RPC, the data service), run
// Python (PyFunc) or print. A model that only classifies frames needs none
// of them. Check parses saved_model.pb in pure Go (protowire, no
// TensorFlow), looks at the op of every node of every MetaGraphDef's graph
// and of every function in its library (TF2 SavedModels hold their whole
// computation in functions called through StatefulPartitionedCall), and
// reports each node whose op the deny-list holds (see ops.go and
// README.md) and the caller did not allow.
//
// The ops that restore and save variables (RestoreV2, SaveV2,
// MergeV2Checkpoints...) are needed by every SavedModel with variables:
// they are allowed only in the saver's subgraph, what the SaverDef's
// restore_op_name and save_tensor_name reach through inputs, control
// inputs and the functions their nodes call (by op name or through
// function-valued attrs such as f, then_branch or body).
package graphcheck

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgeinfer/edgeinfer/tfmodels/pbwire"
)

// Field numbers of TensorFlow's protos (tensorflow/core/protobuf and
// tensorflow/core/framework).
const (
	savedModelMetaGraphs = 2 // SavedModel.meta_graphs

	metaGraphGraphDef = 2 // MetaGraphDef.graph_def
	metaGraphSaverDef = 3 // MetaGraphDef.saver_def

	saverSaveTensor = 2 // SaverDef.save_tensor_name
	saverRestoreOp  = 3 // SaverDef.restore_op_name

	graphNode    = 1 // GraphDef.node
	graphLibrary = 2 // GraphDef.library

	libraryFunction = 1 // FunctionDefLibrary.function

	functionSignature = 1 // FunctionDef.signature (an OpDef)
	functionNodeDef   = 3 // FunctionDef.node_def
	opDefName         = 1 // OpDef.name

	nodeName  = 1 // NodeDef.name
	nodeOp    = 2 // NodeDef.op
	nodeInput = 3 // NodeDef.input
	nodeAttr  = 5 // NodeDef.attr (map<string, AttrValue>)

	mapValue = 2 // a map entry's value

	attrList      = 1  // AttrValue.list
	attrFunc      = 10 // AttrValue.func (a NameAttrList)
	listFunc      = 9  // AttrValue.ListValue.func
	nameAttrsName = 1  // NameAttrList.name
	nameAttrsAttr = 2  // NameAttrList.attr (map<string, AttrValue>)
)

// Use is one node and its op.
type Use struct {
	Op       string
	Node     string
	Function string // the library function that holds the node; "" for the graph
}

// Where says where the node is: `node "x" in function f` or `node "x" in
// the graph`.
func (u Use) Where() string {
	if u.Function == "" {
		return fmt.Sprintf("node %q in the graph", u.Node)
	}
	return fmt.Sprintf("node %q in function %s", u.Node, u.Function)
}

// Report is what Check found.
type Report struct {
	// Ops counts the nodes of every op, graph and functions together.
	Ops map[string]int
	// Denied lists the nodes whose op is denied and not allowed, in the
	// order of the file.
	Denied []Use
}

// DeniedOps lists the distinct ops of Denied, sorted.
func (r Report) DeniedOps() []string {
	ops := map[string]bool{}
	for _, u := range r.Denied {
		ops[u.Op] = true
	}
	return slices.Sorted(maps.Keys(ops))
}

// Err is nil when no op is denied; otherwise it names the first denied
// node, why its op is denied, how many more there are, and the allow_ops
// line of [serving.<model>] that would allow them all:
//
//	<file>: op ReadFile (node "ReadFile" in function __inference_serve_42) reads files: denied; allow it with [serving.m] allow_ops = ["ReadFile"]
func (r Report) Err(file, model string) error {
	if len(r.Denied) == 0 {
		return nil
	}
	u := r.Denied[0]
	why, _ := Denied(u.Op)
	var more string
	if n := len(r.Denied) - 1; n > 0 {
		more = fmt.Sprintf(" (and %d more denied node(s))", n)
	}
	ops := r.DeniedOps()
	quoted := make([]string, len(ops))
	for i, op := range ops {
		quoted[i] = fmt.Sprintf("%q", op)
	}
	it := "it"
	if len(ops) > 1 {
		it = "them"
	}
	return &DeniedError{File: file, Ops: ops, msg: fmt.Sprintf("%s: op %s (%s) %s: denied%s; allow %s with [serving.%s] allow_ops = [%s]",
		file, u.Op, u.Where(), why, more, it, model, strings.Join(quoted, ", "))}
}

// DeniedError is Report.Err's error.
type DeniedError struct {
	File string
	Ops  []string // the denied ops, sorted
	msg  string
}

func (e *DeniedError) Error() string { return e.msg }

// ErrMalformed is wrapped by Check's errors about the file's encoding.
var ErrMalformed = errors.New("not a well-formed SavedModel")

// Check parses a serialised SavedModel and reports every op it uses and
// every node whose op is denied, except the ops in allow and the saver's
// ops inside the saver's subgraph. Its error says the bytes are not a
// SavedModel (wrapping ErrMalformed).
func Check(savedModel []byte, allow []string) (Report, error) {
	r := Report{Ops: map[string]int{}}
	metaGraphs := 0
	err := fields(savedModel, func(num protowire.Number, val []byte) error {
		if num != savedModelMetaGraphs {
			return nil
		}
		metaGraphs++
		g, err := parseMetaGraph(val)
		if err != nil {
			return fmt.Errorf("meta graph %d: %w", metaGraphs, err)
		}
		g.check(&r, allow)
		return nil
	})
	if err != nil {
		return Report{}, err
	}
	if metaGraphs == 0 {
		return Report{}, fmt.Errorf("%w: no MetaGraphDef", ErrMalformed)
	}
	return r, nil
}

// node is what Check needs of a NodeDef.
type node struct {
	name, op string
	inputs   []string // node names, without ":port" or the control "^"
	calls    []string // function names in its attrs
}

type function struct {
	name  string
	nodes []node
}

// metaGraph is what Check needs of a MetaGraphDef.
type metaGraph struct {
	nodes     []node
	functions map[string]*function
	order     []string // function names in the order of the file
	saver     []string // the saver's root node names
}

func parseMetaGraph(b []byte) (*metaGraph, error) {
	g := &metaGraph{functions: map[string]*function{}}
	err := fields(b, func(num protowire.Number, val []byte) error {
		switch num {
		case metaGraphGraphDef:
			return g.parseGraph(val)
		case metaGraphSaverDef:
			return fields(val, func(num protowire.Number, val []byte) error {
				if num == saverSaveTensor || num == saverRestoreOp {
					if name := nodeOf(string(val)); name != "" {
						g.saver = append(g.saver, name)
					}
				}
				return nil
			})
		}
		return nil
	})
	return g, err
}

func (g *metaGraph) parseGraph(b []byte) error {
	return fields(b, func(num protowire.Number, val []byte) error {
		switch num {
		case graphNode:
			n, err := parseNode(val)
			if err != nil {
				return fmt.Errorf("graph node %d: %w", len(g.nodes)+1, err)
			}
			g.nodes = append(g.nodes, n)
		case graphLibrary:
			return fields(val, func(num protowire.Number, val []byte) error {
				if num != libraryFunction {
					return nil
				}
				f, err := parseFunction(val)
				if err != nil {
					return fmt.Errorf("library function %d: %w", len(g.order)+1, err)
				}
				if _, dup := g.functions[f.name]; !dup {
					g.order = append(g.order, f.name)
				}
				g.functions[f.name] = f
				return nil
			})
		}
		return nil
	})
}

func parseFunction(b []byte) (*function, error) {
	f := &function{}
	err := fields(b, func(num protowire.Number, val []byte) error {
		switch num {
		case functionSignature:
			return fields(val, func(num protowire.Number, val []byte) error {
				if num == opDefName {
					f.name = string(val)
				}
				return nil
			})
		case functionNodeDef:
			n, err := parseNode(val)
			if err != nil {
				return fmt.Errorf("node %d: %w", len(f.nodes)+1, err)
			}
			f.nodes = append(f.nodes, n)
		}
		return nil
	})
	if err == nil && f.name == "" {
		err = fmt.Errorf("%w: a function without a name", ErrMalformed)
	}
	return f, err
}

func parseNode(b []byte) (node, error) {
	var n node
	err := fields(b, func(num protowire.Number, val []byte) error {
		switch num {
		case nodeName:
			n.name = string(val)
		case nodeOp:
			n.op = string(val)
		case nodeInput:
			if in := nodeOf(string(val)); in != "" {
				n.inputs = append(n.inputs, in)
			}
		case nodeAttr:
			return fields(val, func(num protowire.Number, val []byte) error {
				if num == mapValue {
					return funcsOfAttr(val, &n.calls)
				}
				return nil
			})
		}
		return nil
	})
	return n, err
}

// funcsOfAttr appends the functions an AttrValue names: its func, the
// funcs of its list, and those in the attrs of each (a function's own
// attrs may name functions).
func funcsOfAttr(b []byte, out *[]string) error {
	return fields(b, func(num protowire.Number, val []byte) error {
		switch num {
		case attrFunc:
			return funcsOfNameAttrs(val, out)
		case attrList:
			return fields(val, func(num protowire.Number, val []byte) error {
				if num == listFunc {
					return funcsOfNameAttrs(val, out)
				}
				return nil
			})
		}
		return nil
	})
}

func funcsOfNameAttrs(b []byte, out *[]string) error {
	return fields(b, func(num protowire.Number, val []byte) error {
		switch num {
		case nameAttrsName:
			*out = append(*out, string(val))
		case nameAttrsAttr:
			return fields(val, func(num protowire.Number, val []byte) error {
				if num == mapValue {
					return funcsOfAttr(val, out)
				}
				return nil
			})
		}
		return nil
	})
}

// nodeOf returns the node name of an input or tensor name: "^x" (a
// control input), "x:0" (a graph tensor) and "x:output:0" (a function
// tensor) are all node x.
func nodeOf(s string) string {
	s = strings.TrimPrefix(s, "^")
	name, _, _ := strings.Cut(s, ":")
	return name
}

// check adds the graph's ops and denied nodes to r.
func (g *metaGraph) check(r *Report, allow []string) {
	saverNodes, saverFuncs := g.reach(g.saver)
	var others []string
	for _, n := range g.nodes {
		if !saverNodes[n.name] {
			others = append(others, n.name)
		}
	}
	_, otherFuncs := g.reach(others)
	deny := func(u Use, inSaver bool) {
		r.Ops[u.Op]++
		if _, ok := denied[u.Op]; !ok || slices.Contains(allow, u.Op) || (inSaver && isSaverOp(u.Op)) {
			return
		}
		r.Denied = append(r.Denied, u)
	}
	for _, n := range g.nodes {
		deny(Use{Op: n.op, Node: n.name}, saverNodes[n.name])
	}
	for _, name := range g.order {
		// A function is the saver's only if nothing else calls it; one
		// no node calls at all is not the saver's either.
		inSaver := saverFuncs[name] && !otherFuncs[name]
		for _, n := range g.functions[name].nodes {
			deny(Use{Op: n.op, Node: n.name, Function: name}, inSaver)
		}
	}
}

// reach returns the graph nodes reachable from roots through their inputs,
// and every function those nodes call, transitively (a function's nodes
// call functions too).
func (g *metaGraph) reach(roots []string) (nodes, funcs map[string]bool) {
	byName := make(map[string]*node, len(g.nodes))
	for i := range g.nodes {
		byName[g.nodes[i].name] = &g.nodes[i]
	}
	nodes, funcs = map[string]bool{}, map[string]bool{}
	var callees []string
	calls := func(n *node) {
		if _, ok := g.functions[n.op]; ok {
			callees = append(callees, n.op)
		}
		callees = append(callees, n.calls...)
	}
	stack := slices.Clone(roots)
	for len(stack) > 0 {
		name := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := byName[name]
		if n == nil || nodes[name] {
			continue
		}
		nodes[name] = true
		calls(n)
		stack = append(stack, n.inputs...)
	}
	for len(callees) > 0 {
		name := callees[len(callees)-1]
		callees = callees[:len(callees)-1]
		f := g.functions[name]
		if f == nil || funcs[name] {
			continue
		}
		funcs[name] = true
		for i := range f.nodes {
			calls(&f.nodes[i])
		}
	}
	return nodes, funcs
}

// fields calls fn with the number and bytes of each length-delimited field
// of a serialised message, skipping the others.
func fields(b []byte, fn func(num protowire.Number, val []byte) error) error {
	var bad error
	err := pbwire.Each(b, func(f pbwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		if err := fn(f.Num, f.Bytes); err != nil {
			bad = err
			return err
		}
		return nil
	})
	if err != nil && err != bad {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return err
}
