package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/edgeinfer/edgeinfer/sensors/all"
)

// fixture is a model repository with one model and a plugin dir, so that
// only the config under test can be wrong.
func fixture(t *testing.T) (repo, plugins, inbox string) {
	t.Helper()
	root := t.TempDir()
	repo, plugins, inbox = filepath.Join(root, "models"), filepath.Join(root, "bin"), filepath.Join(root, "inbox")
	for _, d := range []string{filepath.Join(repo, "lenet5", "1"), plugins, inbox} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return repo, plugins, inbox
}

func valid(repo, plugins, inbox string) string {
	return `device = "cam-1"
plugin_dir = "` + plugins + `"

[models]
repository = "` + repo + `"

[mqtt]
broker = "tcp://127.0.0.1:1883"
qos = 1

[sensors.inbox]
kind = "dir"
path = "` + inbox + `"

[pipelines.digits]
sensor = "inbox"
model = "lenet5"
[pipelines.digits.options]
top_k = 3
`
}

func TestAValidConfigLoadsWithItsDefaults(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	c, err := Parse("config.toml", valid(repo, plugins, inbox))
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.Prefix != "edgeinfer/cam-1" || c.MQTT.ClientID != "edgeinferd-cam-1" || c.MQTT.QoS != 1 ||
		c.MQTT.Keepalive.Seconds() != 30 || c.Pipelines["digits"].Queue != 8 || c.Pipelines["digits"].Retries != 3 ||
		c.Limits.MinSide != 8 || c.Log.Level != "info" {
		t.Fatalf("defaults: %+v", c)
	}
	if c.Pipelines["digits"].Options["top_k"] != int64(3) {
		t.Fatalf("options: %+v", c.Pipelines["digits"].Options)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("warnings: %v", c.Warnings)
	}
}

