package sdk

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"

	"github.com/hashicorp/go-plugin/runner"

	"github.com/edgeinfer/edgeinfer/plugins/sdk/confine"
)

// processRunner is how go-plugin starts, waits for and kills a plugin
// process (its RunnerFunc): as go-plugin's own command runner does, except
// that a confined plugin is started by confine.Start.
type processRunner struct {
	cmd            *exec.Cmd
	policy         *confine.Policy // nil: not confined
	stdout, stderr io.ReadCloser
	wait           func() error // set by Start
}

var _ runner.Runner = (*processRunner)(nil)

func newProcessRunner(cmd *exec.Cmd, policy *confine.Policy) (*processRunner, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	return &processRunner{cmd: cmd, policy: policy, stdout: stdout, stderr: stderr}, nil
}

func (r *processRunner) Start(context.Context) error {
	if r.policy == nil {
		r.wait = r.cmd.Wait
		return r.cmd.Start()
	}
	p, err := confine.Start(r.cmd, *r.policy)
	if err != nil {
		return err
	}
	r.wait = p.Wait
	return nil
}

func (r *processRunner) Wait(context.Context) error { return r.wait() }

func (r *processRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

func (r *processRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *processRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *processRunner) Name() string          { return r.cmd.Path }

// ID is the process id; "" when the process did not start (go-plugin's
// Kill asks after a failed start too).
func (r *processRunner) ID() string {
	if r.cmd.Process == nil {
		return ""
	}
	return strconv.Itoa(r.cmd.Process.Pid)
}

// Diagnose adds nothing to go-plugin's error for a failed handshake: the
// plugin's stderr, logged as it comes, tells why.
func (r *processRunner) Diagnose(context.Context) string { return "" }

// The plugin and the daemon share the host's network and file system:
// addresses need no translation.
func (r *processRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *processRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}
