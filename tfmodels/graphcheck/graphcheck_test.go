package graphcheck

import (
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// msg builds a serialised message from length-delimited fields.
func msg(fs ...[]byte) []byte { return slices.Concat(fs...) }

func field(num protowire.Number, val []byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, val)
}

func str(num protowire.Number, s string) []byte { return field(num, []byte(s)) }

// nodeDef is a NodeDef; inputs may be "x", "x:0" or "^x"; fattrs maps an
// attr name to the function it names (AttrValue.func).
func nodeDef(name, op string, inputs []string, fattrs map[string]string) []byte {
	b := msg(str(nodeName, name), str(nodeOp, op))
	for _, in := range inputs {
		b = append(b, str(nodeInput, in)...)
	}
	for k, f := range fattrs {
		attr := field(attrFunc, str(nameAttrsName, f))
		b = append(b, field(nodeAttr, msg(str(1, k), field(mapValue, attr)))...)
	}
	return b
}

func functionDef(name string, nodes ...[]byte) []byte {
	b := field(functionSignature, str(opDefName, name))
	for _, n := range nodes {
		b = append(b, field(functionNodeDef, n)...)
	}
	return b
}

// savedModel is a SavedModel with one MetaGraphDef: nodes in the graph,
// functions in its library, and a SaverDef whose save tensor and restore
// op are saveTensor and restoreOp ("" for no SaverDef).
func savedModel(nodes [][]byte, functions [][]byte, saveTensor, restoreOp string) []byte {
	var graph []byte
	for _, n := range nodes {
		graph = append(graph, field(graphNode, n)...)
	}
	var lib []byte
	for _, f := range functions {
		lib = append(lib, field(libraryFunction, f)...)
	}
	if lib != nil {
		graph = append(graph, field(graphLibrary, lib)...)
	}
	mg := field(metaGraphGraphDef, graph)
	if restoreOp != "" {
		mg = append(mg, field(metaGraphSaverDef, msg(str(1, "saver_filename:0"), str(saverSaveTensor, saveTensor), str(saverRestoreOp, restoreOp)))...)
	}
	return field(savedModelMetaGraphs, mg)
}

// tf2Saver is the saver of a TF2 SavedModel: StatefulPartitionedCall_1
// (save) and _2 (restore) call the traced save and restore functions.
func tf2Saver() (nodes, functions [][]byte) {
	nodes = [][]byte{
		nodeDef("saver_filename", "Placeholder", nil, nil),
		nodeDef("StatefulPartitionedCall_1", "StatefulPartitionedCall", []string{"saver_filename"}, map[string]string{"f": "__inference__traced_save_9"}),
		nodeDef("StatefulPartitionedCall_2", "StatefulPartitionedCall", []string{"saver_filename"}, map[string]string{"f": "__inference__traced_restore_10"}),
	}
	functions = [][]byte{
		functionDef("__inference__traced_save_9",
			nodeDef("ShardedFilename", "ShardedFilename", nil, nil),
			nodeDef("SaveV2", "SaveV2", []string{"ShardedFilename:filename:0"}, nil),
			nodeDef("MergeV2Checkpoints", "MergeV2Checkpoints", []string{"^SaveV2"}, nil)),
		functionDef("__inference__traced_restore_10",
			nodeDef("RestoreV2", "RestoreV2", nil, nil),
			nodeDef("assign", "StatefulPartitionedCall", []string{"RestoreV2:tensors:0"}, map[string]string{"f": "__inference_assign_11"})),
		functionDef("__inference_assign_11", nodeDef("RestoreV2_1", "RestoreV2", nil, nil)),
	}
	return nodes, functions
}

