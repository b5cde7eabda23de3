package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"testing"
)

// (The behaviour a Fake shares with a real plugin is tested on both by
// eachProcess in sdk_test.go; these are the Fake's own.)

// keeper keeps the pixels and options it was given, and fails Load with an
// error wrapping fs.ErrNotExist.
type keeper struct {
	echoTask
	rgb  []byte
	opts map[string]json.RawMessage
}

func (k *keeper) Load(context.Context, LoadRequest) (ModelInfo, error) {
	return ModelInfo{}, &fs.PathError{Op: "open", Path: "/models/x/1/saved_model.pb", Err: fs.ErrNotExist}
}

func (k *keeper) Configure(_ context.Context, p map[string]json.RawMessage) error {
	k.opts = p
	return nil
}

func (k *keeper) Infer(_ context.Context, f Frame) (Result, error) {
	k.rgb = f.RGB
	return Result{}, nil
}

// The task gets its own copies of what the real one would read from shared
// memory or a message, so a caller reusing its buffers cannot change them.
func TestFakeHandsTheTaskCopies(t *testing.T) {
	k := &keeper{}
	f := NewFake(k)
	defer f.Kill()
	rgb := []byte{1, 2, 3}
	opts := json.RawMessage(`{"k":1}`)
	if _, err := f.Infer(context.Background(), Frame{Width: 1, Height: 1, RGB: rgb}); err != nil {
		t.Fatal(err)
	}
	if err := f.Configure(context.Background(), map[string]json.RawMessage{"cam": opts}); err != nil {
		t.Fatal(err)
	}
	rgb[0], opts[1] = 9, 'x'
	if k.rgb[0] != 1 || string(k.opts["cam"]) != `{"k":1}` {
		t.Errorf("the task saw the caller's later writes: %v, %s", k.rgb, k.opts["cam"])
	}
}

// Across a process boundary an error is its message: only ErrBadFrame
// (from Infer) keeps its kind, so the Fake drops the others too.
func TestFakeErrorsCrossAsTheirMessage(t *testing.T) {
	f := NewFake(&keeper{})
	defer f.Kill()
	_, err := f.Load(context.Background(), LoadRequest{})
	if err == nil || err.Error() != "open /models/x/1/saved_model.pb: file does not exist" || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v (wraps fs.ErrNotExist: %v)", err, errors.Is(err, fs.ErrNotExist))
	}
}

// Crash (the process died by itself) releases a call blocked in the task at
// once, and cancels the task's context so the task itself returns.
func TestFakeCrashReleasesABlockedCall(t *testing.T) {
	f, task := startFake(t)
	blocked := blockedInfer(f)
	f.Crash()
	exitedSoon(t, blocked, "Crash")
	// Its context cancelled, the task's call returns too.
	waitFor(t, "out of the task", func() bool { return task.inflight.Load() == 0 })
	if !f.Exited() {
		t.Error("Exited() is false after Crash")
	}
}

// Each Fake has its own pid, above any pid the kernel hands out, so a
// daemon that signals it by mistake reaches no real process.
func TestFakePidsAreUniqueAndNoRealProcesses(t *testing.T) {
	a, b := NewFake(&keeper{}), NewFake(&keeper{})
	if a.Pid() == b.Pid() || a.Pid() <= 1<<22 || b.Pid() <= 1<<22 {
		t.Errorf("pids %d and %d", a.Pid(), b.Pid())
	}
}

// SetNice is recorded for the test to read; a dead Fake refuses it.
func TestFakeRecordsNice(t *testing.T) {
	f := NewFake(&keeper{})
	if f.Nice() != 0 {
		t.Errorf("initial nice %d", f.Nice())
	}
	if err := f.SetNice(10); err != nil || f.Nice() != 10 {
		t.Errorf("SetNice(10): %v, Nice() %d", err, f.Nice())
	}
	f.Kill()
	if err := f.SetNice(0); !errors.Is(err, ErrPluginExited) || f.Nice() != 10 {
		t.Errorf("after Kill: %v, Nice() %d", err, f.Nice())
	}
}
