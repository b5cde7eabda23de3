package tfmodels

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// metaGraphFromFile pulls the first MetaGraphDef (SavedModel.meta_graphs = 2)
// out of a saved_model.pb.
func metaGraphFromFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var meta []byte
	fields(b, func(num protowire.Number, typ protowire.Type, val []byte, _ uint64) error {
		if num == 2 && typ == protowire.BytesType && meta == nil {
			meta = val
		}
		return nil
	})
	if meta == nil {
		tb.Fatalf("%s: no MetaGraphDef", path)
	}
	return meta
}

func TestParseSignaturesReadsTheFileTensorFlowWrote(t *testing.T) {
	sigs, err := parseSignatures(metaGraphFromFile(t, filepath.Join(multiDir(t), "saved_model.pb")))
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 4 || sigs["types"] == nil || len(sigs["types"].Inputs) != 4 || len(sigs["types"].Outputs) != 5 {
		t.Fatalf("parsed %d signatures: %+v", len(sigs), sigs)
	}
	for _, cut := range []int{1, 7, 100} { // truncated messages are errors, not panics
		meta := metaGraphFromFile(t, filepath.Join(multiDir(t), "saved_model.pb"))
		if _, err := parseSignatures(meta[:len(meta)-cut]); err == nil {
			t.Errorf("MetaGraphDef cut by %d bytes parsed without error", cut)
		}
	}
}

// FuzzParseSignatures feeds arbitrary bytes to the MetaGraphDef reader: it
// must return signatures or an error, never panic.
func FuzzParseSignatures(f *testing.F) {
	f.Add(metaGraphFromFile(f, filepath.Join(fixtures, "multi", "saved_model.pb")))
	f.Add([]byte{0x2a, 0x05, 0x0a, 0x01, 'k', 0x12, 0x00})
	f.Add([]byte{0x2a, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		sigs, err := parseSignatures(b)
		if err == nil {
			for k, s := range sigs {
				if s.Key != k {
					t.Fatalf("signature stored under %q has key %q", k, s.Key)
				}
			}
		}
	})
}