func TestADeniedOpIsFoundWhereverItIs(t *testing.T) {
	saverNodes, saverFuncs := tf2Saver()
	tests := []struct {
		name      string
		nodes     [][]byte
		functions [][]byte
		want      Use
	}{
		{"in the graph",
			[][]byte{nodeDef("x", "Placeholder", nil, nil), nodeDef("leak", "WriteFile", []string{"x"}, nil)}, nil,
			Use{Op: "WriteFile", Node: "leak"}},
		{"in a function the serving signature calls",
			[][]byte{nodeDef("serve", "StatefulPartitionedCall", nil, map[string]string{"f": "__inference_serve_42"})},
			[][]byte{functionDef("__inference_serve_42", nodeDef("ReadFile", "ReadFile", nil, nil))},
			Use{Op: "ReadFile", Node: "ReadFile", Function: "__inference_serve_42"}},
		{"in a function called by op name from a while body",
			[][]byte{nodeDef("loop", "While", nil, map[string]string{"body": "body_1", "cond": "cond_1"})},
			[][]byte{functionDef("body_1", nodeDef("call", "helper_2", nil, nil)), functionDef("cond_1"),
				functionDef("helper_2", nodeDef("py", "EagerPyFunc", nil, nil))},
			Use{Op: "EagerPyFunc", Node: "py", Function: "helper_2"}},
		{"in a function no node calls",
			nil, [][]byte{functionDef("orphan_3", nodeDef("ds", "TFRecordDatasetV2", nil, nil))},
			Use{Op: "TFRecordDatasetV2", Node: "ds", Function: "orphan_3"}},
		{"a saver op in the serving function",
			[][]byte{nodeDef("serve", "StatefulPartitionedCall", nil, map[string]string{"f": "__inference_serve_42"})},
			[][]byte{functionDef("__inference_serve_42", nodeDef("steal", "RestoreV2", nil, nil))},
			Use{Op: "RestoreV2", Node: "steal", Function: "__inference_serve_42"}},
		{"a saver op in the graph outside the saver",
			[][]byte{nodeDef("x", "Placeholder", nil, nil), nodeDef("save/SaveV2", "SaveV2", []string{"x"}, nil)}, nil,
			Use{Op: "SaveV2", Node: "save/SaveV2"}},
		{"a saver function the serving signature calls too",
			[][]byte{nodeDef("serve", "StatefulPartitionedCall", nil, map[string]string{"f": "__inference__traced_save_9"})}, nil,
			Use{Op: "SaveV2", Node: "SaveV2", Function: "__inference__traced_save_9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Check(savedModel(append(slices.Clone(saverNodes), tt.nodes...), append(slices.Clone(saverFuncs), tt.functions...),
				"StatefulPartitionedCall_1:0", "StatefulPartitionedCall_2"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(r.Denied, tt.want) {
				t.Fatalf("denied %+v, want it to hold %+v", r.Denied, tt.want)
			}
			if r.Ops[tt.want.Op] == 0 {
				t.Errorf("Ops %v does not count %s", r.Ops, tt.want.Op)
			}
		})
	}
}

