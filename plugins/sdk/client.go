package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgeinfer/edgeinfer/plugins/sdk/confine"
	"github.com/edgeinfer/edgeinfer/plugins/sdk/taskpb"
)

// Options says which plugin binary to start and how.
type Options struct {
	Path string   // the plugin binary
	Env  []string // added to the daemon's environment
	// Stderr receives the plugin's own log lines (TensorFlow's among them);
	// nil discards them.
	Stderr io.Writer
	// CopyPixels sends frame pixels inside the RPC instead of through
	// shared memory (for comparison in bench-plugin).
	CopyPixels bool
	// StartTimeout bounds the handshake (default 30 s).
	StartTimeout time.Duration
	// Confine confines the plugin with Landlock (package confine): it
	// reads its binary and libraries, Access.Read and its frames, changes
	// Access.Write (made if missing), and reaches nothing else of the file
	// system and no TCP. Start fails if the kernel cannot (confine.Check).
	Confine bool
	Access  Access
}

// Plugin is a running plugin process: the daemon's Process. Calls are
// serialised (several pipelines share one Plugin); if a call's ctx ends
// before the plugin answers, the process is killed and the error wraps
// ErrHung and ErrPluginExited. Errors wrap ErrPluginExited when the process
// is gone, and ErrBadFrame when the plugin refused the frame.
type Plugin struct {
	client *plugin.Client
	proc   *os.Process
	pid    int
	rpc    taskpb.TaskClient
	copy   bool
	calls  *calls

	dir    string  // the plugin's private folder (framesDir, go-plugin's socket folder), removed when it ends
	access *Access // what a confined plugin was granted; nil: not confined

	shmMu  sync.Mutex // the buffer: written by the call in progress, freed by Kill
	shm    shmWriter
	stream grpc.BidiStreamingClient[taskpb.InferRequest, taskpb.InferResponse] // opened at the first Infer; used by the call in progress
}

// KernelsEnv is the environment variable that picks TensorFlow's CPU
// kernels: "0" its portable Eigen kernels, "1" oneDNN's. TensorFlow reads it
// when its library loads, so it has to be in a plugin's environment from
// the start.
const KernelsEnv = "TF_ENABLE_ONEDNN_OPTS"

// pluginEnv is a plugin's environment: the daemon's, the options' Env, and
// KernelsEnv=0 unless one of them sets it. TensorFlow turns oneDNN on by
// itself on some CPUs (those with AVX-512 VNNI, for example) and not on
// others, and the two kernel sets round differently: enough to reorder a
// detector's near-tied rows, so that a version whose golden samples were
// made on one machine would be rejected on another. The Eigen kernels are
// what TF.js and TensorFlow on most CPUs compute, so a version validates
// the same everywhere; a device whose golden samples were made with oneDNN
// can set TF_ENABLE_ONEDNN_OPTS=1 in the daemon's environment.
func pluginEnv(daemon, extra []string) []string {
	env := append(slices.Clone(daemon), extra...)
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, KernelsEnv+"=") }) {
		env = append(env, KernelsEnv+"=0")
	}
	return env
}

