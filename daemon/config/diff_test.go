package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDiffNamesWhatAReloadChanges(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	repo2 := filepath.Join(t.TempDir(), "models")
	if err := os.MkdirAll(filepath.Join(repo2, "lenet5", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Two pipelines on one sensor, and a serving table.
	base := valid(repo, plugins, inbox) + `
[pipelines.digits2]
sensor = "inbox"
model = "lenet5"

[serving.lenet5]
version = "1"
`
	diffs(t, base, []reload{
		{"identical configs: nothing", func(s string) string { return s }, Changes{}},
		{"a default written out: nothing", after(`model = "lenet5"`, "queue = 8\ntimeout = \"30s\""), Changes{}},
		{"comments: nothing", func(s string) string {
			return "# a comment\n" + strings.Replace(s, "qos = 1", "qos = 1 # at least once", 1)
		}, Changes{}},
		{"an empty options table is no options: nothing", func(s string) string {
			return strings.Replace(s, "model = \"lenet5\"\n\n[serving", "model = \"lenet5\"\n[pipelines.digits2.options]\n\n[serving", 1)
		}, Changes{}},
		{"one pipeline's option: only that pipeline", func(s string) string { return strings.Replace(s, "top_k = 3", "top_k = 5", 1) },
			Changes{Pipelines: Delta{Changed: []string{"digits"}}}},
		{"a pipeline's timeout: that pipeline", after("[pipelines.digits2]", `timeout = "5s"`), Changes{Pipelines: Delta{Changed: []string{"digits2"}}}},
		{"a sensor's table: the sensor, not its pipelines", after(`kind = "dir"`, `settle = "1s"`), Changes{Sensors: Delta{Changed: []string{"inbox"}}}},
		{"a sensor added", appended("\n[sensors.spare]\nkind = \"synthetic\"\n"), Changes{Sensors: Delta{Added: []string{"spare"}}}},
		{"a pipeline added", appended("\n[pipelines.digits3]\nsensor = \"inbox\"\nmodel = \"lenet5\"\n"), Changes{Pipelines: Delta{Added: []string{"digits3"}}}},
		{"a pipeline removed", func(s string) string {
			return strings.Replace(s, "[pipelines.digits2]\nsensor = \"inbox\"\nmodel = \"lenet5\"\n", "", 1)
		}, Changes{Pipelines: Delta{Removed: []string{"digits2"}}}},
		{"serving.version: the model's serving", func(s string) string { return strings.Replace(s, `version = "1"`, `version = "latest"`, 1) },
			Changes{Serving: []string{"lenet5"}}},
		{"a serving table removed: the model's serving", func(s string) string { return s[:strings.Index(s, "[serving.lenet5]")] },
			Changes{Serving: []string{"lenet5"}}},
		{"a serving table added with the defaults: nothing", appended("[serving.other]\npolicy = \"availability\"\n"), Changes{}},
		{"mqtt.broker: a restart for mqtt", func(s string) string { return strings.Replace(s, "127.0.0.1:1883", "127.0.0.1:1884", 1) },
			Changes{Restart: []string{"mqtt"}}},
		{"models.repository: a restart", func(s string) string { return strings.Replace(s, repo, repo2, 1) },
			Changes{Restart: []string{"models.repository"}}},
		{"limits: a restart", appended("[limits]\nmin_side = 16\n"), Changes{Restart: []string{"limits"}}},
		{"log level: a restart", appended("[log]\nlevel = \"debug\"\n"), Changes{Restart: []string{"log"}}},
		{"device: a restart, and of mqtt, whose prefix and client id follow it", func(s string) string {
			return strings.Replace(s, `device = "cam-1"`, `device = "cam-2"`, 1)
		}, Changes{Restart: []string{"device", "mqtt"}}},
		{"stats_interval: live", func(s string) string { return "stats_interval = \"1m\"\n" + s },
			Changes{Other: []string{"stats_interval"}}},
		{"models.threads, settle and rescan: live", after("[models]", "threads = 2\nsettle = \"5s\"\nrescan = \"1m\""), Changes{Other: []string{"models.threads", "models.settle", "models.rescan"}}},
		{"commands.enabled: live", appended("[commands]\nenabled = true\n"), Changes{Other: []string{"commands.enabled"}}},
		{"systemd.stuck_after: live", appended("[systemd]\nstuck_after = \"5m\"\n"), Changes{Other: []string{"systemd.stuck_after"}}},
	})
}

// reload is an edit of a valid config and what Diff says it changes.
type reload struct {
	name string
	edit func(string) string
	want Changes
}

// diffs checks what Diff says of each edit of base.
func diffs(t *testing.T, base string, cases []reload) {
	t.Helper()
	old, err := Parse("config.toml", base)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			new, err := Parse("config.toml", tc.edit(base))
			if err != nil {
				t.Fatal(err)
			}
			got := Diff(old, new)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Diff = %+v\nwant   %+v", got, tc.want)
			}
			if got.Empty() != reflect.DeepEqual(tc.want, Changes{}) {
				t.Fatalf("Empty() = %v for %+v", got.Empty(), got)
			}
		})
	}
}

func TestTheEmbeddedBrokersAccessFilesAreLiveAndItsListenersAreNot(t *testing.T) {
	dir := t.TempDir()
	users, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	os.WriteFile(users, []byte("admin:$7$101$ErciNP0mXYTfZSQ+$a41bY1WJX49e949YVaDY5lUTvLB6BbZ5TyVGN/KN3d8CAWcNUBtdODL7Qyum8qJDqK/eWLedTooX/sV9Nv/ooQ==\n"), 0o600)
	os.WriteFile(acl, []byte("user admin\ntopic readwrite #\n"), 0o600)
	base := embeddedConfig(t, "broker = \"embedded\"\n[mqtt.embedded]\nusers_file = \""+users+"\"\n")
	diffs(t, base, []reload{
		{"an ACL added: live", after("[mqtt.embedded]", "acl_file = \""+acl+"\""), Changes{Other: []string{"mqtt.embedded.access"}}},
		{"anonymous clients let in: live", after("[mqtt.embedded]", "allow_anonymous = true"), Changes{Other: []string{"mqtt.embedded.access"}}},
		{"no users file, on loopback: live", func(s string) string { return strings.Replace(s, "users_file = \""+users+"\"\n", "", 1) },
			Changes{Other: []string{"mqtt.embedded.access"}}},
		{"the listener: a restart", after("[mqtt.embedded]", "tls_listen = \"127.0.0.1:8883\"\ncert_file = \""+users+"\"\nkey_file = \""+users+"\""),
			Changes{Restart: []string{"mqtt"}}},
	})
}
