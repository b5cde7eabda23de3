package config

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
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

// after returns an edit of a config that adds lines after the line anchor.
func after(anchor, lines string) func(string) string {
	return func(s string) string { return strings.Replace(s, anchor+"\n", anchor+"\n"+lines+"\n", 1) }
}

// appended returns an edit of a config that adds text at its end.
func appended(text string) func(string) string {
	return func(s string) string { return s + text }
}

// invalid is an edit of a valid config and the message it is refused
// with: the start of the message after "config.toml:".
type invalid struct {
	name string
	edit func(string) string
	want string
}

// refuses checks that each edit of base is refused with its own message.
func refuses(t *testing.T, base string, cases []invalid) {
	t.Helper()
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

func TestEachKindOfInvalidConfigHasItsOwnMessage(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	refuses(t, valid(repo, plugins, inbox), []invalid{
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
		{"settle not positive", after("[models]", `settle = "0s"`), "5: models.settle: must be > 0, got 0s"},
		{"rescan not positive", after("[models]", `rescan = "-1s"`), "5: models.rescan: must be > 0, got -1s"},
		{"pipeline timeout not positive", after(`model = "lenet5"`, `timeout = "0s"`), "18: pipelines.digits.timeout: must be > 0, got 0s"},
		{"pipeline timeout not a duration", after(`model = "lenet5"`, `timeout = "30"`), `18: pipelines.digits.timeout: invalid duration "30" (use e.g. "500ms", "30s")`},
		{"commands.enabled not a bool", appended("[commands]\nenabled = \"yes\"\n"), "21: commands.enabled: incompatible types: TOML value has type string; destination has type boolean"},
		{"unknown key in commands", appended("[commands]\nenable = true\n"), "21: commands.enable: unknown key"},
		{"serving version neither latest nor a number", appended("[serving.lenet5]\nversion = \"v2\"\n"), `21: serving.lenet5.version: "v2" is neither "latest" nor a version number such as "2"`},
		{"serving version not in its plain form", appended("[serving.lenet5]\nversion = \"02\"\n"), `21: serving.lenet5.version: "02" is neither "latest" nor a version number such as "2"`},
		{"serving version negative", appended("[serving.lenet5]\nversion = \"-1\"\n"), `21: serving.lenet5.version: "-1" is neither "latest" nor a version number such as "2"`},
		{"serving version an integer", appended("[serving.lenet5]\nversion = 2\n"), `21: serving.lenet5.version: must be a string, "latest" or a version number such as "2", got 2`},
		{"serving policy unknown", appended("[serving.lenet5]\npolicy = \"fast\"\n"), `21: serving.lenet5.policy: "fast" is not one of availability, resource`},
		{"serving policy empty", appended("[serving.lenet5]\npolicy = \"\"\n"), `21: serving.lenet5.policy: "" is not one of availability, resource`},
		{"serving load_timeout not positive", appended("[serving.lenet5]\nload_timeout = \"0s\"\n"), "21: serving.lenet5.load_timeout: must be > 0, got 0s"},
		{"serving tolerance not positive", appended("[serving.lenet5]\ntolerance = 0.0\n"), "21: serving.lenet5.tolerance: must be > 0 and finite, got 0"},
		{"serving tolerance infinite", appended("[serving.lenet5]\ntolerance = inf\n"), "21: serving.lenet5.tolerance: must be > 0 and finite, got +Inf"},
		{"unknown key in serving", appended("[serving.lenet5]\nretries = 2\n"), "21: serving.lenet5.retries: unknown key"},
		{"systemd.stuck_after not positive", appended("[systemd]\nstuck_after = \"0s\"\n"), "21: systemd.stuck_after: must be > 0, got 0s"},
		{"systemd.stuck_after not a duration", appended("[systemd]\nstuck_after = 60\n"), `21: systemd.stuck_after: invalid duration "60" (use e.g. "500ms", "30s")`},
		{"unknown key in systemd", appended("[systemd]\nwatchdog = \"1m\"\n"), "21: systemd.watchdog: unknown key"},
		{"log level of an unknown component", appended("[log.levels]\nplugins = \"debug\"\n"), `21: log.levels.plugins: "plugins" is not a component; one of broker, daemon, http, mqtt, pipeline, repo, sensor, serving`},
		{"log level of a component not a level", appended("[log.levels]\nmqtt = \"loud\"\n"), `21: log.levels.mqtt: "loud" is not one of debug, info, warn, error`},
		{"homeassistant.prefix with a wildcard", appended("[homeassistant]\nprefix = \"ha/#\"\n"), `21: homeassistant.prefix: "ha/#" must be a topic without wildcards or leading/trailing '/'`},
		{"snapshot quality out of range", appended("[pipelines.digits.snapshot]\nquality = 101\n"), "21: pipelines.digits.snapshot.quality: must be 1..100, got 101"},
		{"snapshot interval not positive", appended("[pipelines.digits.snapshot]\ninterval = \"0s\"\n"), "21: pipelines.digits.snapshot.interval: must be > 0, got 0s"},
		{"unknown key in snapshot", appended("[pipelines.digits.snapshot]\nfps = 1\n"), "21: pipelines.digits.snapshot.fps: unknown key"},
		{"an empty present label", appended("[pipelines.digits.homeassistant]\npresent = [\"person\", \"\"]\n"), "21: pipelines.digits.homeassistant.present: holds an empty label"},
	})
}

func TestWhatNoPipelineUsesIsAWarning(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	cases := []struct {
		name, extra, want string
	}{
		{"a sensor feeding no pipeline", "\n[sensors.spare]\nkind = \"synthetic\"\n",
			"config.toml:21: sensors.spare feeds no pipeline"},
		{"a serving table for a model no pipeline uses", "\n[serving.yolo]\npolicy = \"resource\"\n",
			`config.toml:21: serving.yolo: no pipeline uses model "yolo"`},
		{"a stuck_after the pipeline's timeout reaches", "\n[systemd]\nstuck_after = \"30s\"\n",
			"config.toml:22: systemd.stuck_after (30s) is not longer than pipelines.digits.timeout (30s): a slow frame gets edgeinferd " +
				"restarted by systemd's watchdog before edgeinferd gives up on the frame and restarts its plugin itself"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("config.toml", valid(repo, plugins, inbox)+tc.extra)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Warnings) != 1 || c.Warnings[0] != tc.want {
				t.Fatalf("warnings: %q, want [%q]", c.Warnings, tc.want)
			}
		})
	}
}

