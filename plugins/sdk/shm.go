package sdk

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// shmDir is where each plugin's private folder (client.go, framesDir), and
// so its frame buffers, live: tmpfs on Linux, so a frame is written once by
// the daemon and read in place by the plugin.
func shmDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// shmWriter is the daemon's side: one file in dir (the plugin's frames
// folder), mapped read-write, grown when a frame does not fit. One frame is
// in it at a time (a plugin serves one call at a time).
type shmWriter struct {
	dir  string
	path string
	data []byte
}

func (w *shmWriter) write(pixels []byte) error {
	if len(pixels) > len(w.data) {
		if err := w.grow(len(pixels)); err != nil {
			return err
		}
	}
	copy(w.data, pixels)
	return nil
}

func (w *shmWriter) grow(n int) error {
	w.close()
	const page = 1 << 16
	size := (n + page - 1) / page * page
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	path := filepath.Join(w.dir, "frame-"+hex.EncodeToString(id[:]))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("shared frame buffer: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		os.Remove(path)
		return fmt.Errorf("shared frame buffer %s: %w", path, err)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("shared frame buffer %s: mmap: %w", path, err)
	}
	w.path, w.data = path, data
	return nil
}

func (w *shmWriter) close() {
	if w.data != nil {
		syscall.Munmap(w.data)
		os.Remove(w.path)
		w.path, w.data = "", nil
	}
}

// shmReader is the plugin's side: the daemon's current file, mapped
// read-only, re-mapped when the daemon grew it.
type shmReader struct {
	path string
	data []byte
}

func (r *shmReader) view(path string, size, length uint64) ([]byte, error) {
	if path != r.path || uint64(len(r.data)) != size {
		r.close()
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("shared frame buffer: %w", err)
		}
		defer f.Close()
		data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			return nil, fmt.Errorf("shared frame buffer %s: mmap: %w", path, err)
		}
		r.path, r.data = path, data
	}
	if length > uint64(len(r.data)) {
		return nil, fmt.Errorf("shared frame buffer %s: frame of %d bytes in a buffer of %d", path, length, len(r.data))
	}
	return r.data[:length], nil
}

func (r *shmReader) close() {
	if r.data != nil {
		syscall.Munmap(r.data)
		r.path, r.data = "", nil
	}
}
