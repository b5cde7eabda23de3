package serving

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// binary is one accepted plugin binary: its copy in the cache, named by its
// SHA-256, which is what processes run.
type binary struct {
	task   string
	source string // plugin_dir/edgeinfer-<task>
	path   string // the copy in the cache
	fp     string // hex SHA-256
}

// label is what the model state shows of a binary.
func (b binary) label() string { return b.source + "@" + b.fp[:12] }

type stamp struct {
	size  int64
	mtime time.Time
}

// binaries keeps the plugin binaries of plugin_dir. Each is copied into a
// private cache under its SHA-256 before it is run, so a crashed process is
// restarted from the exact binary it was started from whatever happens in
// plugin_dir meanwhile, and a binary being copied (or replaced in place) is
// never run half-written: a changed file is taken only once its size and
// time have not changed for settle.
type binaries struct {
	dir, cache string
	settle     time.Duration

	mu       sync.Mutex
	current  map[string]binary // task -> newest accepted binary
	stamps   map[string]stamp  // task -> the source file as it was accepted
	pending  map[string]pendingStamp
	good     map[string]binary // task -> the binary that last went serving
	rejected map[string]string // fp -> why
}

type pendingStamp struct {
	stamp
	since time.Time
}

func newBinaries(dir, cache string, settle time.Duration) *binaries {
	return &binaries{dir: dir, cache: cache, settle: settle, current: map[string]binary{}, stamps: map[string]stamp{},
		pending: map[string]pendingStamp{}, good: map[string]binary{}, rejected: map[string]string{}}
}

// sourceOf is the plugin binary in plugin_dir. Here "task" is the plugin's
// name, manifest.Plugin of the model's task (the detection tasks share one).
func (b *binaries) sourceOf(task string) string {
	return filepath.Join(b.dir, "edgeinfer-"+task)
}

// forTask returns the binary to start for task: the newest accepted one,
// or, when that one was rejected, the one that served last.
func (b *binaries) forTask(task string) (binary, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur, ok := b.current[task]
	if !ok {
		st, err := statOf(b.sourceOf(task))
		if err != nil {
			return binary{}, fmt.Errorf("no plugin for task %q: %w", task, err)
		}
		if cur, err = b.accept(task, st); err != nil {
			return binary{}, err
		}
	}
	if why, bad := b.rejected[cur.fp]; bad {
		if g, ok := b.good[task]; ok {
			return g, nil
		}
		return binary{}, fmt.Errorf("plugin %s was rejected: %s", cur.label(), why)
	}
	return cur, nil
}

// accept copies the source of task into the cache and makes it current.
func (b *binaries) accept(task string, st stamp) (binary, error) {
	src := b.sourceOf(task)
	fp, err := hashFile(src)
	if err != nil {
		return binary{}, fmt.Errorf("plugin %s: %w", src, err)
	}
	bin := binary{task: task, source: src, fp: fp, path: filepath.Join(b.cache, "edgeinfer-"+task+"-"+fp[:16])}
	if _, err := os.Stat(bin.path); err != nil {
		if err := copyExecutable(src, bin.path); err != nil {
			return binary{}, fmt.Errorf("plugin %s: %w", src, err)
		}
	}
	b.current[task], b.stamps[task] = bin, st
	delete(b.pending, task)
	return bin, nil
}

// poll looks at the source of every task in use and accepts those that
// changed and have settled; it returns the tasks whose binary changed.
func (b *binaries) poll(now time.Time) (changed []string, errs []error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for task, cur := range b.current {
		st, err := statOf(cur.source)
		if err != nil || st == b.stamps[task] {
			delete(b.pending, task)
			continue // gone (the cached copy keeps serving) or unchanged
		}
		p, ok := b.pending[task]
		if !ok || p.stamp != st {
			b.pending[task] = pendingStamp{stamp: st, since: now}
			continue
		}
		if now.Sub(p.since) < b.settle {
			continue
		}
		next, err := b.accept(task, st)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if next.fp != cur.fp {
			changed = append(changed, task)
		}
	}
	return changed, errs
}

// served records that bin went serving: it is what a task falls back to
// while a newer binary is rejected.
func (b *binaries) served(bin binary) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.good[bin.task] = bin
}

// reject marks bin as unusable until plugin_dir holds another binary.
func (b *binaries) reject(bin binary, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rejected[bin.fp] = why
}

func statOf(path string) (stamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	if !st.Mode().IsRegular() {
		return stamp{}, errors.New("not a regular file")
	}
	return stamp{size: st.Size(), mtime: st.ModTime()}, nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyExecutable copies src to dst through a temporary name and a rename.
func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}
