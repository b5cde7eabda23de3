package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
)

// Fake is an in-process Process around a Task: the harness for the
// daemon's lifecycle tests (as Nomad's plugins/base/testing.go is for its
// drivers), with no process, no gRPC and no TensorFlow. It behaves as
// *Plugin does (see Process):
//
//   - calls are serialised; a call waiting for its turn gives up with ctx's
//     error when ctx ends;
//   - a call whose ctx ends before the task returns kills the Fake, and its
//     error wraps ErrHung and ErrPluginExited;
//   - Crash (the process died) and Kill make it exited: a call blocked in
//     the task returns at once with ErrPluginExited, and so does every later
//     call; the task's context is cancelled, so a task blocked on it returns;
//   - the task's errors come back as their message only, Infer's keeping
//     ErrBadFrame, as they do across the process boundary;
//   - Infer hands the task a copy of f.RGB (the real one reads the shared
//     memory), and results are copied back;
//   - Pid is a made-up number, above any real process id, different for
//     each Fake; SetNice records its value (Nice).
//
// A task call the Fake abandoned (hung, killed) goes on in its goroutine
// until the task returns; a task that honours its ctx returns then.
type Fake struct {
	task   Task
	pid    int
	calls  *calls
	life   context.Context // the task's context: cancelled when the Fake dies
	cancel context.CancelFunc

	mu   sync.Mutex
	nice int
}

// fakePids numbers Fakes above the kernel's largest pid (PID_MAX_LIMIT,
// 4194304 on 64-bit Linux), so a Pid never names a real process.
var fakePids atomic.Int64

// NewFake returns a live Fake serving t.
func NewFake(t Task) *Fake {
	f := &Fake{task: t, pid: 1<<22 + int(fakePids.Add(1))}
	f.life, f.cancel = context.WithCancel(context.Background())
	f.calls = newCalls(f.cancel, nil)
	return f
}

// Stop implements Process: a task that is an io.Closer is closed, as a
// plugin's is when it is asked to shut down, then the Fake dies.
func (f *Fake) Stop() {
	f.calls.endWith(func() {
		if c, ok := f.task.(io.Closer); ok {
			c.Close()
		}
		f.cancel()
	})
}

// Pid is the Fake's made-up process id.
func (f *Fake) Pid() int { return f.pid }

// Exited reports whether the Fake was killed or crashed.
func (f *Fake) Exited() bool { return f.calls.exited() }

// Kill ends the Fake as the daemon would end a process.
func (f *Fake) Kill() { f.calls.kill() }

// Crash ends the Fake as if the plugin process had died by itself.
func (f *Fake) Crash() { f.calls.kill() }

// SetNice records n (Nice returns it); an exited Fake refuses it as a gone
// process does.
func (f *Fake) SetNice(n int) error {
	if f.Exited() {
		return fmt.Errorf("renice plugin %d: %w", f.pid, ErrPluginExited)
	}
	f.mu.Lock()
	f.nice = n
	f.mu.Unlock()
	return nil
}

// Nice is the last niceness SetNice set (0 before any).
func (f *Fake) Nice() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nice
}

// Load implements Task.
func (f *Fake) Load(ctx context.Context, req LoadRequest) (ModelInfo, error) {
	info, err := fakeCall(f, ctx, "load", false, func(ctx context.Context) (ModelInfo, error) {
		return f.task.Load(ctx, req)
	})
	info.InputShape = slices.Clone(info.InputShape)
	return info, err
}

// Configure implements Task; the task gets its own copy of the options.
func (f *Fake) Configure(ctx context.Context, pipelines map[string]json.RawMessage) error {
	copied := make(map[string]json.RawMessage, len(pipelines))
	for name, opts := range pipelines {
		copied[name] = bytes.Clone(opts)
	}
	_, err := fakeCall(f, ctx, "configure", false, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, f.task.Configure(ctx, copied)
	})
	return err
}

// Validate implements Task.
func (f *Fake) Validate(ctx context.Context) (Validation, error) {
	return fakeCall(f, ctx, "validate", false, f.task.Validate)
}

// Command implements Process for a task that implements Commander; the
// task sees a copy of the command.
func (f *Fake) Command(ctx context.Context, pipeline string, command json.RawMessage) (string, error) {
	c, ok := f.task.(Commander)
	if !ok {
		return "", ErrNoCommands
	}
	command = bytes.Clone(command)
	return fakeCall(f, ctx, "command", false, func(ctx context.Context) (string, error) {
		return c.Command(ctx, pipeline, command)
	})
}

// Infer implements Task: the task sees a copy of the pixels.
func (f *Fake) Infer(ctx context.Context, fr Frame) (Result, error) {
	fr.RGB = bytes.Clone(fr.RGB)
	res, err := fakeCall(f, ctx, "infer", true, func(ctx context.Context) (Result, error) {
		return f.task.Infer(ctx, fr)
	})
	res.Output = bytes.Clone(res.Output)
	if res.Images != nil {
		images := make(map[string][]byte, len(res.Images))
		for name, b := range res.Images {
			images[name] = bytes.Clone(b)
		}
		res.Images = images
	}
	return res, err
}

// fakeCall runs call in its own goroutine, as the one call in progress, and
// returns when it does or when the Fake dies. The task's error crosses as
// the real boundary carries it: its message, and ErrBadFrame for Infer.
func fakeCall[T any](f *Fake, ctx context.Context, name string, infer bool, call func(context.Context) (T, error)) (T, error) {
	var out T
	err := f.calls.do(ctx, name, func() error {
		type answer struct {
			v   T
			err error
		}
		ch := make(chan answer, 1)
		go func() {
			v, err := call(f.life)
			ch <- answer{v, err}
		}()
		select {
		case a := <-ch:
			if f.calls.exited() {
				// The task answered as it was killed: a dead process
				// answers nothing.
				return fmt.Errorf("%s: %w", name, ErrPluginExited)
			}
			if a.err != nil {
				re := &remoteError{msg: a.err.Error()}
				if infer && errors.Is(a.err, ErrBadFrame) {
					re.kind = ErrBadFrame
				}
				return re
			}
			out = a.v
			return nil
		case <-f.calls.dead:
			return fmt.Errorf("%s: %w", name, ErrPluginExited)
		}
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}
