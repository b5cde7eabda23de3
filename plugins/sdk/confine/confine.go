// Package confine starts a plugin process confined with Landlock, the Linux
// kernel's unprivileged access control: the process reads its binary, its
// shared libraries and what its Policy grants, writes only the folders the
// Policy names, and can neither reach the rest of the file system nor use
// TCP, abstract unix sockets outside itself or signals to other processes
// (plugins/sdk/README.md, "Confinement", has the exact list).
//
// Landlock restricts the thread that asks, and whatever that thread starts
// afterwards. A plugin links TensorFlow, whose library makes threads of its
// own with pthread_create, out of reach of Go's all-threads system calls
// (which refuse to run in a cgo program anyway); restricting a plugin from
// inside is only sound if it then re-executes itself, loading TensorFlow a
// second time. Start does it from outside instead: it restricts one OS
// thread of the daemon (locked, used for nothing else) and starts the
// plugin from it, so the process is confined from its first instruction,
// the dynamic loader and TensorFlow's initialisers included, every thread
// it makes is too, and the plugin binary has nothing to do. The daemon's
// other threads are untouched: the Go runtime never makes a new thread from
// a locked one.
//
// The package is pure Go (no cgo): the daemon links no TensorFlow.
package confine

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MinABI is the oldest Landlock ABI that confines a plugin: version 4
// (Linux 6.7) is the first to restrict TCP besides the file system.
const MinABI = 4

// Policy is what a confined plugin may reach besides its binary, its
// shared libraries and the system files in systemRead.
type Policy struct {
	// Read are files and folders it may read (folders: everything under
	// them): the model version, an embed gallery, a reference image.
	// Paths that do not exist are left out.
	Read []string
	// Write are folders it may read and change: an embed state_dir. They
	// must exist.
	Write []string
	// Frames is the folder of the daemon's frame buffers: read only.
	Frames string
	// Socket is the folder in which go-plugin makes the plugin's unix
	// socket (PLUGIN_UNIX_SOCKET_DIR).
	Socket string
}

// systemRead are the system files a plugin reads, beyond its binary and
// libraries, and why:
//   - /etc/ld.so.cache: the dynamic loader finds libc and libstdc++ by it;
//   - /dev/urandom: TensorFlow seeds its random generators from it and
//     aborts the process if it cannot;
//   - /sys/devices/system/cpu/possible and /online: glibc and TensorFlow
//     count the CPUs by them to size their thread pools;
//   - /proc/cpuinfo and /proc/meminfo: TensorFlow's graph optimiser
//     estimates costs from the CPU's frequency and the memory size (both
//     about the machine, not about any process);
//   - /etc/localtime: the time zone of the plugin's log lines.
//
// Left out on purpose, since the plugin runs the same without them: the
// rest of /proc (the Go runtime's cgroup CPU limit and glibc's stack size of
// the main thread fall back to their defaults, TensorFlow's threads keep
// their process's name instead of their own in /proc/<pid>/task/*/comm;
// other processes' entries stay out of reach), /sys/kernel/mm (huge page
// sizes), /sys/bus/cpu and /sys/devices/system/node (CPU capacities and
// NUMA nodes: TensorFlow's CPU kernels do not use them) and
// /proc/sys/net/core/somaxconn (a listen backlog of 4096 is the default).
var systemRead = []string{
	"/etc/ld.so.cache",
	"/dev/urandom",
	"/sys/devices/system/cpu/possible",
	"/sys/devices/system/cpu/online",
	"/proc/cpuinfo",
	"/proc/meminfo",
	"/etc/localtime",
}

// ABI returns the kernel's Landlock ABI version; 0 when Landlock cannot be
// used (Check says why).
func ABI() int {
	v, errno := abi()
	if errno != 0 {
		return 0
	}
	return v
}

func abi() (int, unix.Errno) {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	return int(v), errno
}

// Check reports why this process cannot confine a plugin; nil when it can.
func Check() error {
	switch v, errno := abi(); {
	case errno == unix.ENOSYS:
		return errors.New("the kernel has no Landlock (Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK)")
	case errno == unix.EOPNOTSUPP:
		return errors.New("Landlock is not enabled at boot (add landlock to the lsm= kernel parameter)")
	case errno == unix.EPERM:
		return errors.New("the Landlock system calls are refused by a seccomp filter (systemd: SystemCallFilter=landlock_create_ruleset landlock_add_rule landlock_restrict_self)")
	case errno != 0:
		return fmt.Errorf("landlock_create_ruleset: %w", errno)
	case v < MinABI:
		return fmt.Errorf("the kernel's Landlock ABI is %d; confining a plugin needs %d (Linux 6.7+) to restrict TCP", v, MinABI)
	}
	return nil
}

// Process is a confined process that Start started.
type Process struct {
	wait chan struct{} // Wait asks the starting thread to wait
	done chan error    // the process's exit, from that thread
}

// Start starts cmd (with cmd.Path absolute) confined to p and returns once
// it runs. The OS thread that started it stays, confined, until Wait:
// Linux sends a child its parent-death signal (SysProcAttr.Pdeathsig) when
// the thread that started it ends, not the process. Call Wait instead of
// cmd.Wait, once the process's output is read (Wait closes cmd's pipes).
func Start(cmd *exec.Cmd, p Policy) (*Process, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	files, err := loaded(cmd.Path, cmd.Env)
	if err != nil {
		return nil, err
	}
	proc := &Process{wait: make(chan struct{}), done: make(chan error, 1)}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is confined for good, and ends with
		// this goroutine.
		runtime.LockOSThread()
		err := restrict(ABI(), p, files)
		if err == nil {
			err = cmd.Start()
		}
		started <- err
		if err == nil {
			<-proc.wait
			proc.done <- cmd.Wait()
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("confine %s: %w", cmd.Path, err)
	}
	return proc, nil
}

