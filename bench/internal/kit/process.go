package kit

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is a child process in a process group of its own, stopped with
// SIGTERM.
type Process struct {
	name string
	Cmd  *exec.Cmd
	done chan struct{}
}

// Start starts cmd (its stderr goes to ours) and reaps it when it ends.
func Start(name string, cmd *exec.Cmd) (*Process, error) {
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, Cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits for the exit (after 30 s it kills), then
// kills what is left in the process group, as systemd's KillMode=mixed does:
// edgeinferd stops its plugins itself, unless it died first.
func (p *Process) Stop() {
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		log.Printf("%s did not stop within 30 s of SIGTERM: killing it", p.name)
		p.Cmd.Process.Kill()
		<-p.done
	}
	syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
}

// StartMosquitto runs Debian's Mosquitto on a free loopback port, with its
// configuration in dir, and returns it and its address. Nagle's algorithm
// is off (set_tcp_nodelay; otherwise a small packet written after another
// waits for the client's delayed ACK, up to 40 ms) and the queue limit is
// lifted so that a burst waiting for a busy client is not dropped. conf is
// added to the configuration: without it the broker lets anyone in.
func StartMosquitto(ctx context.Context, dir, conf string) (*Process, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	if conf == "" {
		conf = "allow_anonymous true\n"
	}
	path := filepath.Join(dir, "mosquitto.conf")
	lines := fmt.Sprintf("listener %d 127.0.0.1\npersistence false\nmax_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n%s",
		ln.Addr().(*net.TCPAddr).Port, conf)
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		return nil, "", err
	}
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	p, err := Start("mosquitto", exec.Command(bin, "-c", path))
	if err != nil {
		return nil, "", fmt.Errorf("%w (make deps installs Debian's mosquitto)", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return p, addr, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Stop()
			return nil, "", fmt.Errorf("mosquitto does not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
