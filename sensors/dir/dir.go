// Package dir is the sensor kind that watches a folder for image files
// (JPEG, PNG, GIF, BMP, TIFF, WebP). Files already there when it starts are
// read first, in name order, then each new file once it is complete (no
// write for the settle time). Every file is delivered losslessly, then
// moved to done_dir when all pipelines succeeded or to failed_dir when one
// failed or the file is no image, so each file is processed exactly once.
// A file its patterns do not take is reported once and left alone.
package dir

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/edgeinfer/edgeinfer/sensors"
)

//go:embed sample.conf
var sampleConf string

func init() {
	sensors.Register(sensors.Kind{Name: "dir", New: New, SampleConfig: sampleConf})
}

// config is the [sensors.<name>] table of a sensor of kind "dir".
type config struct {
	Path      string   `toml:"path"`
	Patterns  []string `toml:"patterns"`
	DoneDir   string   `toml:"done_dir"`
	FailedDir string   `toml:"failed_dir"`
	Settle    string   `toml:"settle"`
}

type sensor struct {
	env       sensors.Env
	path      string
	patterns  []string // lower case, matched against lower-case names
	doneDir   string
	failedDir string
	settle    time.Duration
	seq       atomic.Uint64

	mu       sync.Mutex
	inFlight map[string]bool // names read and not yet moved out of path

	reported map[string]bool // names matching no pattern, reported once; Run's goroutine only
}