// Wait waits for the process to end (exec.Cmd.Wait) and lets the thread
// that started it go. Call it once.
func (p *Process) Wait() error {
	close(p.wait)
	return <-p.done
}

// access rights, as Landlock names them.
const (
	// readFile reads a file; readTree also lists folders under a path.
	readFile = unix.LANDLOCK_ACCESS_FS_READ_FILE
	readTree = readFile | unix.LANDLOCK_ACCESS_FS_READ_DIR
	// writeTree is everything on files and folders under a path except
	// executing, device nodes and special files.
	writeTree = readTree | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REFER
	// socketDir is what go-plugin does there: a temporary file made
	// (os.CreateTemp opens it read-write) and removed to pick a name, then
	// the socket.
	socketDir = readFile | unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK
	// program is what execve and the dynamic loader need of the binary,
	// its interpreter and each shared library.
	program = readFile | unix.LANDLOCK_ACCESS_FS_EXECUTE
)

// handledFS are the file-system rights Landlock denies unless a rule grants
// them, at ABI abi (>= MinABI): every right the package knows of there.
func handledFS(abi int) uint64 {
	h := uint64(1)<<15 - 1 // ABI 3: EXECUTE .. TRUNCATE
	if abi >= 5 {
		h |= unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	}
	return h
}

// restrict builds the ruleset of p (plus the program's files and
// systemRead) and enforces it on the calling thread, with no_new_privs.
func restrict(abi int, p Policy, files []string) error {
	attr := unix.LandlockRulesetAttr{
		Handled_access_fs: handledFS(abi),
		// No rule for either: no TCP bind or connect at all.
		Handled_access_net: unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP,
	}
	if abi >= 6 {
		// No abstract unix socket or signal outside the plugin's domain.
		attr.Scoped = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
	}
	// The kernel takes a longer struct than it knows as long as the rest
	// is zero (the quiet_* fields of newer ABIs).
	r, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if errno != 0 {
		return fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	fd := int(r)
	defer unix.Close(fd)

	type rule struct {
		path   string
		access uint64
		must   bool // the path has to exist
	}
	var rules []rule
	for _, f := range files {
		rules = append(rules, rule{f, program, true})
	}
	for _, f := range systemRead {
		rules = append(rules, rule{f, readFile, false})
	}
	for _, f := range p.Read {
		rules = append(rules, rule{f, readTree, false})
	}
	for _, f := range p.Write {
		rules = append(rules, rule{f, writeTree, true})
	}
	rules = append(rules, rule{p.Frames, readFile, true}, rule{p.Socket, socketDir, true})
	for _, r := range rules {
		if err := addPathRule(fd, r.path, r.access&attr.Handled_access_fs); err != nil {
			if !r.must && errors.Is(err, os.ErrNotExist) {
				continue // nothing there to grant: an open fails as it would anyway
			}
			return err
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(fd), 0, 0); errno != 0 {
		return fmt.Errorf("landlock_restrict_self: %w", errno)
	}
	return nil
}

// addPathRule grants access beneath path (a folder) or to path (a file).
// Landlock refuses rights on a file that only make sense on a folder, so a
// file gets the file rights of access only.
func addPathRule(fd int, path string, access uint64) error {
	if path == "" {
		return errors.New("a policy path is empty")
	}
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		access &= unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
			unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	}
	attr := unix.LandlockPathBeneathAttr{Allowed_access: access, Parent_fd: int32(pfd)}
	_, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(fd), unix.LANDLOCK_RULE_PATH_BENEATH,
		uintptr(unsafe.Pointer(&attr)), 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("landlock_add_rule %s: %w", path, errno)
	}
	return nil
}

// loaded are the files execve and the dynamic loader open to start binary
// with the environment env: the binary, its interpreter (PT_INTERP) and
// the shared libraries the interpreter resolves for it, as its --list
// option (what ldd runs) prints them, without running the binary.
func loaded(binary string, env []string) ([]string, error) {
	f, err := elf.Open(binary)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	files := []string{binary}
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("%s: PT_INTERP: %w", binary, err)
			}
			interp = string(bytes.TrimRight(b, "\x00"))
		}
	}
	if interp == "" {
		return files, nil // static: nothing else is loaded
	}
	list := exec.Command(interp, "--list", binary)
	list.Env = env
	var stderr bytes.Buffer
	list.Stderr = &stderr
	out, err := list.Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list %s: %w: %s", interp, binary, err, strings.TrimSpace(stderr.String()))
	}
	files = append(files, interp)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
		// "\t/lib64/ld-linux-x86-64.so.2 (0x...)", "\tlinux-vdso.so.1 (0x...)"
		// or "\tlibfoo.so => not found".
		line := strings.TrimSpace(sc.Text())
		if name, path, ok := strings.Cut(line, " => "); ok {
			if strings.HasPrefix(path, "not found") {
				return nil, fmt.Errorf("%s: shared library %s not found", binary, name)
			}
			line = path
		}
		if path, _, _ := strings.Cut(line, " ("); strings.HasPrefix(path, "/") && path != interp {
			files = append(files, path)
		}
	}
	return files, nil
}
