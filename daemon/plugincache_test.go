package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestAPluginCacheLeftByADaemonThatIsGoneIsRemovedAndOthersAreKept(t *testing.T) {
	dir := t.TempDir()
	// A process that has exited: its pid is free (reuse within the test is
	// not expected).
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, fmt.Sprintf("%s%d-123", cachePrefix, cmd.Process.Pid))
	living := filepath.Join(dir, fmt.Sprintf("%s%d-456", cachePrefix, os.Getppid()))
	unrelated := filepath.Join(dir, cachePrefix+"old-style")
	for _, d := range []string{gone, living, unrelated} {
		if err := os.MkdirAll(filepath.Join(d, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cache, err := pluginCache(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(cache), fmt.Sprintf("%s%d-", cachePrefix, os.Getpid())) {
		t.Errorf("cache %s is not named by this process", cache)
	}
	for d, want := range map[string]bool{gone: false, living: true, unrelated: true, cache: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", d, err == nil, want)
		}
	}
}