func TestEachKindOfInvalidConfigHasItsOwnMessage(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	base := valid(repo, plugins, inbox)
	cases := []struct {
		name string
		edit func(string) string
		want string // the whole message after "config.toml:"
	}{
		{"syntax error", func(s string) string { return s + "[pipelines\n" },
			"21: expected '.' or ']' to end table name, but got '\\n' instead"},
		{"unknown top-level key", func(s string) string { return "colour = \"blue\"\n" + s },
			"1: colour: unknown key"},
		{"unknown key in a table", func(s string) string {
			return strings.Replace(s, "qos = 1", "qos = 1\nretian = true", 1)
		}, "10: mqtt.retian: unknown key"},
		{"unknown sensor option", func(s string) string {
			return strings.Replace(s, `kind = "dir"`, "kind = \"dir\"\nfsp = 5", 1)
		}, "13: sensors.inbox.fsp: unknown key"},
		{"wrong type", func(s string) string { return strings.Replace(s, "qos = 1", `qos = "high"`, 1) },
			"9: mqtt.qos: incompatible types: TOML value has type string; destination has type integer"},
		{"missing device", func(s string) string { return strings.Replace(s, `device = "cam-1"`, "", 1) },
			" device: required (a name for this device, used in topics)"},
		{"device with a slash", func(s string) string { return strings.Replace(s, `"cam-1"`, `"cam/1"`, 1) },
			`1: device: "cam/1" may only hold letters, digits, '-' and '_'`},
		{"qos out of range", func(s string) string { return strings.Replace(s, "qos = 1", "qos = 3", 1) },
			"9: mqtt.qos: must be 0, 1 or 2, got 3"},
		{"bad broker URL", func(s string) string { return strings.Replace(s, "tcp://127.0.0.1:1883", "localhost", 1) },
			`8: mqtt.broker: "localhost" is neither "embedded" nor a broker URL such as tcp://host:1883`},
		{"bad broker scheme", func(s string) string { return strings.Replace(s, "tcp://", "http://", 1) },
			`8: mqtt.broker: scheme "http" is not one of tcp, mqtt, ssl, tls, mqtts, ws, wss`},
		{"bad duration", func(s string) string { return strings.Replace(s, "qos = 1", `keepalive = "30"`, 1) },
			`9: mqtt.keepalive: invalid duration "30" (use e.g. "500ms", "30s")`},
		{"missing TLS file", func(s string) string { return strings.Replace(s, "qos = 1", `ca_file = "/nonexistent/ca.pem"`, 1) },
			"9: mqtt.ca_file: stat /nonexistent/ca.pem: no such file or directory"},
		{"cert without key", func(s string) string { return strings.Replace(s, "qos = 1", `cert_file = "`+repo+`"`, 1) },
			"9: mqtt.cert_file: cert_file and key_file go together"},
		{"missing repository", func(s string) string { return strings.Replace(s, repo, "/nonexistent/models", 1) },
			`5: models.repository: "/nonexistent/models" is not a directory`},
		{"sensor without kind", func(s string) string { return strings.Replace(s, `kind = "dir"`, "", 1) },
			"11: sensors.inbox: kind is required; one of dir, ffmpeg, file, mqtt, synthetic"},
		{"unknown sensor kind", func(s string) string { return strings.Replace(s, `kind = "dir"`, `kind = "webcam"`, 1) },
			`12: sensors.inbox.kind: unknown sensor kind "webcam"; one of dir, ffmpeg, file, mqtt, synthetic`},
		{"sensor option rejected by its kind", func(s string) string { return strings.Replace(s, inbox, "/nonexistent/inbox", 1) },
			"13: sensors.inbox: path"},
		{"pipeline naming a missing sensor", func(s string) string { return strings.Replace(s, `sensor = "inbox"`, `sensor = "cam"`, 1) },
			`16: pipelines.digits.sensor: sensor "cam" is not defined; defined: inbox`},
		{"pipeline naming a missing model", func(s string) string { return strings.Replace(s, `model = "lenet5"`, `model = "yolo"`, 1) },
			`17: pipelines.digits.model: model "yolo" is not in the repository ` + repo},
		{"pipeline without model", func(s string) string { return strings.Replace(s, `model = "lenet5"`, "", 1) },
			"15: pipelines.digits.model: required"},
		{"bad queue", func(s string) string {
			return strings.Replace(s, `model = "lenet5"`, "model = \"lenet5\"\nqueue = -1", 1)
		},
			"18: pipelines.digits.queue: must be >= 1, got -1"},
		{"no pipelines", func(s string) string { return s[:strings.Index(s, "[pipelines.digits]")] },
			" no [pipelines.<name>] table: nothing would run"},
		{"bad log level", func(s string) string { return s + "[log]\nlevel = \"loud\"\n" },
			`21: log.level: "loud" is not one of debug, info, warn, error`},
	}
	seen := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("config.toml", tc.edit(base))
			if err == nil {
				t.Fatal("accepted")
			}
			msg := strings.TrimPrefix(err.Error(), "config.toml:")
			if !strings.HasPrefix(msg, tc.want) {
				t.Fatalf("got  %q\nwant %q", msg, tc.want)
			}
			if other, dup := seen[err.Error()]; dup {
				t.Fatalf("same message as %q", other)
			}
			seen[err.Error()] = tc.name
		})
	}
}

func TestASensorFeedingNoPipelineIsAWarning(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	src := valid(repo, plugins, inbox) + "\n[sensors.spare]\nkind = \"synthetic\"\n"
	c, err := Parse("config.toml", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "config.toml:21: sensors.spare feeds no pipeline") {
		t.Fatalf("warnings: %v", c.Warnings)
	}
}

func TestTheShippedConfigIsValid(t *testing.T) {
	// config.toml at the top of the repository is make run's demo; it names
	// paths relative to the repository.
	wd, _ := os.Getwd()
	root := filepath.Join(wd, "..", "..")
	t.Chdir(root)
	for _, d := range []string{"models", "bin", "run/inbox"} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("%s: %v (make test exports the models and builds bin/ first)", d, err)
		}
	}
	if _, err := Load("config.toml"); err != nil {
		t.Fatal(err)
	}
}
