package repo

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// realFiles returns the file called name (a path inside a version folder)
// of the n versions of the exported zoo where it is smallest, as fuzzing
// seeds: the fuzzer mutates small inputs faster.
func realFiles(f *testing.F, name string, n int) [][]byte {
	f.Helper()
	paths, err := filepath.Glob(filepath.Join(zooDir(f), "*", "*", name))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no %s in the exported zoo: %v", name, err)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b []byte) int { return len(a) - len(b) })
	return out[:min(n, len(out))]
}

// wholeMessage is the reference for checkSavedModel: every top-level field
// of b is a whole varint, fixed32, fixed64 or length-delimited field, and
// one is a MetaGraphDef (field 2, length-delimited).
func wholeMessage(b []byte) bool {
	metaGraphs := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		switch typ {
		case protowire.VarintType, protowire.Fixed32Type, protowire.Fixed64Type, protowire.BytesType:
		default:
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return false
		}
		if num == 2 && typ == protowire.BytesType {
			metaGraphs++
		}
		b = b[n+m:]
	}
	return metaGraphs > 0
}

// FuzzCheckSavedModel writes arbitrary bytes as saved_model.pb: the check
// accepts exactly the whole SavedModel messages (as protowire reads them),
// reads the file in windows without ever panicking, and every refusal names
// the file.
func FuzzCheckSavedModel(f *testing.F) {
	// Not a real saved_model.pb (55 KB and more): the fuzzer minimizes
	// every new input it finds interesting, which takes minutes at that
	// size. Only the top-level fields matter here, and savedModelPB has
	// those of a real one.
	pb := savedModelPB()
	f.Add(pb)
	f.Add(pb[:len(pb)-1])
	f.Add(pb[:len(pb)/2])
	f.Add([]byte{0x08, 0x01})                   // schema version only: no MetaGraphDef
	f.Add([]byte{0x12, 0xff, 0xff, 0xff, 0x0f}) // a MetaGraphDef of 4 GiB announced
	f.Add([]byte{0x13, 0x14})                   // a group
	path := filepath.Join(f.TempDir(), SavedModelFile)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		err := checkSavedModel(path)
		if want := wholeMessage(b); (err == nil) != want {
			t.Fatalf("checkSavedModel = %v for a file protowire reads as a whole SavedModel: %v", err, want)
		}
		var fe *fileError
		if err != nil && (!errors.As(err, &fe) || !strings.HasPrefix(err.Error(), path+": ")) {
			t.Fatalf("the error does not name the file: %v", err)
		}
	})
}

// FuzzParseBundleIndex feeds arbitrary bytes to the variables.index
// reader: it returns an error or an index whose shards are all in range
// with lengths >= 0, never panics, and never reads outside the file. The
// same bytes go straight to the block and entry readers too, which a
// mutated file rarely reaches past the blocks' checksums.
func FuzzParseBundleIndex(f *testing.F) {
	f.Add(defaultBundle().index())
	compressed := defaultBundle()
	compressed.compression = 1
	f.Add(compressed.index())
	for _, b := range realFiles(f, IndexFile, 3) {
		f.Add(b)
	}
	f.Add(make([]byte, footerLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		walkBlock(b, func(key, value []byte) error {
			if shard, end, err := parseBundleEntry(value); err == nil && (shard < 0 || end < -1) {
				t.Fatalf("entry %q: shard %d, end %d", key, shard, end)
			}
			parseBundleHeader(value)
			return nil
		})
		idx, err := parseBundleIndex(b)
		if err != nil {
			return
		}
		if idx.compressed {
			if len(idx.need) != 0 {
				t.Fatalf("a compressed index gives shard lengths: %v", idx.need)
			}
			return
		}
		if idx.numShards <= 0 {
			t.Fatalf("accepted with %d shards", idx.numShards)
		}
		for shard, end := range idx.need {
			if shard < 0 || shard >= idx.numShards || end < 0 {
				t.Fatalf("shard %d must be %d bytes long; the bundle has %d shards", shard, end, idx.numShards)
			}
		}
	})
}
