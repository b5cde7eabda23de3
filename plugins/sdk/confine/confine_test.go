package confine

import (
	"debug/elf"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// The files loaded lists for a dynamic binary are those the dynamic loader
// maps when it starts that binary: cat's own /proc/self/maps (compared by
// inode, since the loader may name a file through /lib where the list says
// /usr/lib).
func TestLoadedListsWhatTheLoaderMapsForADynamicBinary(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip(err)
	}
	files, err := loaded(cat, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	if files[0] != cat || len(files) < 3 {
		t.Fatalf("loaded %v: want the binary first, then its interpreter and libc at least", files)
	}
	listed := map[uint64]bool{}
	for _, f := range files {
		listed[inode(t, f)] = true
	}
	maps, err := exec.Command(cat, "/proc/self/maps").Output()
	if err != nil {
		t.Fatal(err)
	}
	var mapped []string
	for _, line := range strings.Split(string(maps), "\n") {
		// Locale and character set data are setlocale's, not the loader's.
		if i := strings.IndexByte(line, '/'); i >= 0 && !strings.Contains(line, "/locale/") && !strings.Contains(line, "/gconv/") {
			mapped = append(mapped, line[i:])
		}
	}
	if len(mapped) < 3 {
		t.Fatalf("cat mapped %v", mapped)
	}
	for _, m := range slices.Compact(slices.Sorted(slices.Values(mapped))) {
		if !listed[inode(t, m)] {
			t.Errorf("%s is mapped but not listed (listed: %v)", m, files)
		}
	}
}

// A static binary loads nothing but itself.
func TestLoadedListsOnlyAStaticBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
		t.Skip("this test binary is dynamic (built with cgo)")
	}
	files, err := loaded(exe, nil)
	if err != nil || !slices.Equal(files, []string{exe}) {
		t.Errorf("loaded %v, %v: want only %s", files, err, exe)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}
