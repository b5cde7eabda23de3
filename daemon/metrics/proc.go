package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// pageSize is the size of the pages /proc/<pid>/statm counts.
var pageSize = int64(os.Getpagesize())

// residentBytes is the resident memory of process pid: the second field of
// <procRoot>/<pid>/statm (resident pages, the kernel's VmRSS) times the
// page size. A process that is gone (or a made-up pid, sdk.Fake's) is an
// error.
func residentBytes(procRoot string, pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "statm"))
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		return 0, fmt.Errorf("%s/%d/statm: %q has no resident field", procRoot, pid, b)
	}
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s/%d/statm: resident pages: %w", procRoot, pid, err)
	}
	return pages * pageSize, nil
}
