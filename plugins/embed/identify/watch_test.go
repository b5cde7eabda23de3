package identify

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestWatchGallerySeesANewIdentityFolderAndFilesInIt(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "alice", "a.png"), pngBytes(t, uniform(4, colorRGBA(255, 0, 0))))
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() {
		done <- WatchGallery(ctx, dir, 100*time.Millisecond, testLogger(t), func() { changed <- struct{}{} })
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchGallery: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("WatchGallery did not return when its context ended")
		}
	}()
	await := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("no callback after %s", what)
		}
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case <-changed:
			t.Fatalf("a callback after %s", what)
		case <-time.After(400 * time.Millisecond):
		}
	}
	time.Sleep(100 * time.Millisecond) // the watches in place

	// A burst of changes settles into one callback.
	img := pngBytes(t, uniform(4, colorRGBA(0, 255, 0)))
	for i := range 5 {
		writeFile(t, filepath.Join(dir, "zoe", string(rune('a'+i))+".png"), img)
		time.Sleep(20 * time.Millisecond)
	}
	await("a new identity folder")
	quiet("the burst settled")

	// The new folder is watched: a file added in it alone is seen.
	writeFile(t, filepath.Join(dir, "zoe", "late.png"), img)
	await("a file in the new folder")

	// Negatives two levels down are watched; hidden files are not.
	writeFile(t, filepath.Join(dir, "alice", NegativesFolder, "n.png"), img)
	await("a new negatives folder")
	writeFile(t, filepath.Join(dir, "alice", NegativesFolder, "m.png"), img)
	await("a file in the negatives folder")
	writeFile(t, filepath.Join(dir, "alice", ".swap"), img)
	writeFile(t, filepath.Join(dir, ".cache", "x"), img)
	quiet("hidden files changed")

	if err := os.RemoveAll(filepath.Join(dir, "zoe")); err != nil {
		t.Fatal(err)
	}
	await("an identity folder removed")
	writeFile(t, filepath.Join(dir, GalleryConfig), []byte("[thresholds]\nalice = 0.5\n"))
	await("gallery.toml written")
}

func TestWatchGalleryFailsOnAMissingFolder(t *testing.T) {
	err := WatchGallery(context.Background(), filepath.Join(t.TempDir(), "missing"), 0, testLogger(t), func() {})
	if err == nil {
		t.Fatal("watching a missing folder")
	}
}

// The plugin's Infer path identifies while commands, gallery reloads and
// saves come from other goroutines; -race checks the locking.
func TestIdentifierIsSafeForConcurrentUse(t *testing.T) {
	id := newTestIdentifier(t, Options{StateDir: t.TempDir(), Threshold: 0.2, ClusterThreshold: 0.2})
	galleries := []*Gallery{
		testGallery(t, map[string][][]float64{"alice": {{1, 0, 0}}}, nil, nil),
		testGallery(t, map[string][][]float64{"bob": {{0, 1, 0}}}, nil, nil),
	}
	probes := [][]float32{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 0}, {0, 1, 1}}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	loop := func(f func(i int) error) {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 3 {
		loop(func(i int) error {
			r, err := id.Identify(probes[i%len(probes)], []byte{byte(i)}, 2)
			if err == nil && r.Name != "" && !slices.Contains([]string{"alice", "bob", "carl", "dora"}, r.Name) {
				t.Errorf("matched %q", r.Name)
			}
			return err
		})
	}
	loop(func(i int) error { return id.SetGallery(galleries[i%2]) })
	loop(func(i int) error { return id.Save() })
	loop(func(i int) error {
		if err := id.Enrol("carl", pngBytes(t, uniform(4, colorRGBA(0, 0, 255)))); err != nil {
			return err
		}
		if cs := id.Clusters(); len(cs) > 0 {
			if err := id.NameCluster(cs[0].ID, "dora"); err != nil {
				return err
			}
			if err := id.Forget("dora"); err != nil {
				return err
			}
		}
		return id.Forget("carl")
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
