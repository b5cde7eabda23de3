package outbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Conn is the connection Run delivers on.
type Conn interface {
	// Connect makes one attempt to connect. lost is closed when the
	// connection it made is lost.
	Connect() (lost <-chan struct{}, err error)
	// Publish sends m at QoS 1 (or 2). The Ack completes when the broker
	// has acknowledged it, or with an error if that cannot happen any more
	// (the connection was lost first): never with nil before the PUBACK.
	Publish(m Message) Ack
	// Disconnect ends the connection, if there is one.
	Disconnect()
}

// Ack is a publish waiting for its acknowledgement (paho.Token is one).
type Ack interface {
	Done() <-chan struct{}
	Error() error
}

// inflight is a record published and not yet acknowledged.
type inflight struct {
	seq  uint64
	size int64
	at   position // where it is in the log: delivery starts again there if it fails
	ack  Ack
}

// Run delivers the outbox on conn until ctx ends: it connects (again, with
// backoff, whenever the connection is lost), publishes the records in
// order with up to Options.Window in flight, and moves the cursor over
// each record the broker acknowledged, in order. A publish that fails, or
// a connection lost, sends every record from the first one not
// acknowledged again, in order, on the next connection. Run also ends
// when Close is called. Only one Run may run at a time.
func (o *Outbox) Run(ctx context.Context, conn Conn) {
	o.run.Lock()
	defer o.run.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-o.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer conn.Disconnect()
	backoff := o.opts.ReconnectMin
	var down time.Time // since when there has been no connection (zero: up, or never tried)
	warned := false
	for ctx.Err() == nil {
		lost, err := conn.Connect()
		if err != nil {
			if down.IsZero() {
				down = time.Now()
			}
			if !warned {
				warned = true
				n, b := o.Depth()
				o.log.Warn("outbox: cannot reach the broker; results and events wait in the outbox", "err", err, "records", n, "bytes", b)
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, o.opts.ReconnectMax)
			continue
		}
		backoff = o.opts.ReconnectMin
		n, b := o.Depth()
		if !down.IsZero() {
			o.log.Info("outbox: broker reachable again; delivering", "records", n, "bytes", b, "after", time.Since(down).Round(time.Millisecond))
		} else if n > 0 {
			o.log.Info("outbox: connected; delivering", "records", n, "bytes", b)
		}
		down, warned = time.Time{}, false
		err = o.deliver(ctx, conn, lost)
		if ctx.Err() != nil {
			return
		}
		o.log.Warn("outbox: delivery interrupted; the records not acknowledged go again on the next connection", "err", err)
		down = time.Now()
		conn.Disconnect()
	}
}

// errLost ends deliver when the connection is lost.
var errLost = errors.New("connection lost")

