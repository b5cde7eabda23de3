package repo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// watchModes: the watcher must see the same things whether it learns of
// them from file events or only from its periodic rescan.
var watchModes = []struct {
	name string
	opts WatchOptions
}{
	{"file events", WatchOptions{Settle: 150 * time.Millisecond, Rescan: time.Hour}},
	{"periodic rescan without file events", WatchOptions{Settle: 150 * time.Millisecond, Rescan: 100 * time.Millisecond, noEvents: true}},
}

// startWatch runs a Watcher of models in repo until the test ends.
func startWatch(t *testing.T, repo string, opts WatchOptions, models ...string) *Watcher {
	t.Helper()
	opts.Repository = repo
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := NewWatcher(opts)
	w.SetModels(models)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, open := <-w.Updates(); open {
			t.Error("Updates is still open after Run returned")
		}
	})
	return w
}

// await reads updates until one of model (any model for "") satisfies
// ok, which sees every update of model until then; it fails the test after
// 10s.
func await(t *testing.T, w *Watcher, model, what string, ok func(Update) bool) Update {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case u, open := <-w.Updates():
			if !open {
				t.Fatalf("Updates closed while waiting for %s", what)
			}
			if (model == "" || u.Model == model) && ok(u) {
				return u
			}
		case <-deadline:
			t.Fatalf("no update of %s within 10s: %s", model, what)
		}
	}
}

func find(u Update, version string) (Version, bool) {
	for _, v := range u.Versions {
		if v.Version == version {
			return v, true
		}
	}
	return Version{}, false
}

// servable: the update lists exactly these versions, all servable.
func servable(versions ...string) func(Update) bool {
	return func(u Update) bool {
		if u.Err != nil || !slices.Equal(versionNames(u.Versions), versions) {
			return false
		}
		for _, v := range u.Versions {
			if v.Err != nil {
				return false
			}
		}
		return true
	}
}

func TestWatchReportsVersionsWhoseFilesAreOldAtOnce(t *testing.T) {
	repo := t.TempDir()
	age(t, writeVersion(t, repo, "m", "1", defaultBundle()))
	writeVersion(t, repo, "m", "2", defaultBundle()) // just written
	// With an hour to settle, only the files' age can make version 1 settled.
	w := startWatch(t, repo, WatchOptions{Settle: time.Hour, Rescan: time.Hour}, "m")
	u := await(t, w, "m", "the first update", func(Update) bool { return true })
	if !servable("1")(u) || !slices.Equal(u.Settling, []string{"2"}) {
		t.Fatalf("first update %+v, want version 1 alone, and 2 settling", u)
	}
}

// An update says which versions are on their way (their files changed less
// than Settle ago), so that no version yet and none coming can be told apart.
func TestWatchSaysWhichVersionsAreStillSettling(t *testing.T) {
	for _, mode := range watchModes {
		t.Run(mode.name, func(t *testing.T) {
			repo := t.TempDir()
			writeVersion(t, repo, "m", "1", defaultBundle())
			writeVersion(t, repo, "m", "3", defaultBundle())
			if err := os.MkdirAll(filepath.Join(repo, "empty"), 0o755); err != nil {
				t.Fatal(err)
			}
			w := startWatch(t, repo, mode.opts, "m", "empty")
			first := map[string]Update{}
			for len(first) < 2 {
				u := await(t, w, "", "the first updates", func(Update) bool { return true })
				if _, ok := first[u.Model]; !ok {
					first[u.Model] = u
				}
			}
			if u := first["m"]; len(u.Versions) != 0 || !slices.Equal(u.Settling, []string{"3", "1"}) {
				t.Fatalf("first update %+v, want no version yet, 3 and 1 settling", u)
			}
			if u := first["empty"]; len(u.Versions) != 0 || len(u.Settling) != 0 {
				t.Fatalf("a model without versions: %+v", u)
			}
			if u := await(t, w, "m", "versions 3 and 1", servable("3", "1")); len(u.Settling) != 0 {
				t.Fatalf("settled, yet %q settling", u.Settling)
			}
		})
	}
}

