package outbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRecordsAreDeliveredOnceEachInTheOrderTheyWerePut(t *testing.T) {
	o := open(t, t.TempDir(), 1<<20)
	defer o.Close()
	b := newBroker(true)
	running(t, o, b)
	for i := range 500 {
		// Sizes vary so that records straddle batches.
		payload := payloadOf(i) + strings.Repeat("x", i%97)
		if err := o.Put(context.Background(), Message{Topic: "r", Payload: []byte(payload)}, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, o)
	got := b.payloads("r")
	for i := range got {
		got[i] = strings.TrimRight(got[i], "x")
	}
	same(t, got, numbered(0, 500))
	if n, bytes := o.Depth(); n != 0 || bytes != 0 {
		t.Fatalf("depth after delivery: %d records, %d bytes", n, bytes)
	}
}

func TestRecordsPutWhileTheBrokerIsAwayAreOnDiskAndGoOutInOrderWhenItReturns(t *testing.T) {
	o := open(t, t.TempDir(), 1<<20)
	defer o.Close()
	b := newBroker(true)
	running(t, o, b)
	for i := range 10 {
		put(t, o, "r", payloadOf(i))
	}
	drain(t, o)
	b.down()
	for i := 10; i < 200; i++ {
		put(t, o, "r", payloadOf(i)) // returns once it is fsync'd
	}
	if n, _ := o.Depth(); n != 190 {
		t.Fatalf("depth during the outage: %d records, want 190", n)
	}
	time.Sleep(50 * time.Millisecond) // several failed connection attempts
	b.setUp()
	drain(t, o)
	same(t, b.payloads("r"), numbered(0, 200))
}

func TestPublishesInFlightWhenTheConnectionDropsGoAgainInOrderFromTheFirstNotAcknowledged(t *testing.T) {
	o := open(t, t.TempDir(), 1<<20, func(o *Options) { o.Window = 8 })
	defer o.Close()
	b := newBroker(true)
	running(t, o, b)
	for i := range 5 {
		put(t, o, "r", payloadOf(i))
	}
	drain(t, o)
	b.mu.Lock()
	b.hold = true
	b.mu.Unlock()
	for i := 5; i < 30; i++ {
		put(t, o, "r", payloadOf(i))
	}
	// The window is in flight: 5..12 reached the broker, no PUBACK yet.
	eventually(t, "a window in flight", func() bool { return len(b.received()) == 13 })
	time.Sleep(20 * time.Millisecond)
	if len(b.received()) != 13 {
		t.Fatalf("%d publishes sent with a window of 8", len(b.received())-5)
	}
	b.down() // the PUBACKs never come
	b.mu.Lock()
	b.hold = false
	b.mu.Unlock()
	b.setUp()
	drain(t, o)
	// The broker had 5..12 but acknowledged none: they go again, then the
	// rest, in order (QoS 1: at least once).
	want := append(numbered(0, 13), numbered(5, 25)...)
	same(t, b.payloads("r"), want)
}

func TestTheCursorMovesOnlyOverAcknowledgedRecords(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 1<<20, func(o *Options) { o.Window = 4 })
	b := newBroker(true)
	b.hold = true
	stop := running(t, o, b)
	for i := range 10 {
		put(t, o, "r", payloadOf(i))
	}
	eventually(t, "4 in flight", func() bool { return len(b.received()) == 4 })
	b.release() // 0..3 acknowledged
	eventually(t, "8 sent", func() bool { return len(b.received()) == 8 })
	stop() // 4..7 in flight, never acknowledged
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = open(t, dir, 1<<20)
	defer o.Close()
	if n, _ := o.Depth(); n != 6 {
		t.Fatalf("reopened with %d records waiting, want 6 (4..9)", n)
	}
	b2 := newBroker(true)
	running(t, o, b2)
	drain(t, o)
	same(t, b2.payloads("r"), numbered(4, 6))
}

