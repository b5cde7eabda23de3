package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// cachePrefix starts the name of the folder a daemon copies its plugin
// binaries into, followed by the daemon's pid.
const cachePrefix = "edgeinferd-plugins-"

// pluginCache makes this daemon's plugin cache under dir, first removing
// the caches of daemons that are gone (killed before they could remove
// their own: SIGKILL, a crash), so that they do not pile up in /tmp.
func pluginCache(dir string, log *slog.Logger) (string, error) {
	old, _ := filepath.Glob(filepath.Join(dir, cachePrefix+"*"))
	for _, p := range old {
		pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(p), cachePrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || alive(pid) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			log.Warn("cannot remove the plugin cache of a daemon that is gone", "dir", p, "err", err)
		}
	}
	cache, err := os.MkdirTemp(dir, fmt.Sprintf("%s%d-", cachePrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("plugin cache: %w", err)
	}
	return cache, nil
}

// alive reports whether a process with this pid exists (one of another
// user counts).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