func TestNewKeysHaveTheirDefaults(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	c, err := Parse("config.toml", valid(repo, plugins, inbox))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		key       string
		got, want any
	}{
		{"models.settle", c.Models.Settle.Duration, 2 * time.Second},
		{"models.rescan", c.Models.Rescan.Duration, 10 * time.Second},
		{"pipelines.digits.timeout", c.Pipelines["digits"].Timeout.Duration, 30 * time.Second},
		{"commands.enabled", c.Commands.Enabled, false},
		{"systemd.stuck_after", c.Systemd.StuckAfter.Duration, time.Duration(0)},
		{"homeassistant", c.HomeAssistant, HomeAssistant{Discovery: false, Prefix: "homeassistant"}},
		{"pipelines.digits.snapshot (no table: none)", c.Pipelines["digits"].Snapshot == nil, true},
		{"StuckAfter(digits): twice its timeout", c.StuckAfter("digits"), time.Minute},
		{"serving.lenet5", c.Serving("lenet5"), Serving{Version: "latest", Policy: "availability", LoadTimeout: Duration{120 * time.Second}, Tolerance: 1e-4}},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.key, tc.got, tc.want)
		}
	}
}

func TestNewKeysAreReadAsWritten(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	src := strings.Replace(valid(repo, plugins, inbox), "[models]\n", "[models]\nsettle = \"500ms\"\nrescan = \"1m\"\n", 1)
	src = strings.Replace(src, `model = "lenet5"`, "model = \"lenet5\"\ntimeout = \"5s\"", 1)
	c, err := Parse("config.toml", src+"[commands]\nenabled = true\n[systemd]\nstuck_after = \"90s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Models.Settle.Duration != 500*time.Millisecond || c.Models.Rescan.Duration != time.Minute ||
		c.Pipelines["digits"].Timeout.Duration != 5*time.Second || !c.Commands.Enabled ||
		c.StuckAfter("digits") != 90*time.Second || len(c.Warnings) != 0 {
		t.Fatalf("models %+v, timeout %s, commands %+v, stuck after %s, warnings %q", c.Models, c.Pipelines["digits"].Timeout,
			c.Commands, c.StuckAfter("digits"), c.Warnings)
	}
}

func TestServingReturnsTheModelsTableOrTheDefaults(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	def := Serving{Version: VersionLatest, Policy: PolicyAvailability, LoadTimeout: Duration{120 * time.Second}, Tolerance: 1e-4}
	with := func(f func(*Serving)) Serving { s := def; f(&s); return s }
	cases := []struct {
		name, table string
		want        Serving
	}{
		{"no table: the defaults", "", def},
		{"an empty table: the defaults", "[serving.lenet5]\n", def},
		{"a pinned version, the rest defaults", "[serving.lenet5]\nversion = \"2\"\n",
			with(func(s *Serving) { s.Version = "2" })},
		{"version 0 is a version", "[serving.lenet5]\nversion = \"0\"\n",
			with(func(s *Serving) { s.Version = "0" })},
		{"latest written out", "[serving.lenet5]\nversion = \"latest\"\n", def},
		{"every key", "[serving.lenet5]\nversion = \"3\"\npolicy = \"resource\"\nload_timeout = \"10s\"\ntolerance = 0.01\n",
			Serving{Version: "3", Policy: PolicyResource, LoadTimeout: Duration{10 * time.Second}, Tolerance: 0.01}},
		{"an integer tolerance", "[serving.lenet5]\ntolerance = 1\n",
			with(func(s *Serving) { s.Tolerance = 1 })},
		{"another model's table does not apply", "[serving.other]\nversion = \"2\"\n", def},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("config.toml", valid(repo, plugins, inbox)+tc.table)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Serving("lenet5"); got != tc.want {
				t.Fatalf("Serving(lenet5) = %+v, want %+v", got, tc.want)
			}
		})
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

func TestNewSensorIsSafeOnSeveralGoroutines(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	c, err := Parse("config.toml", valid(repo, plugins, inbox)+"\n[sensors.spare]\nkind = \"synthetic\"\nfps = 5.0\n")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := c.NewSensor("spare", sensors.Env{Name: "spare", Prefix: c.MQTT.Prefix}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// A tracker table is read as written, missing keys take the tracker's
// defaults, and a bad value names its key.
func TestTheTrackerTable(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	base := valid(repo, plugins, inbox)
	c, err := Parse("config.toml", base+"[pipelines.digits.tracker]\nmax_age = \"2s\"\nstrict_classes = true\n")
	if err != nil {
		t.Fatal(err)
	}
	got := TrackConfig(c.Pipelines["digits"].Tracker)
	if got.MaxAge != 2*time.Second || !got.StrictClasses || got.IoU != 0.3 || got.MinHits != 2 {
		t.Fatalf("tracker %+v", got)
	}
	if c.Pipelines["digits"].Tracker == nil {
		t.Fatal("the table is present: tracking is on")
	}
	_, err = Parse("config.toml", base+"[pipelines.digits.tracker]\niou = 1.5\n")
	if err == nil || !strings.Contains(err.Error(), "pipelines.digits.tracker.iou") {
		t.Fatalf("iou 1.5: %v", err)
	}
}

func TestASnapshotTableGetsItsDefaults(t *testing.T) {
	repo, plugins, inbox := fixture(t)
	c, err := Parse("config.toml", valid(repo, plugins, inbox)+"[pipelines.digits.snapshot]\n[homeassistant]\ndiscovery = true\n")
	if err != nil {
		t.Fatal(err)
	}
	if sn := c.Pipelines["digits"].Snapshot; sn == nil || *sn != (Snapshot{Interval: Duration{time.Second}, Quality: 80}) {
		t.Fatalf("snapshot %+v, want 1s, 80", sn)
	}
	if !c.HomeAssistant.Discovery || c.HomeAssistant.Prefix != "homeassistant" {
		t.Fatalf("homeassistant %+v", c.HomeAssistant)
	}
}

func TestThePasswordIsTheFirstLineOfItsFileOrElseTheEnvironments(t *testing.T) {
	t.Setenv(PasswordEnv, "from-env")
	dir := t.TempDir()
	path, empty := filepath.Join(dir, "password"), filepath.Join(dir, "empty")
	if err := os.WriteFile(path, []byte("s3cret\r\nnot this\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m    MQTT
		want string
	}{{MQTT{}, "from-env"}, {MQTT{PasswordFile: path}, "s3cret"}} {
		if got, err := tc.m.ReadPassword(); err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.m, got, err, tc.want)
		}
	}
	for _, file := range []string{path + ".missing", empty} {
		if _, err := (MQTT{PasswordFile: file}).ReadPassword(); err == nil || !strings.HasPrefix(err.Error(), "mqtt.password_file: ") || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// The password is read from a file or the environment, never from
// config.toml: a password there is refused at its line, saying where it
// goes instead, and without repeating it.
func TestAPasswordWrittenInTheConfigIsRefusedNamingItsLineAndTheFix(t *testing.T) {
	t.Setenv(PasswordEnv, "")
	repo, plugins, inbox := fixture(t)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("pw-in-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	refuses(t, valid(repo, plugins, inbox), []invalid{
		{"password", after("qos = 1", "username = \"edge\"\npassword = \"hunter2-secret\""),
			"11: mqtt.password: the password is not written in config.toml: put it in a file readable by edgeinferd only and name it with password_file " +
				"(under systemd: password_file = \"${CREDENTIALS_DIRECTORY}/mqtt-password\", systemd/README.md), or set the environment variable EDGEINFER_MQTT_PASSWORD"},
		{"password in the broker URL", func(s string) string {
			return strings.Replace(s, "tcp://127.0.0.1:1883", "tcp://edge:hunter2-secret@127.0.0.1:1883", 1)
		}, "8: mqtt.broker: the URL holds a password (user:password@): set username, and password_file or the environment variable EDGEINFER_MQTT_PASSWORD"},
		{"password_file without username", after("qos = 1", "password_file = \""+pw+"\""),
			"10: mqtt.password_file: a password needs a username: set [mqtt] username"},
		{"a missing password_file", after("qos = 1", "username = \"edge\"\npassword_file = \""+pw+".missing\""),
			"11: mqtt.password_file: stat " + pw + ".missing: no such file or directory"},
	})
	for _, src := range []string{
		after("qos = 1", "username = \"edge\"\npassword = \"hunter2-secret\"")(valid(repo, plugins, inbox)),
		strings.Replace(valid(repo, plugins, inbox), "tcp://127.0.0.1:1883", "tcp://edge:hunter2-secret@127.0.0.1:1883", 1),
	} {
		if _, err := Parse("config.toml", src); err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error repeats the password: %v", err)
		}
	}
	t.Setenv(PasswordEnv, "from-env")
	_, err := Parse("config.toml", after("qos = 1", "username = \"edge\"\npassword_file = \""+pw+"\"")(valid(repo, plugins, inbox)))
	if want := "config.toml:11: mqtt.password_file: set password_file or the environment variable EDGEINFER_MQTT_PASSWORD, not both"; err == nil || err.Error() != want {
		t.Errorf("both a file and the environment:\n got %v\nwant %s", err, want)
	}
}

// password_file may name a credential of the systemd unit
// (LoadCredential=) through ${CREDENTIALS_DIRECTORY}; outside such a unit
// that is an error naming the line.
func TestThePasswordFileMayBeASystemdCredential(t *testing.T) {
	t.Setenv(PasswordEnv, "")
	repo, plugins, inbox := fixture(t)
	src := after("qos = 1", "username = \"edge\"\npassword_file = \"${CREDENTIALS_DIRECTORY}/mqtt-password\"")(valid(repo, plugins, inbox))
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	_, err := Parse("config.toml", src)
	if want := "config.toml:11: mqtt.password_file: ${CREDENTIALS_DIRECTORY} is not set: edgeinferd does not run under a systemd unit with LoadCredential= (systemd/README.md)"; err == nil || err.Error() != want {
		t.Fatalf("outside systemd:\n got %v\nwant %s", err, want)
	}
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "mqtt-password"), []byte("from-systemd\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	c, err := Parse("config.toml", src)
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.PasswordFile != filepath.Join(creds, "mqtt-password") {
		t.Fatalf("password_file %q", c.MQTT.PasswordFile)
	}
	if pw, err := c.MQTT.ReadPassword(); err != nil || pw != "from-systemd" {
		t.Fatalf("password %q, %v", pw, err)
	}
}
