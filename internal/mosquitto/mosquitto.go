// Package mosquitto starts a real Mosquitto broker (Debian's package, which
// `make test` installs) on a free loopback port for a test, and stops it when
// the test ends. A missing mosquitto fails the test: it is never skipped.
package mosquitto

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Broker is a running Mosquitto.
type Broker struct {
	URL  string // tcp://127.0.0.1:<port>
	Addr string // 127.0.0.1:<port>
	bin  string
	conf string
	cmd  *exec.Cmd
}

// Start runs a broker for t and returns its URL. extra lines are added to
// the broker's config file.
func Start(t testing.TB, extra ...string) string {
	return StartBroker(t, extra...).URL
}

// StartBroker runs a broker for t; extra lines are added to its config. If
// extra has a "listener" line, that listener replaces the default plain
// one on the chosen port ("listener %d" is filled with the port).
func StartBroker(t testing.TB, extra ...string) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			t.Fatalf("mosquitto is not installed (make test installs Debian's package): %v", err)
		}
		bin = "/usr/sbin/mosquitto"
	}
	port := freePort(t)
	lines := []string{"persistence false", "log_dest stderr", "log_type error", "log_type warning"}
	listener := fmt.Sprintf("listener %d 127.0.0.1", port)
	hasListener, anonymous := false, true
	for _, l := range extra {
		if strings.HasPrefix(l, "listener ") {
			hasListener = true
			l = strings.ReplaceAll(l, "%d", fmt.Sprint(port))
		}
		if strings.HasPrefix(l, "allow_anonymous") {
			anonymous = false
		}
		lines = append(lines, l)
	}
	if !hasListener {
		lines = append([]string{listener}, lines...)
	}
	if anonymous {
		lines = append(lines, "allow_anonymous true")
	}
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b := &Broker{URL: "tcp://" + addr, Addr: addr, bin: bin, conf: conf}
	b.start(t)
	t.Cleanup(b.Stop)
	return b
}

func (b *Broker) start(t testing.TB) {
	t.Helper()
	b.cmd = exec.Command(b.bin, "-c", b.conf)
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", b.Addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s: %v", b.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the broker (clients see the connection drop).
func (b *Broker) Stop() {
	if b.cmd != nil {
		b.cmd.Process.Kill()
		b.cmd.Wait()
		b.cmd = nil
	}
}

// StopGracefully stops the broker with SIGTERM, as systemd would: it
// closes its clients' connections and, with Persistent, saves its state.
func (b *Broker) StopGracefully() {
	if b.cmd != nil {
		b.cmd.Process.Signal(syscall.SIGTERM)
		b.cmd.Wait()
		b.cmd = nil
	}
}

// Resume starts a stopped broker again on the same port.
func (b *Broker) Resume(t testing.TB) {
	t.Helper()
	if b.cmd == nil {
		b.start(t)
	}
}

// Persistent is config for StartBroker: the broker keeps its state (the
// persistent sessions with their subscriptions and queued messages, and
// the retained messages) in a folder of its own across StopGracefully and
// Resume, so that a subscriber with a persistent session misses nothing
// published while it could not connect.
func Persistent(t testing.TB) []string {
	t.Helper()
	// Not t.TempDir(): mosquitto started as root drops to its own user,
	// which must be able to write there.
	dir, err := os.MkdirTemp("", "mosquitto-state-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return []string{"persistence true", "persistence_location " + dir + "/", "max_queued_messages 100000"}
}

// ConfFile returns the settings of the Mosquitto config file at path, for
// StartBroker, with each old string of oldnew replaced by the new one that
// follows it (paths, listener ports); comments and blank lines are left out.
// Tests start Mosquitto from the project's example files this way.
func ConfFile(t testing.TB, path string, oldnew ...string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range strings.Lines(strings.NewReplacer(oldnew...).Replace(string(b))) {
		if l = strings.TrimSpace(l); l != "" && l[0] != '#' {
			lines = append(lines, l)
		}
	}
	return lines
}

// ReadableDir returns a folder, removed when t ends, whose files Mosquitto
// can read (password_file, acl_file, certificates): started as root it
// drops to its own user before reading them, and t.TempDir() is private.
func ReadableDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mosquitto-files-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Restart starts the broker again on the same port.
func (b *Broker) Restart(t testing.TB) {
	b.Stop()
	b.start(t)
}

// freePort asks the kernel for a loopback port that is free now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreeAddr returns a loopback host:port that is free now (for the embedded
// broker in tests).
func FreeAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}
