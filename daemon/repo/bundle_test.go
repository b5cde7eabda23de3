package repo

import (
	"encoding/binary"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBundleIndexTellsHowLongEachShardMustBe(t *testing.T) {
	many := bundle{shards: 3}
	for i := range 100 {
		many.tensors = append(many.tensors, tensor{name: "layer" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "/kernel" + string(rune('0'+i%10)), shard: i % 3, offset: int64(i * 1000), size: 999})
	}
	sliced := defaultBundle()
	sliced.tensors = append(sliced.tensors, tensor{name: "partitioned", sliced: true}, tensor{name: "partitioned/slice0", shard: 1, offset: 100000, size: 8})

	tests := []struct {
		name   string
		bundle bundle
	}{
		{"two shards over several blocks", defaultBundle()},
		{"one block, restart at every entry", bundle{shards: 1, perBlock: 1000, restart: 1, tensors: defaultBundle().tensors[:1]}},
		{"many entries with shared key prefixes", many},
		{"a partitioned tensor counts its slices only", sliced},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx, err := parseBundleIndex(tt.bundle.index())
			if err != nil {
				t.Fatal(err)
			}
			if idx.numShards != tt.bundle.shards || idx.compressed {
				t.Errorf("numShards %d compressed %v, want %d false", idx.numShards, idx.compressed, tt.bundle.shards)
			}
			if want := tt.bundle.need(); !maps.Equal(idx.need, want) {
				t.Errorf("need %v, want %v", idx.need, want)
			}
		})
	}
}

func TestBundleIndexRefusesWhatIsNotAWholeIndex(t *testing.T) {
	good := defaultBundle().index()
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	withMagic := func(b []byte) []byte {
		return binary.LittleEndian.AppendUint64(b[:len(b)-8:len(b)-8], tableMagic)
	}
	flipped := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x40
		return b
	}
	noHeader := defaultBundle()
	noHeader.shards = 0

	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "shorter than a table footer"},
		{"random bytes", random(4096), "no table magic number"},
		{"random bytes ending in the magic number", withMagic(random(4096)), "outside the table"},
		{"random short bytes", random(47), "shorter than a table footer"},
		{"cut short by one byte", good[:len(good)-1], "no table magic number"},
		{"cut in the middle", good[:len(good)/2], "no table magic number"},
		{"a data block byte changed", flipped(10), "checksum mismatch"},
		{"an index block byte changed", flipped(len(good) - 48 - 8), "checksum mismatch"},
		{"header with no shards", noHeader.index(), "0 data shards"},
		{"entry in a shard past num_shards", bundle{shards: 1, tensors: []tensor{{name: "w", shard: 1, size: 4}}}.index(), "in shard 1, the bundle has 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseBundleIndex(tt.file)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestBundleIndexWithCompressedBlocksIsNotReadFurther(t *testing.T) {
	b := defaultBundle()
	b.compression = 1 // snappy; TensorFlow never writes it for bundles
	idx, err := parseBundleIndex(b.index())
	if err != nil {
		t.Fatal(err)
	}
	if !idx.compressed || len(idx.need) != 0 {
		t.Fatalf("got %+v, want compressed and no shard lengths", idx)
	}
}

// The parser reads what TensorFlow really writes: every exported zoo
// version's index asks exactly for the bytes its data shard has.
func TestBundleIndexOfEveryExportedVersionMatchesItsDataShards(t *testing.T) {
	for _, dir := range zooVersions(t) {
		idx, err := readBundleIndex(filepath.Join(dir, IndexFile))
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			continue
		}
		if idx.numShards < 1 || len(idx.need) == 0 || idx.compressed {
			t.Errorf("%s: read as %+v", dir, idx)
		}
		for s, need := range idx.need {
			// TensorFlow writes the tensors back to back, unpadded.
			p := filepath.Join(dir, VariablesDir, shardName(s, idx.numShards))
			if st, err := os.Stat(p); err != nil || st.Size() != need {
				t.Errorf("%s: the index says it ends at byte %d; stat: %v", p, need, err)
			}
		}
	}
}