// New builds a dir sensor from its config.
func New(env sensors.Env, decode sensors.Decoder) (sensors.Sensor, error) {
	cfg := config{Settle: "200ms"}
	for _, ext := range sensors.Extensions {
		cfg.Patterns = append(cfg.Patterns, "*"+ext)
	}
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Path == "" {
		return nil, errors.New("path: required")
	}
	info, err := os.Stat(cfg.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("path %q does not exist", cfg.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("path %q is not a directory", cfg.Path)
	}
	s := &sensor{env: env, path: filepath.Clean(cfg.Path), inFlight: map[string]bool{}, reported: map[string]bool{}}

	if len(cfg.Patterns) == 0 {
		return nil, errors.New("patterns: must not be empty")
	}
	for _, p := range cfg.Patterns {
		if _, err := filepath.Match(p, ""); err != nil || strings.ContainsRune(p, '/') {
			return nil, fmt.Errorf("patterns: %q is not a file name pattern", p)
		}
		s.patterns = append(s.patterns, strings.ToLower(p))
	}

	s.doneDir, s.failedDir = filepath.Join(s.path, "done"), filepath.Join(s.path, "failed")
	if cfg.DoneDir != "" {
		s.doneDir = filepath.Clean(cfg.DoneDir)
	}
	if cfg.FailedDir != "" {
		s.failedDir = filepath.Clean(cfg.FailedDir)
	}
	if s.doneDir == s.path {
		return nil, fmt.Errorf("done_dir must not be path itself (%q)", cfg.Path)
	}
	if s.failedDir == s.path {
		return nil, fmt.Errorf("failed_dir must not be path itself (%q)", cfg.Path)
	}

	if s.settle, err = time.ParseDuration(cfg.Settle); err != nil {
		return nil, fmt.Errorf("settle: invalid duration %q: %w", cfg.Settle, err)
	}
	if s.settle <= 0 {
		return nil, fmt.Errorf("settle must be > 0, got %s", cfg.Settle)
	}
	return s, nil
}

// skipped reports whether a file called name is hidden or a temporary
// file still being written: never an input, and never reported.
func skipped(name string) bool {
	lower := strings.ToLower(name)
	return strings.HasPrefix(name, ".") || strings.HasSuffix(lower, ".tmp") || strings.HasSuffix(lower, ".part")
}

// matches reports whether name matches one of the patterns.
func (s *sensor) matches(name string) bool {
	lower := strings.ToLower(name)
	for _, p := range s.patterns {
		if ok, _ := filepath.Match(p, lower); ok {
			return true
		}
	}
	return false
}

// wanted reports whether a file called name is an input: it matches a
// pattern and is not skipped.
func (s *sensor) wanted(name string) bool { return !skipped(name) && s.matches(name) }

// errUnmatched is what a file matching no pattern is reported with.
var errUnmatched = errors.New("not read")

// unmatched reports the regular file called name, which matches no
// pattern, as a bad input, once for as long as it stays in the folder.
// It is left where it is: it may belong to someone else.
func (s *sensor) unmatched(sink sensors.Sink, name string) {
	if s.reported[name] || skipped(name) {
		return
	}
	path := filepath.Join(s.path, name)
	if info, err := os.Stat(path); err != nil || !info.Mode().IsRegular() {
		return
	}
	s.reported[name] = true
	err := fmt.Errorf("%w: its name matches none of the patterns %q (left in place; the dir sensor reads %s images)", errUnmatched, s.patterns, sensors.Formats)
	s.env.Logger.Warn("bad input", "source", path, "err", err)
	sink.BadInput(path, err)
}

// Run watches the folder and delivers its files until ctx ends. It returns
// an error when the folder cannot be watched or disappears.
//
// pending maps each input seen but not processed yet to when it was last
// written; only Run's goroutine touches it. inFlight, guarded by mu, is
// shared with the frames' OnDone, which the daemon may call after Run has
// returned.
func (s *sensor) Run(ctx context.Context, sink sensors.Sink) error {
	for _, d := range []string{s.doneDir, s.failedDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	// Watch before listing, so that no file slips in between.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.path, err)
	}
	defer w.Close()
	if err := w.Add(s.path); err != nil {
		return fmt.Errorf("watch %s: %w", s.path, err)
	}
	pending := map[string]time.Time{}
	if err := s.scan(sink, pending); err != nil {
		return err
	}

	tick := time.NewTicker(max(s.settle/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil

		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", s.path)
			}
			if ev.Name == s.path && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				return fmt.Errorf("path %q was removed or renamed", s.path)
			}
			// A rename into the folder is a Create.
			name := filepath.Base(ev.Name)
			switch {
			case filepath.Dir(ev.Name) != s.path:
			case ev.Has(fsnotify.Remove | fsnotify.Rename):
				delete(s.reported, name) // a new file of that name is reported again
			case !ev.Has(fsnotify.Create | fsnotify.Write):
			case s.wanted(name):
				pending[name] = time.Now()
			case ev.Has(fsnotify.Create):
				s.unmatched(sink, name)
			}

		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", s.path)
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				return fmt.Errorf("watch %s: %w", s.path, err)
			}
			// Events were lost: list the folder again.
			sink.Event("dir_rescan", fmt.Sprintf("%s: too many file events at once, reading the folder again", s.path))
			if err := s.scan(sink, pending); err != nil {
				return err
			}

		case now := <-tick.C:
			if err := s.processSettled(ctx, sink, pending, now); err != nil {
				return nil // ctx ended during Deliver
			}
		}
	}
}

// scan adds to pending the inputs in the folder that are neither pending nor
// in flight, and reports the files matching no pattern. The inputs form one
// batch: all are taken as last written when the newest of them was, so they
// settle together and are processed in name order, before any file written
// later.
func (s *sensor) scan(sink sensors.Sink, pending map[string]time.Time) error {
	entries, err := os.ReadDir(s.path)
	if err != nil {
		return fmt.Errorf("read %s: %w", s.path, err)
	}
	var batch []string
	var newest time.Time
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() && !s.matches(name) {
			s.unmatched(sink, name)
		}
		if e.IsDir() || !s.wanted(name) || s.isInFlight(name) {
			continue
		}
		if _, ok := pending[name]; ok {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since ReadDir
		}
		batch = append(batch, name)
		if info.ModTime().After(newest) {
			newest = info.ModTime()
		}
	}
	if now := time.Now(); newest.After(now) {
		newest = now // a clock ahead of ours must not hold the files back
	}
	for _, name := range batch {
		pending[name] = newest
	}
	return nil
}

