// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): a Type=notify service tells systemd that it is ready
// (READY=1), alive (WATCHDOG=1), what it is doing (STATUS=...) and that it
// is stopping (STOPPING=1), each message one datagram of newline-separated
// VAR=value lines on the unix socket named by $NOTIFY_SOCKET (a path, or
// "@name" for an abstract socket). $WATCHDOG_USEC and $WATCHDOG_PID say
// whether systemd expects WATCHDOG=1 and how often (sd_watchdog_enabled(3)).
//
// It is the protocol and nothing else: a few dozen lines, so edgeinferd
// does not take a dependency (coreos/go-systemd's daemon package does the
// same) for them, and the environment is read once and can be cleared at
// once, so that the plugin processes the daemon starts later do not inherit
// $NOTIFY_SOCKET and $WATCHDOG_* and cannot speak in the daemon's name.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The environment variables systemd sets for a notify service.
const (
	SocketEnv      = "NOTIFY_SOCKET"
	WatchdogEnv    = "WATCHDOG_USEC"
	WatchdogPIDEnv = "WATCHDOG_PID"
)

// Notifier sends notifications to the service manager's socket. A nil
// *Notifier (not run by systemd) sends nothing and reports no error.
type Notifier struct {
	addr *net.UnixAddr
}

// New returns a Notifier for socket, a file system path ("/run/systemd/notify")
// or an abstract socket name ("@name").
func New(socket string) (*Notifier, error) {
	if len(socket) < 2 || socket[0] != '/' && socket[0] != '@' {
		return nil, fmt.Errorf("%s=%q: not an absolute socket path or an @abstract socket name", SocketEnv, socket)
	}
	// Go's net package maps a leading '@' to the abstract namespace.
	return &Notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
}

// FromEnv returns the Notifier of $NOTIFY_SOCKET; nil, and no error, when it
// is not set (the process was not started by systemd as a notify service).
func FromEnv() (*Notifier, error) {
	socket := os.Getenv(SocketEnv)
	if socket == "" {
		return nil, nil
	}
	return New(socket)
}

// Notify sends the states ("READY=1", "STATUS=loading models") in one
// datagram. It does nothing on a nil Notifier.
func (n *Notifier) Notify(states ...string) error {
	if n == nil || len(states) == 0 {
		return nil
	}
	for _, s := range states {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("sd_notify: %q is not VAR=value", s)
		}
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(states, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Watchdog returns the service's watchdog timeout (WatchdogSec=, from
// $WATCHDOG_USEC) as sd_watchdog_enabled(3) does: 0 when there is no
// watchdog, or when $WATCHDOG_PID names another process (the watchdog is
// not this process's to keep). systemd must hear WATCHDOG=1 within every
// timeout; sd_watchdog_enabled(3) advises sending it every half.
func Watchdog() (time.Duration, error) {
	usec := os.Getenv(WatchdogEnv)
	if usec == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%s=%q: not a positive number of microseconds", WatchdogEnv, usec)
	}
	if p := os.Getenv(WatchdogPIDEnv); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return 0, fmt.Errorf("%s=%q: not a process id", WatchdogPIDEnv, p)
		}
		if pid != os.Getpid() {
			return 0, nil
		}
	}
	if n > uint64(1<<63-1)/uint64(time.Microsecond) {
		return 0, errors.New(WatchdogEnv + " is too large")
	}
	return time.Duration(n) * time.Microsecond, nil
}

// Unsetenv removes $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID from
// the environment, so that the processes started from now on do not
// inherit them. Read them first (FromEnv, Watchdog).
func Unsetenv() {
	for _, k := range []string{SocketEnv, WatchdogEnv, WatchdogPIDEnv} {
		os.Unsetenv(k)
	}
}
