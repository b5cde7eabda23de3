package repo

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// zooDir is the exported tiny zoo: $EDGEINFER_MODELS (make test sets it), or
// the repository's models/ folder.
func zooDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("EDGEINFER_MODELS"); dir != "" {
		return dir
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "models"))
	if err == nil {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir
		}
	}
	t.Fatal("EDGEINFER_MODELS is not set and ../../models does not exist: run `make models` and point EDGEINFER_MODELS at it (make test does)")
	return ""
}

// zooVersions returns the version folders of the zoo.
func zooVersions(t *testing.T) []string {
	t.Helper()
	idx, err := filepath.Glob(filepath.Join(zooDir(t), "*", "*", IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) == 0 {
		t.Fatalf("no */*/%s under %s: run `make models`", IndexFile, zooDir(t))
	}
	dirs := make([]string, len(idx))
	for i, p := range idx {
		dirs[i] = filepath.Dir(filepath.Dir(p))
	}
	return dirs
}

// copyDir copies the folder src to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(to)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

// age sets the modification time of every file under dir to an hour ago.
func age(t *testing.T, dir string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

const manifestTOML = `task = "classify"
signature = "serving_default"
labels = ["a", "b"]
[input]
key = "images"
height = 8
width = 8
channels = 1
layout = "NHWC"
dtype = "float32"
resize = "stretch"
scale = 1.0
mean = [0.0]
std = [1.0]
[output]
logits = "logits"
softmax = true
`

// tensor is one entry of a fake tensor bundle.
type tensor struct {
	name   string
	shard  int
	offset int64
	size   int64
	sliced bool // a partitioned tensor's full entry: slices, no bytes
}

// bundle describes a fake tensor bundle.
type bundle struct {
	shards      int
	tensors     []tensor
	perBlock    int  // entries per data block (default 4)
	restart     int  // restart interval (default 3)
	compression byte // block compression type (0: none)
}

// defaultBundle: two shards, tensors spread over several data blocks.
func defaultBundle() bundle {
	b := bundle{shards: 2}
	var off [2]int64
	for i, name := range []string{"dense/bias", "dense/kernel", "conv1/bias", "conv1/kernel", "conv2/bias",
		"conv2/kernel", "_CHECKPOINTABLE_OBJECT_GRAPH", "optimizer/iter", "conv2/kernel/m"} {
		s := i % 2
		size := int64(64 * (i + 1))
		b.tensors = append(b.tensors, tensor{name: name, shard: s, offset: off[s], size: size})
		off[s] += size
	}
	return b
}

// need is the length each shard must have.
func (b bundle) need() map[int]int64 {
	need := map[int]int64{}
	for _, t := range b.tensors {
		if !t.sliced && t.offset+t.size > need[t.shard] {
			need[t.shard] = t.offset + t.size
		}
	}
	return need
}

// index encodes the bundle's variables.index: a TensorFlow table (the
// LevelDB format) of the header (empty key) and one BundleEntryProto per
// tensor, in key order.
func (b bundle) index() []byte {
	perBlock, restart := b.perBlock, b.restart
	if perBlock == 0 {
		perBlock = 4
	}
	if restart == 0 {
		restart = 3
	}
	type kv struct{ k, v []byte }
	var header []byte
	header = protowire.AppendTag(header, 1, protowire.VarintType)
	header = protowire.AppendVarint(header, uint64(b.shards))
	version := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	header = protowire.AppendTag(header, 3, protowire.BytesType)
	header = protowire.AppendBytes(header, version)
	kvs := []kv{{nil, header}}
	tensors := append([]tensor(nil), b.tensors...)
	sort.Slice(tensors, func(i, j int) bool { return tensors[i].name < tensors[j].name })
	for _, t := range tensors {
		var e []byte
		e = protowire.AppendVarint(protowire.AppendTag(e, 1, protowire.VarintType), 1) // DT_FLOAT
		e = protowire.AppendBytes(protowire.AppendTag(e, 2, protowire.BytesType), nil)
		if t.shard != 0 {
			e = protowire.AppendVarint(protowire.AppendTag(e, 3, protowire.VarintType), uint64(t.shard))
		}
		if t.offset != 0 {
			e = protowire.AppendVarint(protowire.AppendTag(e, 4, protowire.VarintType), uint64(t.offset))
		}
		if t.size != 0 {
			e = protowire.AppendVarint(protowire.AppendTag(e, 5, protowire.VarintType), uint64(t.size))
		}
		e = protowire.AppendFixed32(protowire.AppendTag(e, 6, protowire.Fixed32Type), 0x12345678)
		if t.sliced {
			e = protowire.AppendBytes(protowire.AppendTag(e, 7, protowire.BytesType), []byte{0x0a, 0x00})
		}
		kvs = append(kvs, kv{[]byte(t.name), e})
	}

	var file []byte
	writeBlock := func(entries []kv, restartEvery int) (off, size uint64) {
		var blk []byte
		var restarts []uint32
		var prev []byte
		for i, e := range entries {
			shared := 0
			if i%restartEvery == 0 {
				restarts = append(restarts, uint32(len(blk)))
			} else {
				for shared < len(prev) && shared < len(e.k) && prev[shared] == e.k[shared] {
					shared++
				}
			}
			blk = protowire.AppendVarint(blk, uint64(shared))
			blk = protowire.AppendVarint(blk, uint64(len(e.k)-shared))
			blk = protowire.AppendVarint(blk, uint64(len(e.v)))
			blk = append(blk, e.k[shared:]...)
			blk = append(blk, e.v...)
			prev = e.k
		}
		if len(restarts) == 0 {
			restarts = []uint32{0}
		}
		for _, r := range restarts {
			blk = binary.LittleEndian.AppendUint32(blk, r)
		}
		blk = binary.LittleEndian.AppendUint32(blk, uint32(len(restarts)))
		off, size = uint64(len(file)), uint64(len(blk))
		file = append(file, blk...)
		file = append(file, b.compression)
		crc := crc32.Checksum(file[off:], crc32.MakeTable(crc32.Castagnoli))
		file = binary.LittleEndian.AppendUint32(file, (crc>>15|crc<<17)+0xa282ead8)
		return off, size
	}
	var index []kv
	for i := 0; i < len(kvs); i += perBlock {
		end := min(i+perBlock, len(kvs))
		off, size := writeBlock(kvs[i:end], restart)
		handle := protowire.AppendVarint(protowire.AppendVarint(nil, off), size)
		index = append(index, kv{kvs[end-1].k, handle})
	}
	metaOff, metaSize := writeBlock(nil, 1)
	indexOff, indexSize := writeBlock(index, 1)
	var footer []byte
	for _, v := range []uint64{metaOff, metaSize, indexOff, indexSize} {
		footer = protowire.AppendVarint(footer, v)
	}
	footer = append(footer, make([]byte, 40-len(footer))...)
	footer = binary.LittleEndian.AppendUint64(footer, tableMagic)
	return append(file, footer...)
}

// savedModelPB is a small but well-formed SavedModel message:
// saved_model_schema_version = 1, one MetaGraphDef.
func savedModelPB() []byte {
	var b []byte
	b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), 1)
	meta := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), strings.Repeat("graph ", 200))
	b = protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), meta)
	return b
}

// writeVersion writes a complete version <repo>/<model>/<version> holding
// bundle b, and returns its folder.
func writeVersion(t *testing.T, repo, model, version string, b bundle) string {
	t.Helper()
	dir := filepath.Join(repo, model, version)
	files := map[string][]byte{
		SavedModelFile:             savedModelPB(),
		"edgeinfer.toml":           []byte(manifestTOML),
		IndexFile:                  b.index(),
		"golden/input_images.npy":  []byte("golden input"),
		"golden/output_logits.npy": []byte("golden output"),
		"assets/.keep":             nil,
	}
	for s, n := range b.need() {
		files[filepath.Join(VariablesDir, shardName(s, b.shards))] = make([]byte, n)
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// truncateBy cuts n bytes off the end of a file.
func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}
