package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Listener is the service manager's end of the protocol, for tests: a
// unixgram socket that receives notifications with their sender's process
// id (SO_PASSCRED), as systemd does to tell the main process (NotifyAccess=
// main) from its children.
type Listener struct {
	conn *net.UnixConn
	path string
}

// Message is one datagram received.
type Message struct {
	State string    // the datagram: VAR=value lines
	PID   int       // the process that sent it
	At    time.Time // when it was received
}

// Has reports whether the message sets kv ("READY=1"), one of its lines.
func (m Message) Has(kv string) bool {
	for _, line := range strings.Split(m.State, "\n") {
		if line == kv {
			return true
		}
	}
	return false
}

// Value is the value of the message's variable key ("STATUS"), and whether
// it has one.
func (m Message) Value(key string) (string, bool) {
	for _, line := range strings.Split(m.State, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// Listen binds a notification socket at path (a file system path, or
// "@name" for an abstract socket); NOTIFY_SOCKET=path points a process at
// it.
func Listen(path string) (*Listener, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("SO_PASSCRED: %w", errors.Join(err, serr))
	}
	return &Listener{conn: conn, path: path}, nil
}

// Path is the socket's address, for NOTIFY_SOCKET.
func (l *Listener) Path() string { return l.path }

// Next waits at most timeout for the next message; the error wraps
// os.ErrDeadlineExceeded when none came.
func (l *Listener) Next(timeout time.Duration) (Message, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	l.conn.SetReadDeadline(time.Now().Add(timeout))
	n, oobn, _, _, err := l.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return Message{}, err
	}
	m := Message{State: string(buf[:n]), At: time.Now()}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return m, err
	}
	for _, cm := range msgs {
		if cred, err := syscall.ParseUnixCredentials(&cm); err == nil {
			m.PID = int(cred.Pid)
		}
	}
	return m, nil
}

// Close closes the socket and removes its file.
func (l *Listener) Close() error {
	err := l.conn.Close()
	if strings.HasPrefix(l.path, "/") {
		os.Remove(l.path)
	}
	return err
}