// Start starts the plugin binary and completes the handshake.
func Start(opts Options) (*Plugin, error) {
	if opts.Confine {
		if err := confine.Check(); err != nil {
			return nil, fmt.Errorf("start plugin %s: %w: %w", opts.Path, ErrCannotConfine, err)
		}
		for _, dir := range opts.Access.Write {
			// Landlock grants what exists: the folder must be there first.
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("start plugin %s: %w", opts.Path, err)
			}
		}
	}
	dir, err := os.MkdirTemp(shmDir(), "edgeinfer-plugin-")
	if err != nil {
		return nil, fmt.Errorf("start plugin %s: private folder: %w", opts.Path, err)
	}
	p, err := start(opts, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// framesDir is the folder of a plugin's frame buffers in its private
// folder: Start makes one per plugin under shmDir, 0700, and removes it
// when the plugin ends. go-plugin makes the plugin's socket folder in it
// too. A confined plugin is granted these two and nothing else of /dev/shm.
const framesDir = "frames"

// start starts the plugin with its private folder dir.
func start(opts Options, dir string) (*Plugin, error) {
	frames := filepath.Join(dir, framesDir)
	if err := os.Mkdir(frames, 0o700); err != nil {
		return nil, fmt.Errorf("start plugin %s: private folder: %w", opts.Path, err)
	}
	var access *Access
	if opts.Confine {
		access = &opts.Access
	}
	var cmd *exec.Cmd // the plugin's, made by go-plugin for the RunnerFunc
	stderr := opts.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          plugin.PluginSet{pluginName: &grpcPlugin{}},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// go-plugin makes the socket folder in the private folder, sets
		// PLUGIN_UNIX_SOCKET_DIR and hands over a command with the
		// environment it needs, which the runner starts.
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: dir},
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, socket string) (runner.Runner, error) {
			cmd = spec
			cmd.Path, cmd.Args = opts.Path, []string{opts.Path}
			cmd.Env = pluginEnv(cmd.Env, opts.Env)
			// If the daemon dies without stopping its plugins (SIGKILL, a
			// crash), the kernel ends them too rather than leaving orphans.
			// In a process group of its own, a plugin does not get the
			// terminal's Ctrl-C: the daemon finishes its frames first, then
			// stops it.
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
			var policy *confine.Policy
			if access != nil {
				policy = &confine.Policy{Read: access.Read, Write: access.Write, Frames: frames, Socket: socket}
			}
			return newProcessRunner(cmd, policy)
		},
		StartTimeout: timeout,
		SyncStderr:   stderr,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "plugin", Output: stderr, Level: hclog.Warn,
			// The caller learns of an exit from ErrPluginExited (and Kill
			// always ends with SIGKILL): go-plugin's own line is noise.
			Exclude: func(_ hclog.Level, msg string, _ ...any) bool { return msg == "plugin process exited" }}),
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage))},
	})
	conn, err := c.Client()
	if err != nil {
		c.Kill()
		return nil, fmt.Errorf("start plugin %s: %w", opts.Path, err)
	}
	raw, err := conn.Dispense(pluginName)
	if err != nil {
		c.Kill()
		return nil, fmt.Errorf("start plugin %s: %w", opts.Path, err)
	}
	p := &Plugin{client: c, proc: cmd.Process, pid: cmd.Process.Pid, rpc: raw.(taskpb.TaskClient), copy: opts.CopyPixels,
		dir: dir, access: access, shm: shmWriter{dir: frames}}
	p.calls = newCalls(p.end, c.Exited)
	return p, nil
}

// Pid is the plugin's process id.
func (p *Plugin) Pid() int { return p.pid }

// Exited reports whether the plugin process has ended or is being killed.
func (p *Plugin) Exited() bool { return p.calls.exited() }

// Kill ends the plugin process at once (SIGKILL, also when it is stopped:
// no graceful wait) and frees the shared frame buffer. It does not wait for
// a call in progress: that call returns, with ErrPluginExited. Safe to call
// more than once and concurrently.
func (p *Plugin) Kill() { p.calls.kill() }

// StopTimeout is how long Stop waits for a plugin to end by itself (go-plugin's
// wait after asking it to shut down) before it is killed.
const StopTimeout = 2 * time.Second

// Stop implements Process: go-plugin asks the plugin to shut down (Serve
// returns and closes the task: a plugin that keeps state saves it), waits
// StopTimeout for the process to end and kills it if it has not.
func (p *Plugin) Stop() {
	p.calls.endWith(func() {
		p.client.Kill()
		p.proc.Kill() // go-plugin killed it, or it ended: a no-op either way (pidfd)
		p.cleanUp()
	})
}

