package identify

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/edgeinfer/edgeinfer/internal/fsqueue"
)

// DefaultSettle is how long WatchGallery waits after the last change
// before it calls back.
const DefaultSettle = 500 * time.Millisecond

// WatchGallery watches the gallery folder dir, its identity folders and
// their negatives folders, and calls changed (from its own goroutine) once
// files have stopped changing for settle (0: DefaultSettle), so that the
// plugin loads the gallery again and swaps it in. Changes to hidden files
// and folders are ignored. A folder created later is watched as soon as it
// is seen; the callback's reload reads the whole tree anyway, so a file
// made in it before its watch was added is not missed.
//
// It returns nil when ctx ends, and an error if dir cannot be watched.
func WatchGallery(ctx context.Context, dir string, settle time.Duration, log *slog.Logger, changed func()) error {
	if settle <= 0 {
		settle = DefaultSettle
	}
	if log == nil {
		log = slog.Default()
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("gallery %s: watching: %w", dir, err)
	}
	q := fsqueue.Drain(fsw, maxQueuedEvents)
	defer func() {
		fsw.Close()
		<-q.Done()
	}()
	if err := fsw.Add(dir); err != nil {
		return fmt.Errorf("gallery %s: watching: %w", dir, err)
	}
	w := &galleryWatch{fsw: fsw, root: dir, log: log}
	w.addTree(dir)
	timer := time.NewTimer(settle)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-q.Wake():
			events, errs, lost := q.Take()
			for _, err := range errs {
				log.Warn("gallery: file event error", "dir", dir, "err", err)
			}
			due := lost || len(errs) > 0
			for _, ev := range events {
				if w.hidden(ev.Name) {
					continue
				}
				due = true
				if ev.Has(fsnotify.Create) {
					if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
						w.addTree(ev.Name)
					}
				}
			}
			if due {
				timer.Reset(settle)
			}
		case <-timer.C:
			w.addTree(dir)
			changed()
		}
	}
}

// galleryWatch adds the watches of one WatchGallery.
type galleryWatch struct {
	fsw  *fsnotify.Watcher
	root string
	log  *slog.Logger
}

// addTree watches the folders under top, down to the negatives folders
// (two levels below the gallery), hidden ones left out. Adding a folder
// already watched does nothing.
func (w *galleryWatch) addTree(top string) {
	_ = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(w.root, path)
		if w.hidden(path) || strings.Count(rel, string(filepath.Separator)) > 1 {
			return filepath.SkipDir
		}
		if err := w.fsw.Add(path); err != nil {
			w.log.Warn("gallery: watching a folder", "dir", path, "err", err)
		}
		return nil
	})
}

// hidden reports whether path, below the gallery, has a component starting
// with ".".
func (w *galleryWatch) hidden(path string) bool {
	rel, err := filepath.Rel(w.root, path)
	if err != nil || rel == "." {
		return false
	}
	for part := range strings.SplitSeq(rel, string(filepath.Separator)) {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// maxQueuedEvents bounds the events waiting; beyond it they are dropped
// (the reload reads everything anyway).
const maxQueuedEvents = 1024
