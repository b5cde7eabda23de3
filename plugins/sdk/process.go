package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// Process is what the daemon holds of a running plugin: the Task it serves
// and the process around it. *Plugin (a real process, client.go) and *Fake
// (in-process, testing.go) implement it the same way:
//
//   - calls are serialised, one at a time, whichever pipeline makes them;
//     a call whose ctx ends before its turn comes (or has ended before the
//     call) returns ctx's error and leaves the process alone;
//   - a call whose ctx ends before the plugin answers kills the process,
//     and its error wraps ErrHung and ErrPluginExited;
//   - once the process is gone every call returns an error wrapping
//     ErrPluginExited;
//   - the task's own errors come back as its message (Infer's keep
//     ErrBadFrame).
type Process interface {
	Task
	// Pid is the process id (a Fake's is a made-up number no real process has).
	Pid() int
	// Exited reports whether the process has ended (or is being killed).
	Exited() bool
	// Kill ends the process at once (SIGKILL; no graceful wait) and frees
	// the shared memory; safe to call concurrently with a blocked Infer and
	// more than once.
	Kill()
	// SetNice sets the scheduling niceness of every thread of the process.
	// Lowering it needs privilege: the error is returned (the daemon logs it).
	SetNice(n int) error
	// Stop ends the process gracefully: the task's Close runs (a plugin
	// that keeps state saves it), and the process is killed if it has not
	// ended within StopTimeout. For a process with no call in progress (a
	// retired version, a daemon stopping); a later Kill does nothing.
	Stop()
	// Command hands a pipeline's command to the task (Commander); a task
	// that takes none gives an error wrapping ErrNoCommands.
	Command(ctx context.Context, pipeline string, command json.RawMessage) (string, error)
}

var (
	_ Process = (*Plugin)(nil)
	_ Process = (*Fake)(nil)
)

// calls is what *Plugin and *Fake share: the turn that serialises calls and
// the kill that a call's ctx ending, or Kill, sets off once.
type calls struct {
	turn chan struct{} // holds a token while a call is in progress
	dead chan struct{} // closed when the process is being killed
	once sync.Once
	end  func()      // ends the process; run once by kill
	gone func() bool // reports a process that ended by itself; may be nil
}

func newCalls(end func(), gone func() bool) *calls {
	return &calls{turn: make(chan struct{}, 1), dead: make(chan struct{}), end: end, gone: gone}
}

// kill ends the process once; a concurrent or later kill returns when the
// first has finished. It does not take the turn.
func (c *calls) kill() { c.endWith(c.end) }

// endWith ends the process once with end (kill's, or a graceful stop's).
func (c *calls) endWith(end func()) {
	c.once.Do(func() {
		close(c.dead)
		end()
	})
}

// exited reports whether the process was killed or ended by itself.
func (c *calls) exited() bool {
	select {
	case <-c.dead:
		return true
	default:
		return c.gone != nil && c.gone()
	}
}

// do runs fn, the call named name, once it is this call's turn. If ctx ends
// before fn returns, the process is killed (fn must then return: the
// process it waits for is gone) and the error wraps ErrHung and
// ErrPluginExited.
func (c *calls) do(ctx context.Context, name string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for the plugin's previous call: %w", name, ctx.Err())
	}
	defer func() { <-c.turn }()
	if c.exited() {
		return fmt.Errorf("%s: %w", name, ErrPluginExited)
	}
	stop := context.AfterFunc(ctx, c.kill)
	err := fn()
	// An answer that came before ctx ended stands; a failure with ctx
	// ended is taken as no answer (gRPC gives up on its own when ctx ends,
	// possibly before the kill above has started).
	if stop() && (err == nil || ctx.Err() == nil) {
		return err
	}
	c.kill()
	return fmt.Errorf("%s: %w (%v), so it was killed: %w", name, ErrHung, ctx.Err(), ErrPluginExited)
}
