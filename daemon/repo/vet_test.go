package repo

import (
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestVetRunsOncePerFingerprintAndItsErrorBecomesTheVersionsErr(t *testing.T) {
	repo := t.TempDir()
	age(t, writeVersion(t, repo, "m", "1", defaultBundle()))
	age(t, writeVersion(t, repo, "m", "2", defaultBundle()))
	var calls atomic.Int32
	vet := func(v *Version) error {
		calls.Add(1)
		if v.Model != "m" || v.Manifest.Task != "classify" {
			t.Errorf("vetted %+v before its deep check passed", v)
		}
		if v.Version == "2" {
			return errors.New("version 2 is not to be trusted")
		}
		return nil
	}
	w := startWatch(t, repo, WatchOptions{Settle: 150 * time.Millisecond, Rescan: 50 * time.Millisecond, Vet: vet}, "m")
	u := await(t, w, "m", "versions 2 and 1", func(u Update) bool { return len(u.Versions) == 2 })
	if v, _ := find(u, "2"); v.Err == nil || v.Err.Error() != "version 2 is not to be trusted" {
		t.Fatalf("version 2: err %v, want the vet's", v.Err)
	}
	if v, _ := find(u, "1"); v.Err != nil {
		t.Fatalf("version 1: %v", v.Err)
	}
	time.Sleep(300 * time.Millisecond) // several rescans
	if n := calls.Load(); n != 2 {
		t.Errorf("vet ran %d times for 2 versions whose files did not change", n)
	}
	// A version the deep check refuses is not vetted.
	dir := writeVersion(t, repo, "m", "3", defaultBundle())
	if err := os.Remove(filepath.Join(dir, "edgeinfer.toml")); err != nil {
		t.Fatal(err)
	}
	await(t, w, "m", "version 3", func(u Update) bool { v, ok := find(u, "3"); return ok && v.Err != nil })
	if n := calls.Load(); n != 2 {
		t.Errorf("vet ran on a version the deep check refused (%d calls)", n)
	}
}

func TestSetVetVetsSettledVersionsAgain(t *testing.T) {
	repo := t.TempDir()
	age(t, writeVersion(t, repo, "m", "1", defaultBundle()))
	w := startWatch(t, repo, WatchOptions{Settle: time.Hour, Rescan: time.Hour}, "m")
	await(t, w, "m", "version 1", servable("1"))
	w.SetVet(func(v *Version) error { return errors.New("refused by the new vetting") })
	u := await(t, w, "m", "version 1 refused", func(u Update) bool { v, ok := find(u, "1"); return ok && v.Err != nil })
	if v, _ := find(u, "1"); v.Err.Error() != "refused by the new vetting" {
		t.Fatalf("err %v", v.Err)
	}
	w.SetVet(nil)
	await(t, w, "m", "version 1 servable again", servable("1"))
}