func TestALosslessPutWaitsForRoomAndTheOthersAreDroppedAndCounted(t *testing.T) {
	o := open(t, t.TempDir(), MinBytes)
	defer o.Close()
	b := newBroker(false)
	running(t, o, b)
	big := strings.Repeat("y", 1000)
	n := 0
	for {
		full := make(chan error, 1)
		go func() {
			full <- o.Put(context.Background(), Message{Topic: "lossless", Payload: []byte(payloadOf(n) + "|" + big)}, true, nil)
		}()
		select {
		case err := <-full:
			if err != nil {
				t.Fatal(err)
			}
			n++
			continue
		case <-time.After(100 * time.Millisecond):
		}
		// This one waits: the outbox is full.
		_, bytes := o.Depth()
		if bytes > MinBytes || bytes+1000 < MinBytes-1100 {
			t.Fatalf("full at %d bytes with a bound of %d", bytes, MinBytes)
		}
		// While it waits, a live record gets no room, even if it would
		// fit.
		if err := o.Put(context.Background(), Message{Topic: "live", Payload: []byte("a")}, false, nil); !errors.Is(err, ErrFull) {
			t.Fatalf("a live put into a full outbox: %v", err)
		}
		// A put that comes after the one waiting waits too, even if it
		// would fit, and gives up with its context.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		if err := o.Put(ctx, Message{Topic: "lossless", Payload: []byte("n")}, true, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a waiting put whose context ended: %v", err)
		}
		cancel()
		b.setUp()
		if err := <-full; err != nil {
			t.Fatal(err)
		}
		n++
		break
	}
	drain(t, o)
	var got []string
	for _, p := range b.payloads("lossless") {
		got = append(got, strings.Split(p, "|")[0])
	}
	same(t, got, numbered(0, n))
	if d := o.Dropped(); d.Records != 1 || d.Topics["live"] != 1 {
		t.Fatalf("dropped: %+v", d)
	}
}

func TestDroppedRecordsAreReportedOnceThereIsRoomInTheirPlaceInTheStream(t *testing.T) {
	var reports []Overflow
	var mu sync.Mutex
	o := open(t, t.TempDir(), MinBytes, func(opts *Options) {
		opts.Report = func(ov Overflow) Message {
			mu.Lock()
			reports = append(reports, ov)
			mu.Unlock()
			return Message{Topic: "events", Payload: []byte("dropped " + strconv.FormatUint(ov.Records, 10))}
		}
	})
	defer o.Close()
	b := newBroker(false)
	running(t, o, b)
	payload := strings.Repeat("z", 500)
	kept, dropped := 0, 0
	for i := range 300 {
		err := o.Put(context.Background(), Message{Topic: "live", Payload: []byte(payloadOf(i) + "|" + payload)}, false, nil)
		switch {
		case err == nil:
			kept++
		case errors.Is(err, ErrFull):
			dropped++
		default:
			t.Fatal(err)
		}
	}
	if dropped == 0 || kept == 0 {
		t.Fatalf("kept %d, dropped %d", kept, dropped)
	}
	b.setUp()
	drain(t, o)
	// Once the broker is back: a new live record comes after the report.
	if err := o.Put(context.Background(), Message{Topic: "live", Payload: []byte("after")}, false, nil); err != nil {
		t.Fatal(err)
	}
	drain(t, o)
	var stream []string
	for _, m := range b.received() {
		stream = append(stream, m.Topic+":"+strings.Split(string(m.Payload), "|")[0])
	}
	want := []string{}
	for i := range kept {
		want = append(want, "live:"+payloadOf(i))
	}
	want = append(want, "events:dropped "+strconv.Itoa(dropped), "live:after")
	same(t, stream, want)
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 1 || reports[0].Records != uint64(dropped) || reports[0].Topics["live"] != uint64(dropped) ||
		reports[0].Bytes == 0 || reports[0].First.IsZero() || reports[0].Last.Before(reports[0].First) {
		t.Fatalf("reports: %+v", reports)
	}
	if d := o.Dropped(); d.Records != uint64(dropped) {
		t.Fatalf("dropped since open: %+v", d)
	}
}