// processSettled processes the pending files that have not been written to
// for the settle time, in the order they were last written, then by name. It
// returns an error only when ctx ended during Deliver.
func (s *sensor) processSettled(ctx context.Context, sink sensors.Sink, pending map[string]time.Time, now time.Time) error {
	var names []string
	for name, written := range pending {
		// A name still in flight waits: it may be a new file of the same
		// name, to be processed once the earlier one has moved out.
		if now.Sub(written) >= s.settle && !s.isInFlight(name) {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(pending[a].Compare(pending[b]), strings.Compare(a, b))
	})
	for _, name := range names {
		delete(pending, name)
		if err := s.process(ctx, sink, name); err != nil {
			return err
		}
	}
	return nil
}

// process reads, decodes and delivers one file. A file that is no image is
// reported and moved to failed_dir at once; a delivered one is moved by its
// frame's OnDone.
func (s *sensor) process(ctx context.Context, sink sensors.Sink, name string) error {
	path := filepath.Join(s.path, name)
	info, err := os.Stat(path)
	if err != nil || !info.Mode().IsRegular() {
		return nil // gone since, or a folder or device
	}
	s.setInFlight(name, true)

	w, h, rgb, err := s.read(path, info.Size())
	if err != nil {
		s.env.Logger.Warn("bad input", "source", path, "err", err)
		sink.BadInput(path, err)
		s.finish(sink, name, err)
		return nil
	}
	f := &sensors.Frame{
		Sensor: s.env.Name,
		Seq:    s.seq.Add(1),
		Time:   info.ModTime(),
		Source: path,
		Width:  w,
		Height: h,
		RGB:    rgb,
	}
	f.Reload = func() ([]byte, error) {
		_, _, rgb, err := s.read(path, info.Size())
		return rgb, err
	}
	f.OnDone(func(err error) { s.finish(sink, name, err) })
	if err := sink.Deliver(ctx, f); err != nil {
		s.setInFlight(name, false) // not taken: the file stays for the next start
		return err
	}
	return nil
}

// read reads and decodes the image at path, refusing a file over the byte
// limit before reading it.
func (s *sensor) read(path string, size int64) (w, h int, rgb []byte, err error) {
	if limit := s.env.Limits.MaxBytes; limit > 0 && size > int64(limit) {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes is over the limit of %d bytes", sensors.ErrBadImage, size, limit)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, nil, err
	}
	return sensors.DecodeImage(data, s.env.Limits)
}

// finish moves the file called name to done_dir (err == nil) or failed_dir
// and ends its time in flight. It runs from a frame's OnDone, possibly after
// Run has returned, and never overwrites a file already in the folder.
func (s *sensor) finish(sink sensors.Sink, name string, err error) {
	if errors.Is(err, sensors.ErrUnfinished) {
		s.setInFlight(name, false) // left in place for the next start
		return
	}
	dir := s.doneDir
	if err != nil {
		dir = s.failedDir
	}
	src := filepath.Join(s.path, name)

	// One move at a time, so that two never pick the same free name, and
	// the name leaves inFlight only once the file has left the folder.
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inFlight, name)
	dst, moveErr := moveAside(src, dir)
	if moveErr != nil {
		s.env.Logger.Error("cannot move a processed file", "source", src, "to", dir, "err", moveErr)
		sink.Event("dir_move_failed", fmt.Sprintf("%s: cannot move it to %s: %v", src, dir, moveErr), "source", src)
		return
	}
	s.env.Logger.Debug("moved", "source", src, "to", dst, "err", err)
}

// moveAside renames src into dir under its own name, or under name-1.ext,
// name-2.ext... when that name is taken, and returns the new path.
func moveAside(src, dir string) (string, error) {
	name := filepath.Base(src)
	ext := filepath.Ext(name)
	dst := filepath.Join(dir, name)
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = filepath.Join(dir, fmt.Sprintf("%s-%d%s", strings.TrimSuffix(name, ext), i, ext))
	}
	return dst, os.Rename(src, dst)
}

func (s *sensor) isInFlight(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight[name]
}

func (s *sensor) setInFlight(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.inFlight[name] = true
	} else {
		delete(s.inFlight, name)
	}
}
