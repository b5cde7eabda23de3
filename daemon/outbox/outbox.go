// Package outbox keeps what edgeinferd publishes (results and events) on
// disk, bounded in bytes, until the MQTT broker has acknowledged it: while
// the broker cannot be reached the pipelines go on, their results wait in
// the outbox, and once it is back they are delivered in the order they
// were made.
//
// It is an append-only log of segment files (record.go): a writer
// goroutine appends what Put hands it, a batch at a time, and fsyncs
// before it calls each record's durable callback, so that a lossless
// input (a file in a dir sensor's folder, an MQTT message) can be let go
// as soon as its result is on disk. Run delivers the records in order on a
// Conn, at QoS 1, with a window of publishes in flight; the cursor (the
// last record acknowledged) only moves over records the broker has
// acknowledged (PUBACK), and is written to disk as it does. Segments whose
// records are all acknowledged are removed. After a crash Open drops a
// torn tail and what was on disk is delivered first, in order; records
// delivered but not yet in the cursor file go again (at least once).
//
// The bound counts the bytes of the records not yet acknowledged. When a
// record does not fit, a Put that may wait (a lossless pipeline's result)
// waits for room, so nothing is lost and the pipeline's input waits with it
// (back-pressure, down to the sensor); any other record (a live
// pipeline's result, an event) is dropped and counted, and the count goes
// out as a record of its own (Options.Report) once the outbox has room
// again, in the place of the stream where the records are missing.
//
// paho's own store (FileStore, SetStore) does not do this job: it holds
// only the QoS 1 and 2 messages already handed to paho, in one file each,
// with no fsync, no bound and no callback once a message is stored (so no
// input could be let go then); after a reconnect paho resends them in the
// order its store lists them (the MemoryStore's is Go's map order) and
// completes their tokens as it resends them, not at the PUBACK. The
// outbox therefore delivers on a connection of its own (daemon/bus:
// clean session, reconnected by Run), on which a token completes only with
// the PUBACK or with an error.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Message is one publish.
type Message struct {
	Topic   string
	Payload []byte
	Retain  bool
}

var (
	// ErrFull is returned by a Put that may not wait when the record does
	// not fit; the record was dropped and counted.
	ErrFull = errors.New("outbox full: dropped")
	// ErrClosed is returned by Put once Close has begun.
	ErrClosed = errors.New("outbox closed")
)

// MinBytes is the smallest bound Open accepts.
const MinBytes = 64 << 10

// Options for Open.
type Options struct {
	Dir string
	// MaxBytes bounds the records not yet acknowledged (at least
	// MinBytes). A record that does not fit goes in anyway when the outbox
	// is empty, so a record larger than the bound still passes, alone.
	MaxBytes int64
	// SegmentBytes is the size at which a new segment file begins; 0:
	// MaxBytes/8, between 64 KiB and 16 MiB. On disk the outbox takes at
	// most MaxBytes plus one segment (and one record).
	SegmentBytes int64
	// Window is how many publishes may wait for their PUBACK at once
	// (default 32); they go out in order on one connection, so the broker
	// keeps their order.
	Window int
	// Report, when set, makes the record that reports the records dropped
	// for want of room (an event). It runs with the outbox's lock held:
	// it must not call the outbox.
	Report func(Overflow) Message
	// Backoff between connection attempts: from ReconnectMin (default
	// 500ms) doubling up to ReconnectMax (default 30s).
	ReconnectMin, ReconnectMax time.Duration
	Logger                     *slog.Logger
}

// Overflow counts records dropped for want of room.
type Overflow struct {
	Records uint64
	Bytes   uint64
	Topics  map[string]uint64 // records dropped per topic
	First   time.Time         // when the first and last were dropped
	Last    time.Time
	// Total is, in a report, every record dropped since Open (this
	// report's included).
	Total uint64
}

func (o *Overflow) add(m Message, size int64, now time.Time) {
	if o.Records == 0 {
		o.First = now
		o.Topics = map[string]uint64{}
	}
	o.Records++
	o.Bytes += uint64(size)
	o.Topics[m.Topic]++
	o.Last = now
}

// entry is a record accepted by Put and not yet on disk.
type entry struct {
	seq     uint64
	msg     Message
	size    int64
	durable func(error)
}