// end is the kill itself: SIGKILL first, because go-plugin's Kill asks the
// plugin to shut down and waits for that, which a stopped or stuck process
// never does; then go-plugin's cleanup, which now returns at once.
func (p *Plugin) end() {
	p.proc.Kill() // through a pidfd: never another process that reused the pid
	p.client.Kill()
	p.cleanUp()
}

// cleanUp frees the shared buffer and removes the private folder of a
// plugin that has ended.
func (p *Plugin) cleanUp() {
	p.shmMu.Lock()
	p.shm.close()
	p.shmMu.Unlock()
	os.RemoveAll(p.dir)
}

// SetNice sets the niceness of every thread of the plugin process.
func (p *Plugin) SetNice(n int) error {
	if p.Exited() {
		return fmt.Errorf("renice plugin %d: %w", p.pid, ErrPluginExited)
	}
	return setNice(p.pid, n)
}

// setNice sets the niceness of each thread of pid (Linux keeps one per
// thread: renicing the process id alone leaves the others as they were).
func setNice(pid, n int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("renice plugin %d: %w", pid, ErrPluginExited)
	} else if err != nil {
		return fmt.Errorf("renice plugin %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread may end while we go through them (ESRCH).
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil && err != syscall.ESRCH {
			return fmt.Errorf("renice plugin %d (thread %d) to %d: %w", pid, tid, n, err)
		}
	}
	return nil
}

// Load implements Task.
func (p *Plugin) Load(ctx context.Context, req LoadRequest) (info ModelInfo, err error) {
	err = p.calls.do(ctx, "load", func() error {
		res, err := p.rpc.Load(ctx, &taskpb.LoadRequest{
			Model: req.Model, Version: req.Version, ModelDir: req.ModelDir,
			Threads: int32(req.Threads), Tolerance: req.Tolerance,
		})
		if err != nil {
			return p.wrap(err)
		}
		info = ModelInfo{
			Task: res.Task, Signature: res.Signature, InputShape: res.InputShape,
			Labels: int(res.Labels), Warmup: time.Duration(res.WarmupNs), Description: res.Description,
		}
		return nil
	})
	if err != nil {
		return ModelInfo{}, err
	}
	return info, nil
}

// Configure implements Task. A confined plugin is not sent options that
// name a path it was not granted at its start: the error names the
// pipeline, the option and the path.
func (p *Plugin) Configure(ctx context.Context, pipelines map[string]json.RawMessage) error {
	if p.access != nil {
		if err := p.access.allows(pipelines); err != nil {
			return err
		}
	}
	return p.calls.do(ctx, "configure", func() error {
		req := &taskpb.ConfigureRequest{Pipelines: make(map[string][]byte, len(pipelines))}
		for name, opts := range pipelines {
			req.Pipelines[name] = opts
		}
		_, err := p.rpc.Configure(ctx, req)
		return p.wrap(err)
	})
}

// Validate implements Task.
func (p *Plugin) Validate(ctx context.Context) (v Validation, err error) {
	err = p.calls.do(ctx, "validate", func() error {
		res, err := p.rpc.Validate(ctx, &taskpb.ValidateRequest{})
		if err != nil {
			return p.wrap(err)
		}
		v = Validation{Samples: int(res.Samples), MaxAbsDiff: res.MaxAbsDiff, Tolerance: res.Tolerance}
		return nil
	})
	if err != nil {
		return Validation{}, err
	}
	return v, nil
}

// Command implements Process: the command goes to the task in one call;
// a plugin whose task takes no commands answers Unimplemented, which
// becomes ErrNoCommands.
func (p *Plugin) Command(ctx context.Context, pipeline string, command json.RawMessage) (msg string, err error) {
	err = p.calls.do(ctx, "command", func() error {
		res, err := p.rpc.Command(ctx, &taskpb.CommandRequest{Pipeline: pipeline, CommandJson: command})
		if status.Code(err) == codes.Unimplemented {
			return ErrNoCommands
		}
		if err != nil {
			return p.wrap(err)
		}
		msg = res.Message
		return nil
	})
	return msg, err
}

