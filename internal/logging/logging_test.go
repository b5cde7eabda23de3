package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestEachComponentLogsAtItsOwnLevel(t *testing.T) {
	var b bytes.Buffer
	log := New(&b, "json", slog.LevelInfo, map[string]slog.Level{"serving": slog.LevelDebug, "mqtt": slog.LevelWarn, "sensor": slog.LevelError})
	log.Debug("daemon debug")                                        // dropped: the daemon is at info
	log.Info("daemon info")                                          // kept
	log.With("component", "serving").Debug("serving debug")          // kept: serving is at debug
	log.With("component", "mqtt").Info("mqtt info")                  // dropped: mqtt is at warn
	log.With("component", "mqtt").Warn("mqtt warn")                  // kept
	log.With("sensor", "inbox").Warn("sensor warn")                  // dropped: sensors are at error
	log.With("sensor", "inbox").Error("sensor error")                // kept
	log.With("pipeline", "digits").Info("pipeline info")             // kept: pipelines have the daemon's level
	log.With("component", "repo").WithGroup("g").Debug("repo debug") // dropped
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		got = append(got, m["msg"].(string))
	}
	want := []string{"daemon info", "serving debug", "mqtt warn", "sensor error", "pipeline info"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("logged %q, want %q", got, want)
	}
}

func TestWithoutComponentLevelsItIsAPlainHandler(t *testing.T) {
	var b bytes.Buffer
	log := New(&b, "text", slog.LevelWarn, nil)
	log.With("component", "serving").Info("no")
	log.Warn("yes")
	if s := b.String(); strings.Contains(s, "msg=no") || !strings.Contains(s, "msg=yes") {
		t.Fatalf("logged %q", s)
	}
	if _, ok := log.Handler().(*slog.TextHandler); !ok {
		t.Fatalf("handler %T", log.Handler())
	}
}