func TestTheSaverMayRestoreAndSaveVariables(t *testing.T) {
	nodes, functions := tf2Saver()
	r, err := Check(savedModel(nodes, functions, "StatefulPartitionedCall_1:0", "StatefulPartitionedCall_2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Denied) != 0 {
		t.Fatalf("denied %+v in the saver", r.Denied)
	}
	if r.Ops["RestoreV2"] != 2 || r.Ops["SaveV2"] != 1 || r.Ops["MergeV2Checkpoints"] != 1 {
		t.Errorf("ops %v: want RestoreV2 2, SaveV2 1, MergeV2Checkpoints 1", r.Ops)
	}

	// A TF1 saver: plain graph nodes reached through inputs and control inputs.
	tf1 := [][]byte{
		nodeDef("save/Const", "Const", nil, nil),
		nodeDef("save/SaveV2", "SaveV2", []string{"save/Const"}, nil),
		nodeDef("save/control_dependency", "Identity", []string{"save/Const", "^save/SaveV2"}, nil),
		nodeDef("save/RestoreV2", "RestoreV2", []string{"save/Const"}, nil),
		nodeDef("save/Assign", "AssignVariableOp", []string{"save/RestoreV2:0"}, nil),
		nodeDef("save/restore_all", "NoOp", []string{"^save/Assign"}, nil),
	}
	if r, err := Check(savedModel(tf1, nil, "save/control_dependency:0", "save/restore_all"), nil); err != nil || len(r.Denied) != 0 {
		t.Fatalf("TF1 saver: denied %+v, err %v", r.Denied, err)
	}
	// Without a SaverDef nothing is the saver's.
	if r, err := Check(savedModel(tf1, nil, "", ""), nil); err != nil || len(r.DeniedOps()) != 2 {
		t.Fatalf("no SaverDef: denied %v, err %v; want RestoreV2 and SaveV2", r.DeniedOps(), err)
	}
}

func TestAllowOpsLetsTheNamedOpsThrough(t *testing.T) {
	pb := savedModel([][]byte{nodeDef("r", "ReadFile", nil, nil), nodeDef("p", "PrintV2", nil, nil), nodeDef("w", "WriteFile", nil, nil)}, nil, "", "")
	r, err := Check(pb, []string{"ReadFile", "PrintV2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.DeniedOps(); !slices.Equal(got, []string{"WriteFile"}) {
		t.Fatalf("denied %v, want [WriteFile]", got)
	}
	if r.Ops["ReadFile"] != 1 {
		t.Errorf("an allowed op is still counted: Ops %v", r.Ops)
	}
}

func TestTheErrorNamesTheOpWhereItIsAndHowToAllowIt(t *testing.T) {
	pb := savedModel(nil, [][]byte{functionDef("__inference_serve_42", nodeDef("ReadFile", "ReadFile", nil, nil),
		nodeDef("w", "WriteFile", nil, nil), nodeDef("w2", "WriteFile", nil, nil))}, "", "")
	r, err := Check(pb, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := r.Err("/m/1/saved_model.pb", "digits").Error()
	want := `/m/1/saved_model.pb: op ReadFile (node "ReadFile" in function __inference_serve_42) reads files: denied (and 2 more denied node(s)); allow them with [serving.digits] allow_ops = ["ReadFile", "WriteFile"]`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var de *DeniedError
	if !errors.As(r.Err("f", "m"), &de) || !slices.Equal(de.Ops, []string{"ReadFile", "WriteFile"}) {
		t.Errorf("DeniedError %+v", de)
	}
	if (Report{}).Err("f", "m") != nil {
		t.Error("a report with nothing denied has an error")
	}
}

func TestBytesThatAreNotASavedModelAreAnError(t *testing.T) {
	whole := savedModel([][]byte{nodeDef("r", "ReadFile", nil, nil)}, nil, "", "")
	for name, b := range map[string][]byte{
		"empty":        nil,
		"cut short":    whole[:len(whole)-3],
		"no metagraph": str(1, "x"),
		"bad tag":      {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, err := Check(b, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func TestEveryDeniedOpIsInTensorFlowsRegistry(t *testing.T) {
	// testdata/registered_ops.txt: the names of every op TensorFlow
	// registers (README.md says how it is made).
	b, err := os.ReadFile(filepath.Join("testdata", "registered_ops.txt"))
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, op := range strings.Fields(string(b)) {
		registered[op] = true
	}
	for op := range denied {
		if !registered[op] {
			t.Errorf("denied op %s is not a TensorFlow op", op)
		}
	}
}

// zooModels lists the saved_model.pb of every version in the exported zoo
// ($EDGEINFER_MODELS) and the imported real models ($EDGEINFER_REAL_MODELS).
func zooModels(t *testing.T) []string {
	var files []string
	for _, env := range []string{"EDGEINFER_MODELS", "EDGEINFER_REAL_MODELS"} {
		dir := os.Getenv(env)
		if dir == "" {
			t.Logf("%s is not set: its models are not checked", env)
			continue
		}
		m, err := filepath.Glob(filepath.Join(dir, "*", "*", "saved_model.pb"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no model to check: set EDGEINFER_MODELS (make test does)")
	}
	return files
}

func TestEveryShippedModelPasses(t *testing.T) {
	for _, f := range zooModels(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Check(b, nil)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := r.Err(f, "m"); err != nil {
			t.Error(err)
		}
		var saver []string
		for _, op := range saverOps {
			if r.Ops[op] > 0 {
				saver = append(saver, op)
			}
		}
		t.Logf("%s: %d nodes, saver ops %v, ops %v", f, sum(r.Ops), saver, slices.Sorted(maps.Keys(r.Ops)))
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// python is the project's venv interpreter, or $EDGEINFER_PYTHON.
func python(t *testing.T) string {
	t.Helper()
	py := os.Getenv("EDGEINFER_PYTHON")
	if py == "" {
		py = filepath.Join("..", "..", ".venv", "bin", "python")
	}
	abs, err := filepath.Abs(py)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		t.Fatalf("python with TensorFlow not found (run `make deps` or set EDGEINFER_PYTHON): %v", err)
	}
	return abs
}

func TestTheCraftedModelsReadFileIsDenied(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python(t), "-m", "tfmodels.zoo.malicious", "--out", filepath.Join(dir, "repo"), "--read", secret)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tfmodels.zoo.malicious: %v\n%s", err, out)
	}
	pb := filepath.Join(dir, "repo", "malicious", "1", "saved_model.pb")
	b, err := os.ReadFile(pb)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Check(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.DeniedOps(); !slices.Equal(got, []string{"ReadFile"}) {
		t.Fatalf("denied %v, want [ReadFile]", got)
	}
	if u := r.Denied[0]; u.Node != "ReadFile" || !strings.HasPrefix(u.Function, "__inference_serve_") {
		t.Errorf("found %s, want the ReadFile node of the serve function", u.Where())
	}
	t.Log(r.Err(pb, "malicious"))
	if r, _ := Check(b, []string{"ReadFile"}); len(r.Denied) != 0 {
		t.Errorf("allow_ops ReadFile: still denied %+v", r.Denied)
	}
}