func TestWatchReportsANewVersionOnceItHasSettled(t *testing.T) {
	for _, mode := range watchModes {
		t.Run(mode.name, func(t *testing.T) {
			repo := t.TempDir()
			age(t, writeVersion(t, repo, "m", "1", defaultBundle()))
			w := startWatch(t, repo, mode.opts, "m")
			await(t, w, "m", "version 1", servable("1"))
			writeVersion(t, repo, "m", "2", defaultBundle())
			u := await(t, w, "m", "versions 2 and 1", servable("2", "1"))
			if v, _ := find(u, "2"); v.Manifest.Task != "classify" || v.Fingerprint == "" {
				t.Fatalf("version 2 reported as %+v", v)
			}
		})
	}
}

func TestWatchDropsARemovedVersion(t *testing.T) {
	for _, mode := range watchModes {
		t.Run(mode.name, func(t *testing.T) {
			repo := t.TempDir()
			age(t, writeVersion(t, repo, "m", "1", defaultBundle()))
			age(t, writeVersion(t, repo, "m", "2", defaultBundle()))
			w := startWatch(t, repo, mode.opts, "m")
			await(t, w, "m", "versions 2 and 1", servable("2", "1"))
			if err := os.RemoveAll(filepath.Join(repo, "m", "2")); err != nil {
				t.Fatal(err)
			}
			await(t, w, "m", "version 1 alone", servable("1"))
		})
	}
}

func TestWatchReportsAVersionWhoseFileChangedWithItsNewFingerprintAndError(t *testing.T) {
	for _, mode := range watchModes {
		t.Run(mode.name, func(t *testing.T) {
			repo := t.TempDir()
			dir := writeVersion(t, repo, "m", "1", defaultBundle())
			age(t, dir)
			w := startWatch(t, repo, mode.opts, "m")
			first := await(t, w, "m", "version 1", servable("1"))
			data := filepath.Join(dir, VariablesDir, shardName(0, 2))
			truncateBy(t, data, 1)
			u := await(t, w, "m", "version 1 not servable", func(u Update) bool {
				v, ok := find(u, "1")
				return ok && v.Err != nil
			})
			v, _ := find(u, "1")
			if !strings.Contains(v.Err.Error(), data) || v.Fingerprint == first.Versions[0].Fingerprint {
				t.Fatalf("version 1 reported as Err %v, Fingerprint %s (was %s)", v.Err, v.Fingerprint, first.Versions[0].Fingerprint)
			}
		})
	}
}

