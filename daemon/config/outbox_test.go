package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTheOutboxIsInSystemdsStateDirectoryByDefaultAndNowhereWithoutOne(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	t.Setenv("STATE_DIRECTORY", "")
	c, err := Parse("config.toml", valid(repo, plugins, inbox))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.OutboxDir != "" || c.MQTT.OutboxMaxBytes != 64<<20 || c.MQTT.Outbox() {
		t.Fatalf("without a state directory: %q, %d bytes, outbox %v", c.MQTT.OutboxDir, c.MQTT.OutboxMaxBytes, c.MQTT.Outbox())
	}
	t.Setenv("STATE_DIRECTORY", "/var/lib/edgeinfer:/var/lib/other")
	if c, err = Parse("config.toml", valid(repo, plugins, inbox)); err != nil {
		t.Fatal(err)
	}
	if c.MQTT.OutboxDir != "/var/lib/edgeinfer/outbox" || !c.MQTT.Outbox() {
		t.Fatalf("under systemd's StateDirectory=: %q", c.MQTT.OutboxDir)
	}
	dir := filepath.Join(t.TempDir(), "box")
	c, err = Parse("config.toml", strings.Replace(valid(repo, plugins, inbox), "qos = 1", "qos = 1\noutbox_dir = \""+dir+"\"\noutbox_max_bytes = 0", 1))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.OutboxDir != dir || c.MQTT.Outbox() {
		t.Fatalf("outbox_max_bytes = 0: %q, outbox %v", c.MQTT.OutboxDir, c.MQTT.Outbox())
	}
}

func TestEachKindOfInvalidOutboxSettingHasItsOwnMessage(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	refuses(t, valid(repo, plugins, inbox), []invalid{
		{"outbox_max_bytes under 64 KiB", after("qos = 1", "outbox_max_bytes = 1000"),
			"10: mqtt.outbox_max_bytes: must be 0 (no outbox) or at least 65536 (64 KiB), got 1000"},
		{"outbox_max_bytes negative", after("qos = 1", "outbox_max_bytes = -1"),
			"10: mqtt.outbox_max_bytes: must be 0 (no outbox) or at least 65536 (64 KiB), got -1"},
		{"outbox_max_bytes a string", after("qos = 1", `outbox_max_bytes = "64MiB"`),
			"10: mqtt.outbox_max_bytes: incompatible types: TOML value has type string; destination has type integer"},
		{"outbox_dir a file", after("qos = 1", `outbox_dir = "`+file+`"`),
			`10: mqtt.outbox_dir: "` + file + `" is not a directory`},
	})
}

func TestAnOutboxErrorFoundAtStartNamesItsLine(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	c, err := Parse("config.toml", strings.Replace(valid(repo, plugins, inbox), "qos = 1", "qos = 1\noutbox_dir = \"/proc/box\"", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.KeyError("mqtt.outbox_dir", os.ErrPermission); err.Error() != "config.toml:10: mqtt.outbox_dir: permission denied" {
		t.Fatalf("got %q", err)
	}
}
