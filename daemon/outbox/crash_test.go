package outbox

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// childDir, set in the environment, makes the test binary a process that
// puts records into the outbox there for ever, printing the number of each
// one its durable callback confirmed, until it is killed.
const childDir = "OUTBOX_TEST_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDir); dir != "" {
		child(dir)
		return
	}
	os.Exit(m.Run())
}

func child(dir string) {
	o, err := Open(Options{Dir: dir, MaxBytes: 64 << 20, SegmentBytes: 64 << 10, Logger: quiet()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var mu sync.Mutex
	for i := 0; ; i++ {
		m := Message{Topic: "r", Payload: []byte(killPayload(i))}
		err := o.Put(context.Background(), m, true, func(err error) {
			if err == nil {
				mu.Lock()
				fmt.Println(i)
				mu.Unlock()
			}
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// killPayload is record i's payload: its number and a filler whose length
// depends on it, so that a record cut or mixed up shows.
func killPayload(i int) string {
	return strconv.Itoa(i) + "|" + strings.Repeat(string(rune('a'+i%26)), 50+i%200)
}

func TestWhatWasDurableBeforeASIGKILLIsDeliveredFirstAndInOrderAfterTheRestart(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childDir+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	durable := -1
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		i, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		durable = max(durable, i)
		if durable >= 3000 {
			// Killed while it writes. (A SIGKILL cannot tear a write:
			// the page cache outlives the process. Torn tails come from
			// power losses; the next test makes them.)
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	for sc.Scan() { // what it confirmed before it died
		if i, err := strconv.Atoi(sc.Text()); err == nil {
			durable = max(durable, i)
		}
	}
	cmd.Wait()
	if durable < 3000 {
		t.Fatalf("the child confirmed only up to %d", durable)
	}

	o := open(t, dir, 64<<20)
	defer o.Close()
	n, _ := o.Depth()
	if n < durable+1 {
		t.Fatalf("reopened with %d records; %d were confirmed durable", n, durable+1)
	}
	put(t, o, "r", "after the restart")
	b := newBroker(true)
	running(t, o, b)
	drain(t, o)
	got := b.payloads("r")
	if len(got) != n+1 || got[n] != "after the restart" {
		t.Fatalf("%d delivered for %d on disk and one put after the restart; last %q", len(got), n, got[len(got)-1])
	}
	for i, p := range got[:n] {
		if p != killPayload(i) {
			t.Fatalf("record %d is %.40q, want %.40q", i, p, killPayload(i))
		}
	}
	t.Logf("%d records confirmed durable before the SIGKILL, %d found on disk", durable+1, n)
}

func TestATornTailIsCutAtOpenAndTheRecordsBeforeItGoOut(t *testing.T) {
	record := appendRecord(nil, 999, Message{Topic: "r", Payload: []byte("a whole record")})
	badCRC := append([]byte(nil), record...)
	badCRC[len(badCRC)-1] ^= 0xff
	tails := map[string][]byte{
		"half a header":             record[:3],
		"a record cut in its body":  record[:len(record)-4],
		"a record whose CRC fails":  badCRC,
		"zeroes":                    make([]byte, 4096),
		"a length past the file":    append([]byte{0xff, 0xff, 0, 0}, record[4:]...),
		"a seq that goes backwards": appendRecord(nil, 1, Message{Topic: "r", Payload: []byte("old")}),
	}
	for name, tail := range tails {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			o := open(t, dir, 1<<20)
			for i := range 20 {
				put(t, o, "r", payloadOf(i))
			}
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			segs := segments(t, dir)
			last := filepath.Join(dir, segs[len(segs)-1])
			st, err := os.Stat(last)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(tail)
			f.Close()

			o = open(t, dir, 1<<20)
			defer o.Close()
			if after, _ := os.Stat(last); after.Size() != st.Size() {
				t.Fatalf("the segment is %d bytes after the open, %d before the tail", after.Size(), st.Size())
			}
			if n, _ := o.Depth(); n != 20 {
				t.Fatalf("%d records after the open, want 20", n)
			}
			put(t, o, "r", "20")
			b := newBroker(true)
			running(t, o, b)
			drain(t, o)
			same(t, b.payloads("r"), numbered(0, 21))
		})
	}
}

func TestASegmentTornWhenItWasMadeIsRemoved(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 1<<20)
	put(t, o, "r", "0")
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash between making a segment and writing its first bytes.
	if err := os.WriteFile(segmentPath(dir, 2), []byte("EIO"), 0o640); err != nil {
		t.Fatal(err)
	}
	o = open(t, dir, 1<<20)
	defer o.Close()
	if _, err := os.Stat(segmentPath(dir, 2)); !os.IsNotExist(err) {
		t.Fatalf("the torn segment is still there: %v", err)
	}
	put(t, o, "r", "1")
	b := newBroker(true)
	running(t, o, b)
	drain(t, o)
	same(t, b.payloads("r"), numbered(0, 2))
}

func TestSeqsGoOnAfterEverythingWasDeliveredAndRemoved(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 1<<20)
	b := newBroker(true)
	stop := running(t, o, b)
	for i := range 10 {
		put(t, o, "r", payloadOf(i))
	}
	drain(t, o)
	stop()
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if segs := segments(t, dir); len(segs) > 1 {
		t.Fatalf("segments left: %v", segs)
	}
	o = open(t, dir, 1<<20)
	defer o.Close()
	if segs := segments(t, dir); len(segs) != 0 {
		t.Fatalf("segments left after a reopen with nothing to deliver: %v", segs)
	}
	// New records must not fall under the cursor of the old ones.
	put(t, o, "r", "10")
	b2 := newBroker(true)
	running(t, o, b2)
	drain(t, o)
	same(t, b2.payloads("r"), []string{"10"})
	time.Sleep(10 * time.Millisecond)
}
