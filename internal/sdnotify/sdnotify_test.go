package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func listen(t *testing.T, path string) *Listener {
	t.Helper()
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// socketPath is a path short enough for a unix socket (108 bytes).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdnotify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "notify")
}

func TestNotifySendsTheStatesInOneDatagramFromThisProcess(t *testing.T) {
	for _, c := range []struct{ name, path string }{
		{"a socket file", socketPath(t)},
		{"an abstract socket", fmt.Sprintf("@edgeinfer-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := listen(t, c.path)
			t.Setenv(SocketEnv, c.path)
			n, err := FromEnv()
			if err != nil || n == nil {
				t.Fatalf("FromEnv: %v, %v", n, err)
			}
			if err := n.Notify("READY=1", "STATUS=3 pipelines serving, 120 frames/s"); err != nil {
				t.Fatal(err)
			}
			m, err := l.Next(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if m.State != "READY=1\nSTATUS=3 pipelines serving, 120 frames/s" || !m.Has("READY=1") || m.PID != os.Getpid() {
				t.Fatalf("got %q from pid %d, want both states from pid %d", m.State, m.PID, os.Getpid())
			}
			if s, ok := m.Value("STATUS"); !ok || s != "3 pipelines serving, 120 frames/s" {
				t.Fatalf("STATUS %q, %v", s, ok)
			}
		})
	}
}

func TestWithoutNotifySocketNothingIsSentAndNothingFails(t *testing.T) {
	t.Setenv(SocketEnv, "")
	n, err := FromEnv()
	if n != nil || err != nil {
		t.Fatalf("FromEnv = %v, %v; want nil, nil", n, err)
	}
	if err := n.Notify("READY=1"); err != nil {
		t.Fatalf("a nil Notifier: %v", err)
	}
}

func TestABadNotifySocketOrStateIsAnError(t *testing.T) {
	for _, s := range []string{"relative/notify", "@", "vsock:2:1234"} {
		if _, err := New(s); err == nil {
			t.Errorf("New(%q): no error", s)
		}
	}
	n, err := New(socketPath(t)) // nobody listens there
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify("WATCHDOG=1"); err == nil {
		t.Error("a socket nobody listens on: no error")
	}
	l := listen(t, socketPath(t))
	n, _ = New(l.Path())
	if err := n.Notify("READY"); err == nil {
		t.Error(`"READY" (no '='): no error`)
	}
}

func TestWatchdogIsTheTimeoutOfWatchdogUsecWhenItIsMeantForThisProcess(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"2000000", "", 2 * time.Second, false},
		{"30000000", self, 30 * time.Second, false},
		{"2000000", "1", 0, false}, // another process's watchdog
		{"", self, 0, false},
		{"0", "", 0, true},
		{"-5", "", 0, true},
		{"2s", "", 0, true},
		{"2000000", "me", 0, true},
		{"99999999999999999999", "", 0, true},
	} {
		t.Setenv(WatchdogEnv, c.usec)
		t.Setenv(WatchdogPIDEnv, c.pid)
		got, err := Watchdog()
		if got != c.want || (err != nil) != c.err {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, %v; want %v, error %v", c.usec, c.pid, got, err, c.want, c.err)
		}
	}
}

func TestUnsetenvKeepsChildrenFromInheritingTheProtocol(t *testing.T) {
	t.Setenv(SocketEnv, "/run/systemd/notify")
	t.Setenv(WatchdogEnv, "1000000")
	t.Setenv(WatchdogPIDEnv, strconv.Itoa(os.Getpid()))
	n, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	Unsetenv()
	for _, k := range []string{SocketEnv, WatchdogEnv, WatchdogPIDEnv} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q still set", k, v)
		}
	}
	if n.addr.Name != "/run/systemd/notify" {
		t.Errorf("the Notifier lost its socket: %q", n.addr.Name)
	}
}

func TestNextTimesOutWhenNothingCame(t *testing.T) {
	l := listen(t, socketPath(t))
	if _, err := l.Next(50 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
}
