package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The daemon is pure Go: it cross-compiles for an arm64 device with no C
// toolchain and no TensorFlow, and the result is a static binary. Only the
// plugins need the target's TensorFlow C library (README: Cross-compiling
// for arm64).
func TestTheDaemonCrossCompilesForLinuxArm64WithoutCgo(t *testing.T) {
	env := append(os.Environ(), "GOOS=linux", "GOARCH=arm64")

	// No package of this module that the daemon imports uses cgo, even when
	// cgo is on (tfmodels, which links TensorFlow, is the plugins' only).
	list := exec.Command("go", "list", "-deps", "-f", "{{if and (not .Standard) .CgoFiles}}{{.ImportPath}}{{end}}", ".")
	list.Env = append(env, "CGO_ENABLED=1")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	if cgo := strings.Fields(string(out)); len(cgo) > 0 {
		t.Fatalf("edgeinferd imports packages that use cgo: %v", cgo)
	}

	bin := filepath.Join(t.TempDir(), "edgeinferd")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(env, "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build: %v\n%s", err, b)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("the arm64 build is not an ELF file: %v", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_AARCH64 || f.Type != elf.ET_EXEC {
		t.Fatalf("the arm64 build is %v %v %v, want ELFCLASS64 EM_AARCH64 ET_EXEC", f.Class, f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the arm64 build asks for a dynamic loader: it is not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("the arm64 build needs shared libraries: %v", libs)
	}
}
