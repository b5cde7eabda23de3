package config

import (
	"maps"
	"reflect"
	"slices"

	"github.com/edgeinfer/edgeinfer/internal/signing"
)

// Changes is what a reload would change: Diff's answer.
//
// Settings fall in three groups:
//   - restart-only (Restart): device, plugin_dir, log, models.repository,
//     models.confine, mqtt (but the embedded broker's users_file, acl_file
//     and allow_anonymous), limits and http. They are fixed for the life of the process (the
//     logger, the broker connection and its topics, where models and plugins
//     are found, what every sensor accepts, the metrics' address); a reload that changes any of
//     them is refused and the running config is kept.
//   - per part: sensors, pipelines and [serving.<model>] tables, listed by
//     name so that only the parts concerned are restarted.
//   - live (Other): stats_interval, commands.enabled, models.settle,
//     models.rescan, models.threads, models.trusted_keys (the path or the
//     keys in it), systemd.stuck_after, homeassistant and the embedded
//     broker's users_file, acl_file and allow_anonymous (one key,
//     "mqtt.embedded.access"; every reload reads those files again, as
//     Mosquitto does on SIGHUP, changed or not). models.threads is passed to plugin
//     processes as they start, so a change reaches a model's next process
//     (a new version, a restart), not the processes already running.
type Changes struct {
	// Restart lists the restart-only settings that differ, by dotted key:
	// "device", "plugin_dir", "log", "models.repository", "models.confine",
	// "mqtt", "limits", "http".
	Restart []string
	// Sensors are the sensors added, removed, or whose table differs in
	// any key.
	Sensors Delta
	// Pipelines are the pipelines added, removed, or whose own table
	// differs (sensor, model, queue, retries, timeout or options). A
	// pipeline whose sensor is in Sensors.Changed is not listed for that.
	Pipelines Delta
	// Serving lists the models whose effective serving settings
	// (Config.Serving) differ, a [serving.<model>] table added or removed
	// included; a table added with the defaults' values changes nothing.
	Serving []string
	// Other lists the live settings that differ, by dotted key.
	Other []string
}

// Delta is what changed in a set of named parts; each list is sorted.
type Delta struct {
	Added, Removed, Changed []string
}

// Empty reports whether nothing changed.
func (d Delta) Empty() bool {
	return len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Changed) == 0
}

// Empty reports whether the two configs behave the same.
func (c Changes) Empty() bool {
	return len(c.Restart) == 0 && c.Sensors.Empty() && c.Pipelines.Empty() && len(c.Serving) == 0 && len(c.Other) == 0
}

// Diff compares two checked configs (from Load or Parse), old the one
// running and new the one to reload. Values are compared after defaults, so
// writing a default out changes nothing.
func Diff(old, new *Config) Changes {
	var ch Changes
	for _, s := range []struct {
		key           string
		differs, live bool
	}{
		{"device", old.Device != new.Device, false},
		{"plugin_dir", old.PluginDir != new.PluginDir, false},
		{"log", !reflect.DeepEqual(old.Log, new.Log), false},
		{"models.repository", old.Models.Repository != new.Models.Repository, false},
		{"models.confine", old.Models.Confine != new.Models.Confine, false},
		{"mqtt", old.MQTT.withoutAccess() != new.MQTT.withoutAccess(), false},
		{"mqtt.embedded.access", old.MQTT.Embedded.access() != new.MQTT.Embedded.access(), true},
		{"limits", old.Limits != new.Limits, false},
		{"http", old.HTTP != new.HTTP, false},
		{"stats_interval", old.StatsInterval != new.StatsInterval, true},
		{"commands.enabled", old.Commands.Enabled != new.Commands.Enabled, true},
		{"models.threads", old.Models.Threads != new.Models.Threads, true},
		{"models.settle", old.Models.Settle != new.Models.Settle, true},
		{"models.rescan", old.Models.Rescan != new.Models.Rescan, true},
		{"models.trusted_keys", old.Models.TrustedKeys != new.Models.TrustedKeys || !maps.EqualFunc(old.trustedKeys, new.trustedKeys, func(a, b signing.PublicKey) bool { return a.Name == b.Name }), true},
		{"systemd.stuck_after", old.Systemd != new.Systemd, true},
		{"homeassistant", old.HomeAssistant != new.HomeAssistant, true},
	} {
		switch {
		case !s.differs:
		case s.live:
			ch.Other = append(ch.Other, s.key)
		default:
			ch.Restart = append(ch.Restart, s.key)
		}
	}
	ch.Sensors = delta(old.Sensors, new.Sensors, func(a, b Sensor) bool {
		return reflect.DeepEqual(a.table, b.table)
	})
	ch.Pipelines = delta(old.Pipelines, new.Pipelines, samePipeline)
	models := map[string]bool{}
	for m := range old.serving {
		models[m] = true
	}
	for m := range new.serving {
		models[m] = true
	}
	for _, m := range slices.Sorted(maps.Keys(models)) {
		if old.Serving(m) != new.Serving(m) || !slices.Equal(old.AllowOps(m), new.AllowOps(m)) {
			ch.Serving = append(ch.Serving, m)
		}
	}
	return ch
}

// samePipeline compares two pipelines' own tables; no options and an empty
// options table are the same.
func samePipeline(a, b Pipeline) bool {
	if len(a.Options) == 0 && len(b.Options) == 0 {
		a.Options, b.Options = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// delta lists the names only in new (added), only in old (removed), and in
// both but not the same.
func delta[T any](old, new map[string]T, same func(a, b T) bool) Delta {
	var d Delta
	for _, name := range slices.Sorted(maps.Keys(new)) {
		o, ok := old[name]
		switch {
		case !ok:
			d.Added = append(d.Added, name)
		case !same(o, new[name]):
			d.Changed = append(d.Changed, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old)) {
		if _, ok := new[name]; !ok {
			d.Removed = append(d.Removed, name)
		}
	}
	return d
}

// access is the embedded broker's access settings: a reload applies them
// (daemon/broker Broker.SetRules).
func (e Embedded) access() Embedded {
	return Embedded{UsersFile: e.UsersFile, ACLFile: e.ACLFile, AllowAnonymous: e.AllowAnonymous}
}

// withoutAccess is m without what a reload applies (Embedded.access).
func (m MQTT) withoutAccess() MQTT {
	m.Embedded.UsersFile, m.Embedded.ACLFile, m.Embedded.AllowAnonymous = "", "", false
	return m
}
