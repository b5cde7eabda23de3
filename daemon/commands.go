package daemon

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// subscribeCommands listens on <prefix>/cmd. Commands are refused unless
// [commands] enabled = true (checked per command, so a reload can turn
// them on or off); the broker's ACL decides who may publish there. They
// run one at a time, in order, on a goroutine of their own until ctx
// ends, so that a reload waiting for a frame does not hold up the MQTT
// client.
func (d *Daemon) subscribeCommands(ctx context.Context) error {
	type request struct {
		body []byte
		ack  func()
	}
	queue := make(chan request, 16)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case r := <-queue:
				d.tel.Reply(d.command(r.body))
				r.ack()
			}
		}
	}()
	_, err := d.bus.Subscribe(d.tel.Topic("cmd"), func(_ string, body []byte, ack func()) {
		select {
		case queue <- request{body, ack}:
		case <-ctx.Done():
		}
	})
	return err
}

// command runs one command and says how it went.
func (d *Daemon) command(body []byte) payload.Reply {
	var c payload.Command
	if err := json.Unmarshal(body, &c); err != nil {
		return payload.Reply{OK: false, Error: fmt.Sprintf("the command is not JSON: %v", err)}
	}
	r := payload.Reply{ID: c.ID, Command: c.Command}
	d.mu.Lock()
	enabled := d.cfg.Commands.Enabled
	d.mu.Unlock()
	msg, err := "", error(nil)
	switch {
	case !enabled:
		err = fmt.Errorf("commands are disabled ([commands] enabled = false in %s)", d.cfg.File())
	case c.Pipeline != "":
		msg, err = d.pipelineCommand(c.Pipeline, body)
	case c.Command == payload.CommandReload:
		if err = d.reloadConfig("command"); err == nil {
			msg = "config reloaded"
		}
	case c.Command == payload.CommandPin, c.Command == payload.CommandUnpin, c.Command == payload.CommandRollback:
		msg, err = d.versionCommand(c)
	default:
		err = fmt.Errorf("unknown command %q: one of reload, pin, unpin, rollback, or a task's command with a pipeline", c.Command)
	}
	if err != nil {
		d.log.Warn("command refused", "id", c.ID, "command", c.Command, "err", err)
		r.Error = err.Error()
		return r
	}
	d.log.Info("command", "id", c.ID, "command", c.Command, "result", msg)
	r.OK, r.Message = true, msg
	return r
}

// pipelineCommand hands a command naming a pipeline to the task serving it.
func (d *Daemon) pipelineCommand(name string, body []byte) (string, error) {
	d.mu.Lock()
	run, ok := d.pipelines[name]
	d.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("no pipeline %q in %s", name, d.cfg.File())
	}
	return run.p.Command(context.Background(), body)
}

func (d *Daemon) versionCommand(c payload.Command) (string, error) {
	if c.Model == "" {
		return "", fmt.Errorf("%s: model is required", c.Command)
	}
	md, ok := d.mgr.Lookup(c.Model)
	if !ok {
		return "", fmt.Errorf("%s: no pipeline uses model %q", c.Command, c.Model)
	}
	switch c.Command {
	case payload.CommandPin:
		if c.Version == "" {
			return "", fmt.Errorf("pin: version is required")
		}
		if err := md.Pin(c.Version); err != nil {
			return "", err
		}
		return fmt.Sprintf("model %s pinned to version %s", c.Model, c.Version), nil
	case payload.CommandUnpin:
		md.Pin("")
		return fmt.Sprintf("model %s follows its config again", c.Model), nil
	default:
		v, err := md.Rollback()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("model %s rolled back to version %s (held there until unpin)", c.Model, v), nil
	}
}
