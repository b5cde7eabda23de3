package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The files in the outbox's folder:
//
//	<20-digit seq>.seg  a segment: the magic, then records, appended and
//	                    fsync'd; named by the seq of its first record
//	cursor              the seq of the last record the broker acknowledged
//	lock                flock'ed by the process using the outbox
//
// A record is
//
//	length uint32 LE    of what follows the CRC
//	crc    uint32 LE    CRC-32C of what follows it
//	seq    uint64 LE    strictly increasing through the outbox
//	flags  uint8        bit 0: retain
//	topic  uint16 LE length, then the topic's bytes
//	payload             the rest
//
// A crash (SIGKILL, power loss) can leave the last records of the last
// segment torn: a length running past the end of the file, a CRC that does
// not match, zeroes. Open keeps the records before the first bad one and
// cuts the file there; none of the dropped records had been acknowledged
// to anyone (Put's durable runs only after the fsync).
const (
	segMagic   = "EIOBOX01"
	headerLen  = 8         // length, crc
	fixedBody  = 8 + 1 + 2 // seq, flags, topic length
	maxBodyLen = 1<<31 - 1 // sanity bound on a length read from disk
	segExt     = ".seg"
	cursorName = "cursor"
	lockName   = "lock"
	flagRetain = 1
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a record that cannot be read back.
var errCorrupt = errors.New("corrupt record")

// recordSize is the number of bytes m takes in a segment.
func recordSize(m Message) int64 {
	return int64(headerLen + fixedBody + len(m.Topic) + len(m.Payload))
}

// appendRecord appends m, numbered seq, to buf.
func appendRecord(buf []byte, seq uint64, m Message) []byte {
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(fixedBody+len(m.Topic)+len(m.Payload)))
	buf = append(buf, 0, 0, 0, 0) // the CRC, below
	buf = binary.LittleEndian.AppendUint64(buf, seq)
	var flags byte
	if m.Retain {
		flags |= flagRetain
	}
	buf = append(buf, flags)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(m.Topic)))
	buf = append(buf, m.Topic...)
	buf = append(buf, m.Payload...)
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[start+headerLen:], crcTable))
	return buf
}

// parseHeader returns the length of the body that follows a record's
// header, and its CRC.
func parseHeader(h []byte) (bodyLen int64, crc uint32) {
	return int64(binary.LittleEndian.Uint32(h)), binary.LittleEndian.Uint32(h[4:])
}

// decodeBody checks a record's body against its CRC and decodes it. The
// message's bytes alias body.
func decodeBody(body []byte, crc uint32) (uint64, Message, error) {
	if len(body) < fixedBody || crc32.Checksum(body, crcTable) != crc {
		return 0, Message{}, errCorrupt
	}
	seq := binary.LittleEndian.Uint64(body)
	flags := body[8]
	n := int(binary.LittleEndian.Uint16(body[9:]))
	if fixedBody+n > len(body) {
		return 0, Message{}, errCorrupt
	}
	return seq, Message{Topic: string(body[fixedBody : fixedBody+n]), Payload: body[fixedBody+n:], Retain: flags&flagRetain != 0}, nil
}

// segment is one segment file.
type segment struct {
	base uint64 // its name: the seq of the first record written to it
	path string
	// size and last are what is on disk and fsync'd: the reader never
	// reads past size. The writer changes them (under Outbox.mu).
	size int64
	last uint64 // seq of its last record; 0 while it has none
}

func segmentPath(dir string, base uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", base, segExt))
}

// listSegments returns the segment files in dir, oldest first.
func listSegments(dir string) ([]*segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []*segment
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), segExt)
		if !ok || e.IsDir() {
			continue
		}
		base, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue // not ours
		}
		segs = append(segs, &segment{base: base, path: filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(segs, func(a, b *segment) int { return cmpUint(a.base, b.base) })
	return segs, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// scanned is what scanning a segment found.
type scanned struct {
	valid   int64 // bytes up to the end of the last good record (the magic included)
	size    int64 // bytes in the file
	records int
	first   uint64 // seq of the first good record
	last    uint64 // and of the last; 0: none
	// pending: the records with seq > acked, their bytes, and the offset
	// of the first of them (-1: none).
	pending      int
	pendingBytes int64
	firstPending int64
	badMagic     bool
}

// scanSegment reads a segment and checks each record: its length, CRC and
// that seqs increase (after prev, the last seq of the segments before).
// Scanning stops at the first record that fails.
func scanSegment(path string, prev, acked uint64) (scanned, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return scanned{}, err
	}
	s := scanned{size: int64(len(b)), firstPending: -1}
	if len(b) < len(segMagic) {
		return s, nil // torn when it was made: nothing in it
	}
	if string(b[:len(segMagic)]) != segMagic {
		s.badMagic = true
		return s, nil
	}
	off := int64(len(segMagic))
	s.valid = off
	for off+headerLen <= int64(len(b)) {
		n, crc := parseHeader(b[off:])
		if n < fixedBody || n > maxBodyLen || off+headerLen+n > int64(len(b)) {
			break
		}
		seq, _, err := decodeBody(b[off+headerLen:off+headerLen+n], crc)
		if err != nil || seq <= prev {
			break
		}
		size := headerLen + n
		if s.records == 0 {
			s.first = seq
		}
		s.records++
		s.last, prev = seq, seq
		if seq > acked {
			if s.firstPending < 0 {
				s.firstPending = off
			}
			s.pending++
			s.pendingBytes += size
		}
		off += size
		s.valid = off
	}
	return s, nil
}

// The cursor file: magic, acked seq, CRC-32C of both.
const cursorMagic = "EIOCUR01"

func encodeCursor(acked uint64) []byte {
	b := append([]byte(cursorMagic), make([]byte, 8)...)
	binary.LittleEndian.PutUint64(b[len(cursorMagic):], acked)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

func decodeCursor(b []byte) (uint64, error) {
	n := len(cursorMagic) + 8
	if len(b) != n+4 || string(b[:len(cursorMagic)]) != cursorMagic ||
		crc32.Checksum(b[:n], crcTable) != binary.LittleEndian.Uint32(b[n:]) {
		return 0, errCorrupt
	}
	return binary.LittleEndian.Uint64(b[len(cursorMagic):]), nil
}

// syncDir fsyncs a directory, so that a file made, renamed or removed in
// it stays so after a power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
