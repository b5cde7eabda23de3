package sdk

import "errors"

// ErrBadFrame is wrapped by a Task's error when the frame itself is unusable
// (the daemon publishes a bad_input event and moves on); any other error from
// Infer is a model failure.
var ErrBadFrame = errors.New("bad frame")

// ErrNoCommands is returned by Process.Command when the task takes no
// commands (it does not implement Commander).
var ErrNoCommands = errors.New("the task takes no commands")

// ErrPluginExited is wrapped by the client's errors when the plugin process
// is gone (crashed, killed); the daemon restarts it and retries the frame.
var ErrPluginExited = errors.New("plugin process exited")

// ErrHung is wrapped, together with ErrPluginExited, by the error of a call
// whose ctx ended before the plugin answered: the process was killed (it
// may be stuck in the model, or stopped), so errors.Is finds both.
var ErrHung = errors.New("plugin did not answer in time")

// ErrCannotConfine is wrapped by Start's error when Options.Confine asks
// for a confinement this kernel cannot give (the reason follows it): the
// model version, not the plugin binary, cannot run as required.
var ErrCannotConfine = errors.New("the plugin process cannot be confined")