// deliver publishes on one connection until it is lost, a publish fails or
// ctx ends.
func (o *Outbox) deliver(ctx context.Context, conn Conn, lost <-chan struct{}) (err error) {
	var flights []inflight
	// Whatever ends this connection, what was acknowledged counts, and
	// delivery goes on from the first record not acknowledged.
	defer func() {
		if serr := o.settle(&flights); err == nil {
			err = serr
		}
		if len(flights) > 0 {
			o.rpos = flights[0].at
		}
	}()
	for {
		for len(flights) < o.opts.Window {
			seq, m, size, at, next, ok, err := o.read(o.rpos)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			flights = append(flights, inflight{seq: seq, size: size, at: at, ack: conn.Publish(m)})
			o.rpos = next
		}
		var head <-chan struct{}
		if len(flights) > 0 {
			head = flights[0].ack.Done()
		}
		more := o.newData
		if len(flights) >= o.opts.Window {
			more = nil
		}
		select {
		case <-head:
			if err := o.settle(&flights); err != nil {
				return err
			}
		case <-more:
		case <-lost:
			return errLost
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// settle takes the acknowledgements that came, in order: the records
// acknowledged leave flights and the cursor moves over them. It returns
// the error of the first publish that failed (which stays in flights).
func (o *Outbox) settle(flights *[]inflight) error {
	fs := *flights
	n := 0
	var bytes int64
	var err error
	for n < len(fs) && done(fs[n].ack) {
		if err = fs[n].ack.Error(); err != nil {
			err = fmt.Errorf("publish: %w", err)
			break
		}
		bytes += fs[n].size
		n++
	}
	if n > 0 {
		o.acknowledged(fs[n-1].seq, n, bytes)
		*flights = fs[n:]
	}
	return err
}

func done(a Ack) bool {
	select {
	case <-a.Done():
		return true
	default:
		return false
	}
}

// acknowledged moves the cursor to seq (n records of bytes were
// acknowledged), saves it, removes the segments left behind and reports
// what was dropped if there is room now.
func (o *Outbox) acknowledged(seq uint64, n int, bytes int64) {
	o.mu.Lock()
	o.acked = seq
	o.freeLocked(n, bytes)
	o.reportLocked(false)
	// Segments wholly acknowledged, but the last (the writer's).
	var gone []*segment
	for len(o.segs) > 1 && o.segs[0].last <= seq {
		gone = append(gone, o.segs[0])
		o.segs = o.segs[1:]
	}
	o.mu.Unlock()
	if err := o.saveCursor(seq, false); err != nil {
		o.log.Error("outbox: cannot save the cursor; records may go twice after a restart", "err", err)
	}
	for _, s := range gone {
		if f := o.files[s.base]; f != nil {
			f.Close()
			delete(o.files, s.base)
		}
		if err := os.Remove(s.path); err != nil {
			o.log.Error("outbox: cannot remove a delivered segment", "file", s.path, "err", err)
		}
	}
}

// read returns the record at pos, if one is on disk there (ok), where it
// is, and the position after it.
func (o *Outbox) read(pos position) (seq uint64, m Message, size int64, at, next position, ok bool, err error) {
	for {
		o.mu.Lock()
		var seg *segment
		more := false
		for i, s := range o.segs {
			if s.base >= pos.base {
				seg, more = s, i < len(o.segs)-1
				break
			}
		}
		var segSize int64
		if seg != nil {
			segSize = seg.size
		}
		o.mu.Unlock()
		if seg == nil {
			return 0, Message{}, 0, pos, pos, false, nil
		}
		if seg.base != pos.base {
			pos = position{base: seg.base}
		}
		if pos.off < int64(len(segMagic)) {
			pos.off = int64(len(segMagic))
		}
		if pos.off >= segSize {
			if !more {
				return 0, Message{}, 0, pos, pos, false, nil
			}
			pos = position{base: seg.base + 1}
			continue
		}
		f := o.files[seg.base]
		if f == nil {
			if f, err = os.Open(seg.path); err != nil {
				return 0, Message{}, 0, pos, pos, false, fmt.Errorf("outbox: %w", err)
			}
			o.files[seg.base] = f
		}
		seq, m, size, err = readRecord(f, pos.off, segSize)
		if err != nil {
			// The disk changed under the outbox. Delivery stops here (and is
			// tried again on the next connection); Open cuts the segment at
			// this record next time.
			return 0, Message{}, 0, pos, pos, false, fmt.Errorf("outbox: %s at offset %d cannot be read back: %w", seg.path, pos.off, err)
		}
		return seq, m, size, pos, position{base: pos.base, off: pos.off + size}, true, nil
	}
}

// readRecord reads the record at off of f, whose first limit bytes are
// records.
func readRecord(f *os.File, off, limit int64) (uint64, Message, int64, error) {
	var h [headerLen]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		return 0, Message{}, 0, err
	}
	n, crc := parseHeader(h[:])
	if n < fixedBody || off+headerLen+n > limit {
		return 0, Message{}, 0, errCorrupt
	}
	body := make([]byte, n)
	if _, err := f.ReadAt(body, off+headerLen); err != nil && !errors.Is(err, io.EOF) {
		return 0, Message{}, 0, err
	}
	seq, m, err := decodeBody(body, crc)
	return seq, m, headerLen + n, err
}