func TestARecordLargerThanTheBoundPassesAloneOnceTheOutboxIsEmpty(t *testing.T) {
	o := open(t, t.TempDir(), MinBytes)
	defer o.Close()
	b := newBroker(false)
	running(t, o, b)
	put(t, o, "r", "small")
	huge := strings.Repeat("h", 2*MinBytes)
	if err := o.Put(context.Background(), Message{Topic: "r", Payload: []byte(huge)}, false, nil); !errors.Is(err, ErrFull) {
		t.Fatalf("a huge live record beside another: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- o.Put(context.Background(), Message{Topic: "r", Payload: []byte(huge)}, true, nil) }()
	select {
	case err := <-done:
		t.Fatalf("a huge lossless record did not wait for an empty outbox: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.setUp()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	drain(t, o)
	if got := b.payloads("r"); len(got) != 2 || got[0] != "small" || got[1] != huge {
		t.Fatalf("got %d records", len(got))
	}
}

func TestDeliveredSegmentsAreRemoved(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 1<<20, func(o *Options) { o.SegmentBytes = 4096 })
	defer o.Close()
	b := newBroker(false)
	stop := running(t, o, b)
	for i := range 400 {
		put(t, o, "r", payloadOf(i)+strings.Repeat("s", 90))
	}
	if n := len(segments(t, dir)); n < 10 {
		t.Fatalf("%d segments of 4 KiB for 40 KiB of records", n)
	}
	b.setUp()
	drain(t, o)
	stop()
	if segs := segments(t, dir); len(segs) > 1 {
		t.Fatalf("segments left after delivery: %v", segs)
	}
	if len(b.payloads("r")) != 400 {
		t.Fatalf("%d delivered", len(b.payloads("r")))
	}
}

func TestAClosedOutboxRefusesPutsAndReleasesThoseWaiting(t *testing.T) {
	o := open(t, t.TempDir(), MinBytes)
	for {
		err := o.Put(context.Background(), Message{Topic: "r", Payload: make([]byte, 1000)}, false, nil)
		if errors.Is(err, ErrFull) {
			break
		}
	}
	waiting := make(chan error, 1)
	go func() {
		waiting <- o.Put(context.Background(), Message{Topic: "r", Payload: make([]byte, 1000)}, true, nil)
	}()
	time.Sleep(20 * time.Millisecond)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Fatalf("a put waiting at close: %v", err)
	}
	if err := o.Put(context.Background(), Message{Topic: "r"}, true, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("a put after close: %v", err)
	}
}

func TestAFolderInUseIsRefused(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, MinBytes)
	defer o.Close()
	if _, err := Open(Options{Dir: dir, MaxBytes: MinBytes, Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second open of the same folder: %v", err)
	}
}

func TestABoundUnderTheMinimumIsRefused(t *testing.T) {
	if _, err := Open(Options{Dir: t.TempDir(), MaxBytes: 1000}); err == nil {
		t.Fatal("a bound of 1000 bytes was accepted")
	}
}

func TestAnUnreadableCursorSendsEverythingLeftAgain(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 1<<20)
	b := newBroker(true)
	stop := running(t, o, b)
	for i := range 20 {
		put(t, o, "r", payloadOf(i))
	}
	drain(t, o)
	stop()
	b.down()
	for i := 20; i < 30; i++ {
		put(t, o, "r", payloadOf(i))
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cursorName), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	o = open(t, dir, 1<<20)
	defer o.Close()
	b2 := newBroker(true)
	running(t, o, b2)
	drain(t, o)
	// 0..19 were delivered and their segment may be gone or not; what is
	// still on disk goes again, in order, and 20..29 are there.
	got := b2.payloads("r")
	if len(got) < 10 || strings.Join(got[len(got)-10:], ",") != strings.Join(numbered(20, 10), ",") {
		t.Fatalf("after an unreadable cursor: %s", abbrev(got))
	}
	for i := 1; i < len(got); i++ {
		a, _ := strconv.Atoi(got[i-1])
		c, _ := strconv.Atoi(got[i])
		if c != a+1 {
			t.Fatalf("out of order: %s", abbrev(got))
		}
	}
}

func TestConcurrentPutsKeepEachPutterInOrderThroughAFlappingConnection(t *testing.T) {
	o := open(t, t.TempDir(), 256<<10, func(o *Options) { o.Window = 16 })
	defer o.Close()
	b := newBroker(true)
	b.hold = true
	running(t, o, b)
	stopFlap := make(chan struct{})
	var flapping sync.WaitGroup
	flapping.Add(1)
	go func() {
		defer flapping.Done()
		for i := 0; ; i++ {
			select {
			case <-stopFlap:
				b.mu.Lock()
				b.hold = false
				b.mu.Unlock()
				b.release()
				b.setUp()
				return
			case <-time.After(3 * time.Millisecond):
			}
			switch i % 4 {
			case 0, 1:
				b.release()
			case 2:
				b.down()
			case 3:
				b.setUp()
			}
		}
	}()
	const putters, each = 4, 300
	var wg sync.WaitGroup
	for p := range putters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m := Message{Topic: "p" + strconv.Itoa(p), Payload: []byte(strconv.Itoa(i))}
				if err := o.Put(context.Background(), m, true, nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stopFlap)
	flapping.Wait()
	drain(t, o)
	for p := range putters {
		got := b.payloads("p" + strconv.Itoa(p))
		// At least once, in order: a record repeats only when delivery
		// went back to the first one not acknowledged.
		next := 0
		for _, s := range got {
			i, _ := strconv.Atoi(s)
			if i > next {
				t.Fatalf("putter %d: %d came before %d: %s", p, i, next, abbrev(got))
			}
			if i == next {
				next++
			}
		}
		if next != each {
			t.Fatalf("putter %d: only 0..%d delivered", p, next-1)
		}
	}
}