// Outbox is an open outbox folder.
type Outbox struct {
	opts     Options
	log      *slog.Logger
	dir      string
	lock     *os.File
	segBytes int64

	mu       sync.Mutex
	closed   bool
	nextSeq  uint64
	segs     []*segment // oldest first; the last one is the one written to
	pending  []*entry   // accepted, waiting for the writer
	records  int        // accepted and not acknowledged (pending, on disk, in flight)
	used     int64      // their bytes: what the bound applies to
	acked    uint64     // the last seq acknowledged
	waiting  int        // Puts waiting for room
	room     chan struct{}
	dropped  Overflow // not yet reported
	total    Overflow // since Open
	reported uint64   // reports made

	wake       chan struct{} // the writer's
	newData    chan struct{} // Run's: records became durable
	writerDone chan struct{}
	stop       chan struct{} // closed by Close: Run returns

	// The writer's own: the file of the last segment, open for appending
	// (nil: the next write makes a new segment).
	active *os.File
	buf    []byte

	// Run's own: where the next record to publish is, and the segments'
	// files open for reading.
	rpos  position
	files map[uint64]*os.File
	run   sync.Mutex // one Run at a time
}

// position is a place in the log: an offset in the segment named base
// (or, if that segment is gone, the start of the first one after it).
type position struct {
	base uint64
	off  int64
}

