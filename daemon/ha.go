package daemon

import (
	"maps"
	"slices"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/homeassistant"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/daemon/snapshot"
)

// Version is edgeinferd's version, the sw_version Home Assistant shows.
var Version = "dev"

// announce publishes Home Assistant discovery for cfg when [homeassistant]
// discovery is on, and removes what an earlier config announced that cfg
// no longer has (a pipeline, or discovery altogether). Called with d.mu
// held, after every apply.
func (d *Daemon) announce(cfg *config.Config) {
	h := cfg.HomeAssistant
	ha := d.ha.Load()
	if ha != nil && (!h.Discovery || d.haCfg != h) {
		ha.Announce(nil)
		d.ha.Store(nil)
		ha = nil
	}
	if !h.Discovery {
		return
	}
	if ha == nil {
		ha = homeassistant.New(homeassistant.Options{Discovery: h.Prefix, Device: cfg.Device, Version: Version, Topic: d.tel.Topic}, d.bus)
		d.ha.Store(ha)
		d.haCfg = h
		go func() { // not under d.mu: it waits for the broker
			if _, err := d.bus.Subscribe(ha.StatusTopic(), d.homeAssistantStatus); err != nil {
				d.log.Warn("cannot subscribe to Home Assistant's status", "topic", ha.StatusTopic(), "err", err)
			}
		}()
	}
	var ps []homeassistant.Pipeline
	for _, name := range slices.Sorted(maps.Keys(cfg.Pipelines)) {
		pc := cfg.Pipelines[name]
		task := ""
		if v, err := repo.Servable(cfg.Models.Repository, pc.Model); err == nil {
			task = v.Manifest.Task
		}
		ps = append(ps, homeassistant.Pipeline{Name: name, Task: task, Present: pc.HomeAssistant.Present, Snapshot: pc.Snapshot != nil})
	}
	ha.Announce(ps)
}

// homeAssistantStatus hands Home Assistant's birth message to the
// announcer, which publishes everything again.
func (d *Daemon) homeAssistantStatus(_ string, body []byte, ack func()) {
	defer ack()
	if ha := d.ha.Load(); ha != nil {
		ha.HomeAssistantStatus(body)
	}
}

// haResult keeps the pipeline's Home Assistant state up to date.
func (d *Daemon) haResult(r payload.Result) {
	ha := d.ha.Load()
	if ha == nil {
		return
	}
	if err := ha.Result(r.Pipeline, r.Task, r.Output); err != nil {
		d.log.Warn("no Home Assistant state for a result", "pipeline", r.Pipeline, "err", err)
	}
}

// snapshots makes the snapshot taker of the pipeline called name from its
// [snapshot] table; nil without one.
func (d *Daemon) snapshots(name string, pc config.Pipeline) *snapshot.Snapshots {
	sc := pc.Snapshot
	if sc == nil {
		return nil
	}
	topic := d.tel.Topic(name, "snapshot")
	return &snapshot.Snapshots{Interval: sc.Interval.Duration, Quality: sc.Quality,
		Publish: func(b []byte) { d.bus.Publish(topic, true, b) },
		Failed: func(err error) {
			d.log.Warn("snapshot not drawn", "pipeline", name, "err", err)
		},
	}
}