// Infer implements Task: the pixels go into the shared buffer (or the
// message, with CopyPixels) and only their place travels over gRPC.
func (p *Plugin) Infer(ctx context.Context, f Frame) (res Result, err error) {
	err = p.calls.do(ctx, "infer", func() error {
		req := &taskpb.InferRequest{
			Pipeline: f.Pipeline, Seq: f.Seq, Width: int32(f.Width), Height: int32(f.Height),
			Sensor: f.Sensor, Source: f.Source, TimeUnixNano: unixNano(f.Time),
		}
		if p.copy {
			req.Pixels = &taskpb.InferRequest_Rgb{Rgb: f.RGB}
		} else {
			shared, err := p.share(f.RGB)
			if err != nil {
				return err
			}
			req.Pixels = &taskpb.InferRequest_Shared{Shared: shared}
		}
		r, err := p.exchange(req)
		if err != nil {
			return p.wrap(err)
		}
		if r.Error != "" {
			if r.BadFrame {
				// The plugin's message already says "bad frame: ...".
				return &remoteError{msg: r.Error, kind: ErrBadFrame}
			}
			return &remoteError{msg: r.Error}
		}
		res = Result{Output: json.RawMessage(r.OutputJson), Images: r.Images,
			Timings: Timings{
				Preprocess:  time.Duration(r.PreprocessNs),
				Inference:   time.Duration(r.InferenceNs),
				Postprocess: time.Duration(r.PostprocessNs),
			},
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// share writes the pixels into the shared buffer, unless Kill has freed it.
func (p *Plugin) share(rgb []byte) (*taskpb.SharedPixels, error) {
	p.shmMu.Lock()
	defer p.shmMu.Unlock()
	if p.calls.exited() {
		return nil, fmt.Errorf("infer: %w", ErrPluginExited)
	}
	if err := p.shm.write(rgb); err != nil {
		return nil, err
	}
	return &taskpb.SharedPixels{Path: p.shm.path, Size: uint64(len(p.shm.data)), Length: uint64(len(rgb))}, nil
}

// exchange sends one request on the frame stream and waits for its answer.
func (p *Plugin) exchange(req *taskpb.InferRequest) (*taskpb.InferResponse, error) {
	if p.stream == nil {
		// The stream lives as long as the plugin, not as one call's ctx;
		// a call whose ctx ends kills the process, which ends the stream.
		stream, err := p.rpc.Infer(context.Background())
		if err != nil {
			return nil, err
		}
		p.stream = stream
	}
	if err := p.stream.Send(req); err != nil {
		p.stream = nil
		return nil, err
	}
	res, err := p.stream.Recv()
	if err != nil {
		p.stream = nil
		return nil, err
	}
	return res, nil
}

// wrap turns a gRPC error into the SDK's. The task's own error (Load's,
// Configure's, Validate's) comes back at once with the plugin's message; any
// other is a transport error, and the process is given a moment to be seen
// as exited (ErrPluginExited).
func (p *Plugin) wrap(err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	if st.Code() == codes.FailedPrecondition && !p.Exited() {
		return &remoteError{msg: st.Message()} // the task's own error
	}
	if p.waitExited() {
		return fmt.Errorf("%w: %s", ErrPluginExited, st.Message())
	}
	return errors.New(st.Message())
}

// waitExited gives go-plugin a moment to notice a process that just died
// (the RPC error can arrive before the wait on the process returns).
func (p *Plugin) waitExited() bool {
	for i := 0; i < 100; i++ {
		if p.Exited() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// remoteError is an error the task returned, with its message as it was
// and the one kind that crosses the process boundary (ErrBadFrame, from
// Infer), if any.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// unixNano is t in nanoseconds since 1970 for the protocol; 0 for the zero
// time (unknown).
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
