package repo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgeinfer/edgeinfer/tfmodels/pbwire"
)

// The variables of a SavedModel are a TensorFlow tensor bundle:
// variables/variables.index, an SSTable (tensorflow/core/lib/io/table, the
// LevelDB format) mapping each tensor name to a BundleEntryProto that says in
// which data shard, at which offset and how many bytes the tensor lives, and
// the data shards variables/variables.data-<shard>-of-<num_shards>.
//
// Reading the index tells exactly how long every shard must be, so a version
// whose data is still being copied is recognised as incomplete without
// TensorFlow.

const (
	indexFile = "variables.index"

	footerLen        = 48 // two BlockHandles padded to 40 bytes, then the magic
	tableMagic       = 0xdb4775248b80fb57
	blockTrailerLen  = 5 // compression type, masked crc32c
	noCompression    = 0
	maxIndexFileSize = 1 << 30 // an index holds names and offsets, never tensor data
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// bundleIndex is what completeness needs from variables.index.
type bundleIndex struct {
	numShards int
	// need maps each shard that holds a tensor to the length it must have:
	// the largest offset+size of the tensors stored in it.
	need map[int]int64
	// compressed is true when a block is compressed (TensorFlow never writes
	// such bundles); the entries were then not read and need is empty.
	compressed bool
}

// shardName is the file name of data shard i of n.
func shardName(i, n int) string {
	return fmt.Sprintf("variables.data-%05d-of-%05d", i, n)
}

// readBundleIndex reads and checks the tensor bundle index at path. Its
// errors do not name the file; the caller does.
func readBundleIndex(path string) (bundleIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return bundleIndex{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return bundleIndex{}, err
	}
	if st.Size() > maxIndexFileSize {
		return bundleIndex{}, fmt.Errorf("%d bytes, too large for a tensor bundle index", st.Size())
	}
	buf := make([]byte, st.Size())
	if _, err := f.ReadAt(buf, 0); err != nil {
		return bundleIndex{}, err
	}
	return parseBundleIndex(buf)
}

// parseBundleIndex parses a whole variables.index file.
func parseBundleIndex(file []byte) (bundleIndex, error) {
	if len(file) < footerLen {
		return bundleIndex{}, fmt.Errorf("%d bytes, shorter than a table footer (%d): incomplete or not a tensor bundle index", len(file), footerLen)
	}
	footer := file[len(file)-footerLen:]
	if binary.LittleEndian.Uint64(footer[40:]) != tableMagic {
		return bundleIndex{}, errors.New("no table magic number at the end: incomplete or not a tensor bundle index")
	}
	p := footer[:40]
	var handles [4]uint64 // metaindex offset, size, index offset, size
	for i := range handles {
		v, n := protowire.ConsumeVarint(p)
		if n < 0 {
			return bundleIndex{}, errors.New("bad block handle in the table footer")
		}
		handles[i] = v
		p = p[n:]
	}
	tableEnd := uint64(len(file) - footerLen)
	idx := bundleIndex{need: map[int]int64{}}

	indexBlock, compressed, err := readBlock(file, tableEnd, handles[2], handles[3])
	if err != nil {
		return bundleIndex{}, fmt.Errorf("index block: %w", err)
	}
	if compressed {
		idx.compressed = true
		return idx, nil
	}
	sawHeader := false
	type entry struct {
		key   string
		shard int
		end   int64
	}
	var entries []entry
	err = walkBlock(indexBlock, func(_, handle []byte) error {
		off, n := protowire.ConsumeVarint(handle)
		if n < 0 {
			return errors.New("bad block handle in the index block")
		}
		size, m := protowire.ConsumeVarint(handle[n:])
		if m < 0 {
			return errors.New("bad block handle in the index block")
		}
		data, compressed, err := readBlock(file, tableEnd, off, size)
		if err != nil {
			return fmt.Errorf("data block at %d: %w", off, err)
		}
		if compressed {
			idx.compressed = true
			return nil
		}
		return walkBlock(data, func(key, value []byte) error {
			if len(key) == 0 {
				n, err := parseBundleHeader(value)
				if err != nil {
					return fmt.Errorf("bundle header: %w", err)
				}
				idx.numShards, sawHeader = n, true
				return nil
			}
			shard, end, err := parseBundleEntry(value)
			if err != nil {
				return fmt.Errorf("entry %q: %w", key, err)
			}
			if end >= 0 {
				entries = append(entries, entry{string(key), shard, end})
			}
			return nil
		})
	})
	if err != nil {
		return bundleIndex{}, err
	}
	if idx.compressed {
		idx.need = map[int]int64{}
		return idx, nil
	}
	if !sawHeader {
		return bundleIndex{}, errors.New("no bundle header (the entry with the empty key)")
	}
	if idx.numShards <= 0 {
		return bundleIndex{}, fmt.Errorf("bundle header says %d data shards", idx.numShards)
	}
	for _, e := range entries {
		if e.shard >= idx.numShards {
			return bundleIndex{}, fmt.Errorf("entry %q is in shard %d, the bundle has %d", e.key, e.shard, idx.numShards)
		}
		if cur, ok := idx.need[e.shard]; !ok || e.end > cur {
			idx.need[e.shard] = e.end
		}
	}
	return idx, nil
}

// readBlock returns the contents of the block at off (size bytes, then its
// trailer), checking that it lies in the table and its checksum.
func readBlock(file []byte, tableEnd, off, size uint64) (contents []byte, compressed bool, err error) {
	if off > tableEnd || size > tableEnd-off || blockTrailerLen > tableEnd-off-size {
		return nil, false, fmt.Errorf("block [%d, +%d) lies outside the table (%d bytes)", off, size, tableEnd)
	}
	b := file[off : off+size+blockTrailerLen]
	want := unmaskCRC(binary.LittleEndian.Uint32(b[size+1:]))
	if got := crc32.Checksum(b[:size+1], castagnoli); got != want {
		return nil, false, errors.New("block checksum mismatch")
	}
	if b[size] != noCompression {
		return nil, true, nil
	}
	return b[:size], false, nil
}

func unmaskCRC(masked uint32) uint32 {
	rot := masked - 0xa282ead8
	return rot>>17 | rot<<15
}

// walkBlock calls fn for each key/value of a table block: prefix-compressed
// entries (shared, non-shared, value length as varints, key delta, value)
// followed by the restart offsets (uint32 each) and their count (uint32).
func walkBlock(block []byte, fn func(key, value []byte) error) error {
	if len(block) < 4 {
		return errors.New("block shorter than its restart count")
	}
	restarts := uint64(binary.LittleEndian.Uint32(block[len(block)-4:]))
	if restarts == 0 || (restarts+1)*4 > uint64(len(block)) {
		return fmt.Errorf("block of %d bytes cannot hold %d restart points", len(block), restarts)
	}
	p := block[:uint64(len(block))-(restarts+1)*4]
	var key []byte
	for len(p) > 0 {
		var hdr [3]uint64
		for i := range hdr {
			v, n := protowire.ConsumeVarint(p)
			if n < 0 || v > math.MaxUint32 {
				return errors.New("bad block entry header")
			}
			hdr[i] = v
			p = p[n:]
		}
		shared, unshared, vlen := hdr[0], hdr[1], hdr[2]
		if shared > uint64(len(key)) || unshared > uint64(len(p)) || vlen > uint64(len(p))-unshared {
			return errors.New("block entry runs past its block")
		}
		key = append(key[:shared], p[:unshared]...)
		value := p[unshared : unshared+vlen]
		p = p[unshared+vlen:]
		if err := fn(key, value); err != nil {
			return err
		}
	}
	return nil
}

// parseBundleHeader returns num_shards (field 1) of a BundleHeaderProto.
func parseBundleHeader(b []byte) (int, error) {
	numShards := 0
	err := pbwire.Each(b, func(f pbwire.Field) error {
		if f.Num == 1 && f.Type == protowire.VarintType {
			numShards = int(int32(f.Varint))
		}
		return nil
	})
	return numShards, err
}

// parseBundleEntry returns where a BundleEntryProto's bytes live: shard_id
// (field 3), and offset (4) + size (5). end is -1 for an entry that stores no
// bytes of its own (a partitioned tensor, whose slices are entries of their
// own).
func parseBundleEntry(b []byte) (shard int, end int64, err error) {
	var offset, size int64
	sliced := false
	err = pbwire.Each(b, func(f pbwire.Field) error {
		switch {
		case f.Num == 3 && f.Type == protowire.VarintType:
			shard = int(int32(f.Varint))
		case f.Num == 4 && f.Type == protowire.VarintType:
			offset = int64(f.Varint)
		case f.Num == 5 && f.Type == protowire.VarintType:
			size = int64(f.Varint)
		case f.Num == 7:
			sliced = true
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if shard < 0 {
		return 0, 0, fmt.Errorf("shard_id %d", shard)
	}
	if offset < 0 || size < 0 || offset > math.MaxInt64-size {
		return 0, 0, fmt.Errorf("offset %d, size %d", offset, size)
	}
	if sliced && size == 0 {
		return shard, -1, nil
	}
	return shard, offset + size, nil
}