// Open opens (or makes) the outbox in opts.Dir: it takes the folder's
// lock, checks every segment, cuts a torn tail and removes the segments
// already delivered. What it holds is delivered first once Run starts.
func Open(opts Options) (*Outbox, error) {
	if opts.MaxBytes < MinBytes {
		return nil, fmt.Errorf("outbox bound %d bytes is under the minimum of %d", opts.MaxBytes, MinBytes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Window <= 0 {
		opts.Window = 32
	}
	if opts.ReconnectMin <= 0 {
		opts.ReconnectMin = 500 * time.Millisecond
	}
	if opts.ReconnectMax < opts.ReconnectMin {
		opts.ReconnectMax = max(30*time.Second, opts.ReconnectMin)
	}
	seg := opts.SegmentBytes
	if seg <= 0 {
		seg = min(max(opts.MaxBytes/8, 64<<10), 16<<20)
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(opts.Dir, lockName), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("outbox %s is in use by another process (flock: %w)", opts.Dir, err)
	}
	o := &Outbox{opts: opts, log: opts.Logger, dir: opts.Dir, lock: lock, segBytes: seg,
		room: make(chan struct{}), wake: make(chan struct{}, 1), newData: make(chan struct{}, 1),
		writerDone: make(chan struct{}), stop: make(chan struct{}), files: map[uint64]*os.File{}}
	if err := o.recover(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("outbox %s: %w", opts.Dir, err)
	}
	go o.writer()
	return o, nil
}

// recover reads the cursor and the segments at Open.
func (o *Outbox) recover() error {
	if b, err := os.ReadFile(filepath.Join(o.dir, cursorName)); err == nil {
		if o.acked, err = decodeCursor(b); err != nil {
			o.log.Warn("outbox cursor unreadable: everything still in the outbox goes out again (some records twice)", "dir", o.dir)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	segs, err := listSegments(o.dir)
	if err != nil {
		return err
	}
	var last uint64
	o.rpos = position{base: 0}
	found := false
	for i, s := range segs {
		sc, err := scanSegment(s.path, last, o.acked)
		if err != nil {
			return err
		}
		if sc.badMagic && i < len(segs)-1 {
			return fmt.Errorf("%s is not an outbox segment (it does not start with %q)", s.path, segMagic)
		}
		if sc.valid < sc.size {
			lost := sc.size - sc.valid
			if i == len(segs)-1 {
				o.log.Warn("outbox: dropping the torn end of the last segment (written when the process was killed; never acknowledged)", "file", s.path, "bytes", lost)
			} else {
				o.log.Error("outbox: a segment is corrupt; dropping its records from the first bad one", "file", s.path, "bytes", lost)
			}
			if err := truncateSync(s.path, sc.valid); err != nil {
				return err
			}
		}
		s.size, s.last = sc.valid, sc.last
		if sc.records > 0 {
			last = sc.last
		}
		o.records += sc.pending
		o.used += sc.pendingBytes
		if !found && sc.firstPending >= 0 {
			o.rpos, found = position{base: s.base, off: sc.firstPending}, true
		}
	}
	o.nextSeq = max(last, o.acked) + 1
	// Segments with nothing left to deliver go; the last one too: the
	// next write starts a new segment.
	kept := segs[:0]
	for _, s := range segs {
		if s.last > o.acked {
			kept = append(kept, s)
			continue
		}
		if err := os.Remove(s.path); err != nil {
			return err
		}
	}
	o.segs = kept
	if !found && len(kept) == 0 {
		o.rpos = position{base: o.nextSeq}
	}
	if err := syncDir(o.dir); err != nil {
		return err
	}
	if o.records > 0 {
		o.log.Info("outbox: records kept from before go out first", "records", o.records, "bytes", o.used, "dir", o.dir)
	}
	return nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// Put hands m to the outbox. durable (may be nil) is called once m is on
// disk (fsync'd), or with the error that kept it off; it runs on a
// goroutine of the outbox and must not block long.
//
// When m does not fit in the bound: with wait, Put waits for room until
// ctx ends (and returns ctx's error); without, m is dropped, counted, and
// Put returns ErrFull. While a Put waits for room, a Put that comes after
// it gets none (lossless records before live ones, and no small record
// overtakes a large one for ever). A Put that returns an error
// does not call durable.
func (o *Outbox) Put(ctx context.Context, m Message, wait bool, durable func(error)) error {
	if len(m.Topic) > 0xffff {
		return fmt.Errorf("topic of %d bytes: MQTT allows 65535", len(m.Topic))
	}
	size := recordSize(m)
	o.mu.Lock()
	for waited := false; ; waited = true {
		if o.closed {
			o.mu.Unlock()
			return ErrClosed
		}
		// Those already waiting go first.
		if o.fits(size) && (o.waiting == 0 || waited) {
			break
		}
		if !wait {
			o.dropped.add(m, size, time.Now())
			o.total.add(m, size, time.Now())
			o.mu.Unlock()
			return ErrFull
		}
		room := o.room
		o.waiting++
		o.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			o.mu.Lock()
			o.waiting--
			o.mu.Unlock()
			return ctx.Err()
		}
		o.mu.Lock()
		o.waiting--
	}
	o.reportLocked(false)
	o.acceptLocked(m, size, durable)
	o.mu.Unlock()
	return nil
}

// fits says whether a record of size bytes is within the bound now.
func (o *Outbox) fits(size int64) bool {
	return o.used == 0 || o.used+size <= o.opts.MaxBytes
}

func (o *Outbox) acceptLocked(m Message, size int64, durable func(error)) {
	o.pending = append(o.pending, &entry{seq: o.nextSeq, msg: m, size: size, durable: durable})
	o.nextSeq++
	o.records++
	o.used += size
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// reportLocked queues the report of the records dropped since the last
// one, once the outbox has drained to half its bound (or, with force, at
// once). The report itself is not held to the bound.
func (o *Outbox) reportLocked(force bool) {
	if o.dropped.Records == 0 || o.opts.Report == nil || !force && o.used > o.opts.MaxBytes/2 {
		return
	}
	ov := o.dropped
	ov.Total = o.total.Records
	m := o.opts.Report(ov)
	o.log.Warn("outbox: records were dropped for want of room; reporting it", "records", o.dropped.Records, "bytes", o.dropped.Bytes,
		"from", o.dropped.First, "to", o.dropped.Last)
	o.dropped = Overflow{}
	o.reported++
	o.acceptLocked(m, recordSize(m), nil)
}

// freeLocked gives back the room of records acknowledged or never
// written.
func (o *Outbox) freeLocked(records int, bytes int64) {
	o.records -= records
	o.used -= bytes
	close(o.room)
	o.room = make(chan struct{})
}

// writer appends what Put accepted, a batch at a time, until Close.
func (o *Outbox) writer() {
	defer close(o.writerDone)
	for {
		o.mu.Lock()
		for len(o.pending) == 0 && !o.closed {
			o.mu.Unlock()
			<-o.wake
			o.mu.Lock()
		}
		batch, closed := o.pending, o.closed
		o.pending = nil
		o.mu.Unlock()
		if len(batch) == 0 && closed {
			if o.active != nil {
				o.active.Close()
				o.active = nil
			}
			return
		}
		o.write(batch)
	}
}

// write appends a batch: into the last segment until it is full, then
// into new ones; each file is fsync'd before the records in it count as
// durable. On an error the records not yet durable are refused (their
// durable gets the error, their room is given back) and the next write
// starts a new segment.
func (o *Outbox) write(batch []*entry) {
	for len(batch) > 0 {
		if o.active == nil {
			if err := o.newSegment(batch[0].seq); err != nil {
				o.refuse(batch, err)
				return
			}
		}
		o.mu.Lock()
		seg := o.segs[len(o.segs)-1]
		size := seg.size
		o.mu.Unlock()
		if size > int64(len(segMagic)) && size+batch[0].size > o.segBytes {
			o.closeActive() // full: the next record starts a new segment
			continue
		}
		// The records that fit in this segment (at least one).
		o.buf = o.buf[:0]
		n := 0
		for n < len(batch) && (n == 0 || size+int64(len(o.buf))+batch[n].size <= o.segBytes) {
			o.buf = appendRecord(o.buf, batch[n].seq, batch[n].msg)
			n++
		}
		_, err := o.active.Write(o.buf)
		if err == nil {
			err = o.active.Sync()
		}
		if err != nil {
			o.log.Error("outbox: cannot write; the records are refused", "file", seg.path, "err", err)
			if terr := o.active.Truncate(size); terr != nil {
				o.log.Error("outbox: cannot cut the failed write off the segment; it is dropped when the outbox is opened next", "file", seg.path, "err", terr)
			}
			o.closeActive()
			o.refuse(batch, err)
			return
		}
		done := batch[:n]
		o.mu.Lock()
		seg.size += int64(len(o.buf))
		seg.last = done[n-1].seq
		o.mu.Unlock()
		select {
		case o.newData <- struct{}{}:
		default:
		}
		go func() {
			for _, e := range done {
				if e.durable != nil {
					e.durable(nil)
				}
			}
		}()
		batch = batch[n:]
		if seg.size >= o.segBytes {
			o.closeActive()
		}
	}
}

func (o *Outbox) closeActive() {
	if o.active != nil {
		o.active.Close()
		o.active = nil
	}
}

// newSegment starts the segment whose first record is seq.
func (o *Outbox) newSegment(seq uint64) error {
	path := segmentPath(o.dir, seq)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(segMagic)); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := syncDir(o.dir); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	o.active = f
	o.mu.Lock()
	o.segs = append(o.segs, &segment{base: seq, path: path, size: int64(len(segMagic))})
	o.mu.Unlock()
	return nil
}

// refuse gives the entries' room back and tells their Puts.
func (o *Outbox) refuse(batch []*entry, err error) {
	var bytes int64
	for _, e := range batch {
		bytes += e.size
	}
	o.mu.Lock()
	o.freeLocked(len(batch), bytes)
	o.mu.Unlock()
	err = fmt.Errorf("outbox: %w", err)
	go func() {
		for _, e := range batch {
			if e.durable != nil {
				e.durable(err)
			}
		}
	}()
}

// Depth is what waits for the broker: records accepted and not yet
// acknowledged, and their bytes (what the bound applies to). The metrics'
// edgeinfer_outbox_* gauges read it.
func (o *Outbox) Depth() (records int, bytes int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.records, o.used
}

// MaxBytes is the bound (Options.MaxBytes): what Depth's bytes are held
// to (the metrics' edgeinfer_outbox_max_bytes).
func (o *Outbox) MaxBytes() int64 { return o.opts.MaxBytes }

// Dropped counts the records dropped for want of room since Open.
func (o *Outbox) Dropped() Overflow {
	o.mu.Lock()
	defer o.mu.Unlock()
	t := o.total
	if t.Topics != nil {
		topics := make(map[string]uint64, len(t.Topics))
		for k, v := range t.Topics {
			topics[k] = v
		}
		t.Topics = topics
	}
	return t
}

// Drain waits until every record accepted is acknowledged, or ctx ends.
func (o *Outbox) Drain(ctx context.Context) error {
	for {
		o.mu.Lock()
		n, room := o.records, o.room
		o.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close refuses further Puts (a Put waiting for room returns ErrClosed),
// reports what was dropped and not yet reported, writes what was accepted,
// stops Run, saves the cursor and releases the folder. What is not yet
// acknowledged goes out after the next Open.
func (o *Outbox) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.reportLocked(true)
	o.closed = true
	close(o.room) // wakes the Puts waiting for room: they see closed
	o.room = make(chan struct{})
	select {
	case o.wake <- struct{}{}:
	default:
	}
	o.mu.Unlock()
	<-o.writerDone
	close(o.stop)
	o.run.Lock()
	defer o.run.Unlock()
	for base, f := range o.files {
		f.Close()
		delete(o.files, base)
	}
	o.mu.Lock()
	acked := o.acked
	o.mu.Unlock()
	err := o.saveCursor(acked, true)
	o.lock.Close() // releases the flock
	return err
}

// saveCursor writes the cursor: a new file renamed over the old one. It
// is fsync'd only with sync: a cursor that lags after a power loss only
// sends records again.
func (o *Outbox) saveCursor(acked uint64, sync bool) error {
	tmp := filepath.Join(o.dir, cursorName+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(encodeCursor(acked))
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(o.dir, cursorName)); err != nil {
		return err
	}
	if sync {
		return syncDir(o.dir)
	}
	return nil
}
