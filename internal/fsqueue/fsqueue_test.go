package fsqueue

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Events of a real folder arrive through the queue, beyond the bound they
// are reported lost, and Done closes after the watcher's Close.
func TestEventsArriveAndOverflowIsReportedLost(t *testing.T) {
	dir := t.TempDir()
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	if err := fsw.Add(dir); err != nil {
		t.Fatal(err)
	}
	q := Drain(fsw, 2)
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(dir, string(rune('a'+i))), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-q.Wake():
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after five files were made")
	}
	// Nothing takes for a while: the queue keeps two events and drops the rest.
	time.Sleep(time.Second)
	got, _, lost := q.Take()
	if !lost {
		t.Errorf("five events into a queue of two: lost not reported (got %v)", got)
	}
	if len(got) != 2 {
		t.Fatalf("got %d events, want the bound, 2", len(got))
	}
	if got[0].Name != filepath.Join(dir, "a") {
		t.Errorf("first event %v, want the first file", got[0])
	}
	if _, _, lost := q.Take(); lost {
		t.Error("lost reported again after a Take")
	}
	fsw.Close()
	select {
	case <-q.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after Close")
	}
}