// A data shard copied in chunks, with pauses longer than Settle between
// them, settles several times while incomplete: each time it must be
// reported not servable, naming the shard, and servable only once whole.
func TestWatchNeverReportsASlowlyWrittenShardServableBeforeItIsComplete(t *testing.T) {
	for _, mode := range watchModes {
		t.Run(mode.name, func(t *testing.T) {
			const chunk, chunks = 16 << 10, 4
			repo := t.TempDir()
			age(t, writeVersion(t, repo, "m", "1", defaultBundle()))
			w := startWatch(t, repo, mode.opts, "m")
			await(t, w, "m", "version 1", servable("1"))

			b := bundle{shards: 1, tensors: []tensor{{name: "big/kernel", size: chunk * chunks}}}
			dir := writeVersion(t, repo, "m", "2", b)
			data := filepath.Join(dir, VariablesDir, shardName(0, 1))
			if err := os.Truncate(data, 0); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(data, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			written := 0
			neverEarly := func(u Update) {
				if v, ok := find(u, "2"); ok && v.Err == nil && written < chunk*chunks {
					t.Fatalf("version 2 reported servable with %d of %d bytes of its shard written", written, chunk*chunks)
				}
			}
			for range chunks - 1 {
				if _, err := f.Write(make([]byte, chunk)); err != nil {
					t.Fatal(err)
				}
				written += chunk
				// The writer pauses until the watcher has settled on this state.
				want := fmt.Sprintf("%s: %d bytes, the index needs %d", data, written, chunk*chunks)
				await(t, w, "m", want, func(u Update) bool {
					neverEarly(u)
					v, ok := find(u, "2")
					return ok && v.Err != nil && strings.Contains(v.Err.Error(), want)
				})
			}
			if _, err := f.Write(make([]byte, chunk)); err != nil {
				t.Fatal(err)
			}
			written += chunk
			await(t, w, "m", "version 2 servable once whole", servable("2", "1"))
		})
	}
}

func TestWatchReportsAMissingModelFolderThenAVersionMovedIntoPlace(t *testing.T) {
	for _, mode := range watchModes {
		t.Run(mode.name, func(t *testing.T) {
			repo := t.TempDir()
			w := startWatch(t, repo, mode.opts, "m")
			u := await(t, w, "m", "the first update", func(Update) bool { return true })
			if u.Err == nil || !strings.Contains(u.Err.Error(), filepath.Join(repo, "m")) || len(u.Versions) != 0 {
				t.Fatalf("first update %+v, want the missing folder named", u)
			}
			// The atomic deploy: copy under a dot-name, then rename.
			writeVersion(t, repo, "m", ".1.tmp", defaultBundle())
			if err := os.Rename(filepath.Join(repo, "m", ".1.tmp"), filepath.Join(repo, "m", "1")); err != nil {
				t.Fatal(err)
			}
			await(t, w, "m", "version 1", servable("1"))
		})
	}
}

func TestSetModelsReportsAnAddedModelPromptly(t *testing.T) {
	repo := t.TempDir()
	age(t, writeVersion(t, repo, "a", "1", defaultBundle()))
	age(t, writeVersion(t, repo, "b", "3", defaultBundle()))
	// An hour to settle or rescan: only SetModels itself can report b.
	w := startWatch(t, repo, WatchOptions{Settle: time.Hour, Rescan: time.Hour}, "a")
	await(t, w, "a", "version 1 of a", servable("1"))
	w.SetModels([]string{"a", "b"})
	await(t, w, "b", "version 3 of b", servable("3"))
	// A model dropped and added again is reported again.
	w.SetModels([]string{"b"})
	w.SetModels([]string{"b", "a"})
	await(t, w, "a", "version 1 of a again", servable("1"))
}

func TestWatchReportsAVersionThatIsNotServableWithTheReason(t *testing.T) {
	repo := t.TempDir()
	dir := writeVersion(t, repo, "m", "1", defaultBundle())
	remove("edgeinfer.toml")(t, dir)
	age(t, dir)
	w := startWatch(t, repo, WatchOptions{Settle: time.Hour, Rescan: time.Hour}, "m")
	u := await(t, w, "m", "the first update", func(Update) bool { return true })
	if v, ok := find(u, "1"); !ok || v.Err == nil || !strings.Contains(v.Err.Error(), filepath.Join(dir, "edgeinfer.toml")) {
		t.Fatalf("first update %+v, want version 1 with the missing manifest named", u)
	}
}

// A version folder replaced in one step (renameat2 RENAME_EXCHANGE, the
// way a fixed version is swapped in) or moved away makes inotify send
// IN_MOVE_SELF for a watched folder; fsnotify then may report an error
// while it holds the lock that WatchList, Add and Remove take. The watch
// must keep draining fsnotify while it calls those, or it deadlocks (and
// the daemon with it, at its next SIGTERM).
func TestWatchSurvivesVersionFoldersExchangedAndMovedAway(t *testing.T) {
	repo := t.TempDir()
	age(t, writeVersion(t, repo, "m", "1", defaultBundle()))
	opts := WatchOptions{Settle: 50 * time.Millisecond, Rescan: time.Hour}
	opts.Repository = repo
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	w := NewWatcher(opts)
	w.SetModels([]string{"m"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of its context ending: deadlocked")
		}
	}()
	await(t, w, "m", "version 1", servable("1"))
	v2 := filepath.Join(repo, "m", "2")
	writeVersion(t, repo, "m", "2", defaultBundle())
	last := await(t, w, "m", "versions 2 and 1", servable("2", "1"))
	for i := range 20 {
		staged := filepath.Join(repo, "m", ".2.staged")
		writeVersion(t, repo, "m", ".2.staged", defaultBundle()) // new times: a new fingerprint
		if err := unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, v2, unix.RENAME_EXCHANGE); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(staged); err != nil {
			t.Fatal(err)
		}
		prev, _ := find(last, "2")
		last = await(t, w, "m", fmt.Sprintf("version 2 exchanged (%d)", i+1), func(u Update) bool {
			v, ok := find(u, "2")
			return servable("2", "1")(u) && ok && v.Fingerprint != prev.Fingerprint
		})
		// Moved away and back.
		away := filepath.Join(repo, "m", ".2.away")
		if err := os.Rename(v2, away); err != nil {
			t.Fatal(err)
		}
		await(t, w, "m", fmt.Sprintf("version 2 moved away (%d)", i+1), servable("1"))
		if err := os.Rename(away, v2); err != nil {
			t.Fatal(err)
		}
		last = await(t, w, "m", fmt.Sprintf("version 2 moved back (%d)", i+1), servable("2", "1"))
	}
}
