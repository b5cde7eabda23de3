package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
}

// Plugin is a running plugin process. It implements Task; calls are
// serialised. Errors wrap ErrPluginExited when the process is gone, and
// ErrBadFrame when the plugin refused the frame.
type Plugin struct {
	client *plugin.Client
	rpc    taskpb.TaskClient
	copy   bool

	mu     sync.Mutex
	shm    shmWriter
	stream grpc.BidiStreamingClient[taskpb.InferRequest, taskpb.InferResponse] // opened at the first Infer
}

// Start starts the plugin binary and completes the handshake.
func Start(opts Options) (*Plugin, error) {
	cmd := exec.Command(opts.Path)
	cmd.Env = append(os.Environ(), opts.Env...)
	// If the daemon dies without stopping its plugins (SIGKILL, a crash),
	// the kernel ends them too rather than leaving orphans.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     timeout,
		SyncStderr:       stderr,
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "plugin", Output: stderr, Level: hclog.Warn}),
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
	return &Plugin{client: c, rpc: raw.(taskpb.TaskClient), copy: opts.CopyPixels}, nil
}

// Pid is the plugin's process id.
func (p *Plugin) Pid() int {
	if rc := p.client.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Exited reports whether the plugin process has ended.
func (p *Plugin) Exited() bool { return p.client.Exited() }

// Kill ends the plugin process (gracefully first) and frees the shared
// frame buffer.
func (p *Plugin) Kill() {
	p.client.Kill()
	p.mu.Lock()
	p.shm.close()
	p.mu.Unlock()
}

// Load implements Task.
func (p *Plugin) Load(ctx context.Context, req LoadRequest) (ModelInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res, err := p.rpc.Load(ctx, &taskpb.LoadRequest{
		Model: req.Model, Version: req.Version, ModelDir: req.ModelDir,
		OptionsJson: req.Options, Threads: int32(req.Threads),
	})
	if err != nil {
		return ModelInfo{}, p.wrap(err)
	}
	return ModelInfo{
		Task: res.Task, Signature: res.Signature, InputShape: res.InputShape,
		Labels: int(res.Labels), Warmup: time.Duration(res.WarmupNs), Description: res.Description,
	}, nil
}

// Infer implements Task: the pixels go into the shared buffer (or the
// message, with CopyPixels) and only their place travels over gRPC.
func (p *Plugin) Infer(ctx context.Context, f Frame) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	req := &taskpb.InferRequest{Seq: f.Seq, Width: int32(f.Width), Height: int32(f.Height)}
	if p.copy {
		req.Pixels = &taskpb.InferRequest_Rgb{Rgb: f.RGB}
	} else {
		if err := p.shm.write(f.RGB); err != nil {
			return Result{}, err
		}
		req.Pixels = &taskpb.InferRequest_Shared{Shared: &taskpb.SharedPixels{
			Path: p.shm.path, Size: uint64(len(p.shm.data)), Length: uint64(len(f.RGB)),
		}}
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if p.stream == nil {
		// The stream lives as long as the plugin, not as one call's ctx.
		stream, err := p.rpc.Infer(context.Background())
		if err != nil {
			return Result{}, p.wrap(err)
		}
		p.stream = stream
	}
	if err := p.stream.Send(req); err != nil {
		p.stream = nil
		return Result{}, p.wrap(err)
	}
	res, err := p.stream.Recv()
	if err != nil {
		p.stream = nil
		return Result{}, p.wrap(err)
	}
	if res.Error != "" {
		if res.BadFrame {
			// The plugin's message already says "bad frame: ...".
			return Result{}, &remoteError{msg: res.Error, kind: ErrBadFrame}
		}
		return Result{}, errors.New(res.Error)
	}
	return Result{Output: json.RawMessage(res.OutputJson),
		Timings: Timings{
			Preprocess:  time.Duration(res.PreprocessNs),
			Inference:   time.Duration(res.InferenceNs),
			Postprocess: time.Duration(res.PostprocessNs),
		},
	}, nil
}

// wrap turns a gRPC error into the SDK's. Load's own error comes back at
// once with the plugin's message; any other is a transport error, and the
// process is given a moment to be seen as exited (ErrPluginExited).
func (p *Plugin) wrap(err error) error {
	st, _ := status.FromError(err)
	if st.Code() == codes.FailedPrecondition && !p.client.Exited() {
		return errors.New(st.Message()) // Load's own error
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
		if p.client.Exited() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// remoteError is an error the plugin returned, with its message as it was.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }
