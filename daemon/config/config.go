// Package config reads and checks edgeinferd's config.toml. Every error names
// the file, the line and the key ("config.toml:14: pipelines.digits.sensor:
// sensor "cam" is not defined; defined: inbox"); unknown keys and wrong types
// are errors, never silently ignored. Sensor tables are decoded by their
// kind's own Factory (see sensors.Register), so a sensor's options are
// checked by the code that uses them. Diff tells a reload what changed
// between two checked configs.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
	"github.com/edgeinfer/edgeinfer/internal/logging"
	"github.com/edgeinfer/edgeinfer/internal/signing"
	"github.com/edgeinfer/edgeinfer/sensors"

	"github.com/edgeinfer/edgeinfer/daemon/crop"
	"github.com/edgeinfer/edgeinfer/daemon/outbox"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/daemon/track"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

// Config is a checked config.toml.
type Config struct {
	Device    string `toml:"device"`
	PluginDir string `toml:"plugin_dir"`
	Log       Log    `toml:"log"`
	Models    Models `toml:"models"`
	MQTT      MQTT   `toml:"mqtt"`
	Limits    Limits `toml:"limits"`
	// StatsInterval is how often <prefix>/stats is published (default 10s).
	StatsInterval Duration            `toml:"stats_interval"`
	Commands      Commands            `toml:"commands"`
	Systemd       Systemd             `toml:"systemd"`
	HTTP          HTTP                `toml:"http"`
	HomeAssistant HomeAssistant       `toml:"homeassistant"`
	Sensors       map[string]Sensor   `toml:"-"`
	Pipelines     map[string]Pipeline `toml:"-"`

	// Warnings are legal but probably unintended settings (a sensor that
	// feeds no pipeline); the daemon logs them.
	Warnings []string `toml:"-"`

	file    string
	lines   map[string]int
	md      toml.MetaData
	serving map[string]Serving // [serving.<model>] tables, defaults applied
	// allowOps is each model's [serving.<model>] allow_ops.
	allowOps map[string][]string
	// trustedKeys is the content of models.trusted_keys (nil: none).
	trustedKeys signing.Keys
	// brokerRules is the content of [mqtt.embedded] users_file and
	// acl_file, with allow_anonymous.
	brokerRules broker.Rules
}

// decodeMu serialises decoding from a Config's toml.MetaData, which is not
// safe for concurrent use (NewSensor may run on several goroutines).
var decodeMu sync.Mutex

// Log configures log/slog.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json
	// Results logs one line per result at info level (make run's demo).
	Results bool `toml:"results"`
	// Levels gives components a level of their own (internal/logging):
	// {serving = "debug", mqtt = "warn"}.
	Levels map[string]string `toml:"levels"`
}

// The values of [models] confine.
const (
	ConfineAuto     = "auto"
	ConfineRequired = "required"
	ConfineOff      = "off"
)

// Models configures the model repository.
type Models struct {
	Repository string `toml:"repository"` // <name>/<version>/saved_model.pb
	// Threads is TensorFlow's intra-op threads per plugin process (0 =
	// TensorFlow's choice); a change applies to plugin processes started
	// after it.
	Threads int `toml:"threads"`
	// Settle is how long a version's files must be unchanged before the
	// version is considered (default 2s).
	Settle Duration `toml:"settle"`
	// Rescan is the period of a full rescan of the repository, besides
	// file-system notifications (default 10s).
	Rescan Duration `toml:"rescan"`
	// Confine confines each plugin process with Landlock
	// (plugins/sdk/confine): "auto" (the default) when the kernel can, else
	// a warning and no confinement; "required": a version whose process
	// cannot be confined is rejected; "off": never.
	Confine string `toml:"confine"`
	// TrustedKeys is a file of ed25519 public keys (internal/signing);
	// when set, only versions signed by one of them are served. "" (the
	// default): signatures are not required.
	TrustedKeys string `toml:"trusted_keys"`
}

// Commands configures <prefix>/cmd.
type Commands struct {
	// Enabled accepts commands on <prefix>/cmd (default false).
	Enabled bool `toml:"enabled"`
}

// Systemd configures what edgeinferd tells systemd when it runs as a
// Type=notify service with a watchdog (systemd/README.md).
type Systemd struct {
	// StuckAfter: a pipeline whose frame has been in its plugin longer
	// than this is stuck, and edgeinferd stops answering systemd's
	// watchdog, so that systemd restarts it. 0 (the default): twice the
	// pipeline's timeout. See Config.StuckAfter.
	StuckAfter Duration `toml:"stuck_after"`
}

// HomeAssistant configures MQTT discovery for Home Assistant
// (daemon/homeassistant).
type HomeAssistant struct {
	// Discovery announces every pipeline's entities (default false).
	Discovery bool `toml:"discovery"`
	// Prefix is Home Assistant's discovery prefix (default "homeassistant").
	Prefix string `toml:"prefix"`
}

// HTTP configures the metrics and health endpoints (daemon/metrics).
type HTTP struct {
	// Listen is the host:port of /metrics, /healthz and /readyz; "" (the
	// default) serves none of them.
	Listen string `toml:"listen"`
}

// MQTT configures the connection and the topics.
type MQTT struct {
	Broker         string   `toml:"broker"` // "embedded" or tcp://, ssl://, ws://, wss:// URL
	Listen         string   `toml:"listen"` // embedded broker address
	Prefix         string   `toml:"prefix"` // default edgeinfer/<device>
	ClientID       string   `toml:"client_id"`
	QoS            int      `toml:"qos"`
	RetainResults  bool     `toml:"retain_results"`
	Keepalive      Duration `toml:"keepalive"`
	ConnectTimeout Duration `toml:"connect_timeout"`
	Username       string   `toml:"username"`
	// PasswordFile holds the broker password on its first line; the
	// password is never written in config.toml itself (see ReadPassword).
	// "${CREDENTIALS_DIRECTORY}" in it is systemd's folder of the unit's
	// credentials (LoadCredential=, systemd/README.md).
	PasswordFile       string `toml:"password_file"`
	CAFile             string `toml:"ca_file"`
	CertFile           string `toml:"cert_file"`
	KeyFile            string `toml:"key_file"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
	// OutboxDir holds the outbox (daemon/outbox), where results and events
	// wait on disk while the broker cannot be reached. Default: "outbox"
	// in systemd's state directory ($STATE_DIRECTORY, StateDirectory=);
	// without one, and not set, there is no outbox.
	OutboxDir string `toml:"outbox_dir"`
	// OutboxMaxBytes bounds the outbox (default 64 MiB, at least 64 KiB);
	// 0: no outbox.
	OutboxMaxBytes int64 `toml:"outbox_max_bytes"`
	// Embedded is the embedded broker's access control and TLS.
	Embedded Embedded `toml:"embedded"`
}

// Embedded is the [mqtt.embedded] table: who may use the embedded broker
// and how (daemon/broker/README.md). The files are Mosquitto's formats;
// UsersFile, ACLFile and AllowAnonymous are live (Diff), the rest restart-only.
type Embedded struct {
	// UsersFile is a password file as mosquitto_passwd or `edgeinferd
	// passwd` write it; without it every client is let in, and the
	// listeners must be on loopback.
	UsersFile string `toml:"users_file"`
	// ACLFile is a Mosquitto acl_file; needs UsersFile. Without it a
	// logged-in user may use every topic.
	ACLFile string `toml:"acl_file"`
	// AllowAnonymous lets clients without a user name in, with the ACL's
	// anonymous rules (default false; with no users_file everyone is).
	AllowAnonymous bool `toml:"allow_anonymous"`
	// TLSListen is the host:port of MQTT over TLS ("" none), with
	// CertFile and KeyFile; with ClientCAFile, clients need a
	// certificate signed by it.
	TLSListen    string `toml:"tls_listen"`
	CertFile     string `toml:"cert_file"`
	KeyFile      string `toml:"key_file"`
	ClientCAFile string `toml:"client_ca_file"`
}

// DefaultOutboxMaxBytes is [mqtt] outbox_max_bytes when it is not set.
const DefaultOutboxMaxBytes = 64 << 20

// Outbox reports whether results and events go through an outbox.
func (m MQTT) Outbox() bool { return m.OutboxDir != "" && m.OutboxMaxBytes > 0 }

// Limits bound what sensors accept (see sensors.Limits).
type Limits struct {
	MaxBytes  int `toml:"max_bytes"`
	MaxPixels int `toml:"max_pixels"`
	MinSide   int `toml:"min_side"`
}

// Sensor is one [sensors.<name>] table: its kind; the rest is the kind's.
type Sensor struct {
	Kind  string `toml:"kind"`
	prim  toml.Primitive
	table map[string]any // the whole table decoded, for Diff
}

// Pipeline binds one sensor, or the detections of another pipeline, to one
// model.
type Pipeline struct {
	Sensor string `toml:"sensor"`
	// From names the pipeline whose detections feed this one, in place of
	// a sensor: each chosen detection becomes a crop frame (Crop).
	From    string `toml:"from"`
	Model   string `toml:"model"`
	Queue   int    `toml:"queue"`   // frames waiting for a lossless pipeline (default 8)
	Retries int    `toml:"retries"` // restarts of a crashed plugin for one frame (default 3)
	// Timeout bounds one inference (default 30s): a plugin taking longer is
	// killed and restarted, and the frame tried once more.
	Timeout Duration       `toml:"timeout"`
	Options map[string]any `toml:"options"` // the task's options, passed to the plugin
	// Tracker, when the table is present, gives a detector's objects track
	// ids across frames and publishes object_entered / object_left.
	Tracker *Tracker `toml:"tracker"`
	// Crop chooses and cuts the upstream detections of a pipeline with
	// From; defaults applied, nil without From.
	Crop *Crop `toml:"crop"`
	// HomeAssistant is what the pipeline shows in Home Assistant beyond
	// its task's entities.
	HomeAssistant PipelineHA `toml:"homeassistant"`
	// Snapshot, when the table is present, publishes an annotated JPEG of
	// some results on <prefix>/<pipeline>/snapshot; defaults applied.
	Snapshot *Snapshot `toml:"snapshot"`
}

// PipelineHA is a pipeline's [pipelines.<name>.homeassistant] table.
type PipelineHA struct {
	// Present are the labels that get a binary_sensor "present".
	Present []string `toml:"present"`
}

// Snapshot is a pipeline's [pipelines.<name>.snapshot] table
// (daemon/snapshot).
type Snapshot struct {
	Interval Duration `toml:"interval"` // at most one snapshot per interval (default 1s)
	Quality  int      `toml:"quality"`  // JPEG quality 1..100 (default 80)
}

// Crop is a pipeline's [pipelines.<name>.crop] table (daemon/crop).
type Crop struct {
	Classes  []string `toml:"classes"`   // labels of the upstream detections to crop; empty: all
	MinScore float64  `toml:"min_score"` // detections scoring less are not cropped (default 0)
	Margin   float64  `toml:"margin"`    // fraction of the box's width/height added on each side (default 0)
	MinSize  int      `toml:"min_size"`  // smaller crops (either side, source pixels) are left out (default 8)
	MaxCrops int      `toml:"max_crops"` // per upstream frame, best score first (default 10)
}

// Tracker is a pipeline's [pipelines.<name>.tracker] table (daemon/track).
type Tracker struct {
	IoU     float64  `toml:"iou"`      // least overlap with a track's predicted box (default 0.3)
	MaxAge  Duration `toml:"max_age"`  // unseen this long, an object has left (default 1s)
	MinHits int      `toml:"min_hits"` // detections before an object has entered (default 2)
	// StrictClasses: a detection only continues a track of its own class
	// (default false: a relabelled object keeps its track).
	StrictClasses bool `toml:"strict_classes"`
}

// Duration is a time.Duration written as "500ms", "30s".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. \"500ms\", \"30s\")", b)
	}
	d.Duration = v
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Load reads and checks a config file.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, string(src))
}

// Parse checks config text; path is used in messages and nothing else.
func Parse(path, src string) (*Config, error) {
	c := &Config{file: path, lines: keyLines(src)}
	var raw struct {
		Config
		Sensors   map[string]toml.Primitive `toml:"sensors"`
		Pipelines map[string]Pipeline       `toml:"pipelines"`
		Serving   map[string]servingTable   `toml:"serving"`
	}
	md, err := toml.Decode(src, &raw)
	if err != nil {
		return nil, c.typeErr(err)
	}
	*c = raw.Config
	c.file, c.lines, c.md = path, keyLines(src), md
	c.Pipelines = raw.Pipelines
	c.Sensors = map[string]Sensor{}
	for name, prim := range raw.Sensors {
		s := Sensor{prim: prim}
		var k struct {
			Kind string `toml:"kind"`
		}
		if err := md.PrimitiveDecode(prim, &k); err != nil {
			return nil, c.typeErr(err)
		}
		s.Kind = k.Kind
		c.Sensors[name] = s
	}
	c.defaults()
	if err := c.check(); err != nil {
		return nil, err
	}
	if err := c.checkServing(raw.Serving); err != nil {
		return nil, err
	}
	if err := c.checkUndecoded(); err != nil {
		return nil, err
	}
	// Only now: decoding a table into a map marks all its keys as known.
	for name, s := range c.Sensors {
		if err := c.md.PrimitiveDecode(s.prim, &s.table); err != nil {
			return nil, c.typeErr(err)
		}
		c.Sensors[name] = s
	}
	return c, nil
}

// ModelPipelines maps each model in use to its pipelines, each with its
// [pipelines.<name>.options] as JSON, as the plugin gets them (nil: none).
func (c *Config) ModelPipelines() map[string]map[string]json.RawMessage {
	used := map[string]map[string]json.RawMessage{}
	for name, p := range c.Pipelines {
		if used[p.Model] == nil {
			used[p.Model] = map[string]json.RawMessage{}
		}
		var opts json.RawMessage
		if len(p.Options) > 0 {
			opts, _ = json.Marshal(p.Options) // TOML values always encode
		}
		used[p.Model][name] = opts
	}
	return used
}

// StuckAfter is how long a frame of the pipeline called name may stay in
// its plugin before the pipeline is stuck: systemd.stuck_after, or twice
// the pipeline's timeout. The pipeline kills a plugin that takes longer
// than its timeout and tries the frame again, so with the default only a
// daemon that cannot end a plugin call any more is stuck.
func (c *Config) StuckAfter(name string) time.Duration {
	if c.Systemd.StuckAfter.Duration > 0 {
		return c.Systemd.StuckAfter.Duration
	}
	return 2 * c.Pipelines[name].Timeout.Duration
}

// File is the path the config was read from.
func (c *Config) File() string { return c.file }

// errf makes an error naming the file, the line of key and the key.
func (c *Config) errf(key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if n := lineOf(c.lines, key); n > 0 {
		return fmt.Errorf("%s:%d: %s: %s", c.file, n, key, msg)
	}
	return fmt.Errorf("%s: %s: %s", c.file, key, msg)
}

// typeErr rewrites a syntax or type error of BurntSushi/toml in the
// file:line: key: message form.
func (c *Config) typeErr(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// An error at the end of a one-line file is on "line 0", and the
		// end of the input shows in the message as a NUL character.
		line, msg := max(pe.Position.Line, 1), strings.ReplaceAll(pe.Message, "\x00", "end of file")
		if pe.LastKey != "" && lineOf(c.lines, pe.LastKey) == line {
			return fmt.Errorf("%s:%d: %s: %s", c.file, line, pe.LastKey, msg)
		}
		return fmt.Errorf("%s:%d: %s", c.file, line, msg)
	}
	if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("%s:%s: %s: %s", c.file, m[1], m[2], m[3])
	}
	return fmt.Errorf("%s: %s", c.file, strings.TrimPrefix(err.Error(), "toml: "))
}

// typeErrRE matches BurntSushi/toml's type errors, which are not ParseErrors.
var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]+)"\): (.*)$`)

func (c *Config) defaults() {
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.StatsInterval.Duration == 0 {
		c.StatsInterval.Duration = 10 * time.Second
	}
	if c.Models.Repository == "" {
		c.Models.Repository = "models"
	}
	if !c.md.IsDefined("models", "settle") {
		c.Models.Settle.Duration = 2 * time.Second
	}
	if !c.md.IsDefined("models", "rescan") {
		c.Models.Rescan.Duration = 10 * time.Second
	}
	if c.Models.Confine == "" {
		c.Models.Confine = ConfineAuto
	}
	if c.PluginDir == "" {
		if exe, err := os.Executable(); err == nil {
			c.PluginDir = filepath.Dir(exe)
		}
	}
	m := &c.MQTT
	if m.Broker == "" {
		m.Broker = "embedded"
	}
	if !c.md.IsDefined("mqtt", "listen") {
		m.Listen = "127.0.0.1:1883" // listen = "" with tls_listen: TLS only
	}
	if m.Prefix == "" {
		m.Prefix = "edgeinfer/" + c.Device
	}
	if m.ClientID == "" {
		m.ClientID = "edgeinferd-" + c.Device
	}
	if !c.md.IsDefined("mqtt", "qos") {
		m.QoS = 1
	}
	if m.Keepalive.Duration == 0 {
		m.Keepalive.Duration = 30 * time.Second
	}
	if m.ConnectTimeout.Duration == 0 {
		m.ConnectTimeout.Duration = 10 * time.Second
	}
	if creds := os.Getenv("CREDENTIALS_DIRECTORY"); creds != "" {
		m.PasswordFile = strings.ReplaceAll(m.PasswordFile, credentialsDir, creds)
	}
	if m.OutboxDir == "" {
		if state, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); state != "" {
			m.OutboxDir = filepath.Join(state, "outbox")
		}
	}
	if !c.md.IsDefined("mqtt", "outbox_max_bytes") {
		m.OutboxMaxBytes = DefaultOutboxMaxBytes
	}
	if c.HomeAssistant.Prefix == "" {
		c.HomeAssistant.Prefix = "homeassistant"
	}
	d := sensors.DefaultLimits
	if c.Limits.MaxBytes == 0 {
		c.Limits.MaxBytes = d.MaxBytes
	}
	if c.Limits.MaxPixels == 0 {
		c.Limits.MaxPixels = d.MaxPixels
	}
	if !c.md.IsDefined("limits", "min_side") {
		c.Limits.MinSide = d.MinSide
	}
	for name, p := range c.Pipelines {
		if p.Queue == 0 {
			p.Queue = 8
		}
		if !c.md.IsDefined("pipelines", name, "retries") {
			p.Retries = 3
		}
		if !c.md.IsDefined("pipelines", name, "timeout") {
			p.Timeout.Duration = 30 * time.Second
		}
		if p.From != "" && p.Crop == nil {
			p.Crop = &Crop{}
		}
		if p.Snapshot != nil {
			if !c.md.IsDefined("pipelines", name, "snapshot", "interval") {
				p.Snapshot.Interval.Duration = time.Second
			}
			if p.Snapshot.Quality == 0 {
				p.Snapshot.Quality = 80
			}
		}
		if p.Crop != nil {
			if !c.md.IsDefined("pipelines", name, "crop", "min_size") {
				p.Crop.MinSize = 8
			}
			if !c.md.IsDefined("pipelines", name, "crop", "max_crops") {
				p.Crop.MaxCrops = 10
			}
		}
		c.Pipelines[name] = p
	}
}

func (c *Config) check() error {
	if c.Device == "" {
		return c.errf("device", "required (a name for this device, used in topics)")
	}
	if !nameRE.MatchString(c.Device) {
		return c.errf("device", "%q may only hold letters, digits, '-' and '_'", c.Device)
	}
	if err := c.checkLog(); err != nil {
		return err
	}
	if err := c.checkMQTT(); err != nil {
		return err
	}
	if err := c.checkHTTP(); err != nil {
		return err
	}
	if p := c.HomeAssistant.Prefix; strings.ContainsAny(p, "+#") || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return c.errf("homeassistant.prefix", "%q must be a topic without wildcards or leading/trailing '/'", p)
	}
	if st, err := os.Stat(c.Models.Repository); err != nil || !st.IsDir() {
		return c.errf("models.repository", "%q is not a directory", c.Models.Repository)
	}
	if err := c.positive("stats_interval", c.StatsInterval); err != nil {
		return err
	}
	if c.Models.Threads < 0 {
		return c.errf("models.threads", "must be >= 0, got %d", c.Models.Threads)
	}
	if m := c.Models.Confine; m != ConfineAuto && m != ConfineRequired && m != ConfineOff {
		return c.errf("models.confine", "%q must be %q, %q or %q", m, ConfineAuto, ConfineRequired, ConfineOff)
	}
	if err := c.positive("models.settle", c.Models.Settle); err != nil {
		return err
	}
	if err := c.positive("models.rescan", c.Models.Rescan); err != nil {
		return err
	}
	if c.Models.TrustedKeys != "" {
		keys, err := signing.ReadKeys(c.Models.TrustedKeys)
		if err != nil {
			return c.errf("models.trusted_keys", "%v", err)
		}
		if len(keys) == 0 {
			return c.errf("models.trusted_keys", "%s holds no key: no version could be served", c.Models.TrustedKeys)
		}
		c.trustedKeys = keys
	}
	if c.md.IsDefined("systemd", "stuck_after") {
		if err := c.positive("systemd.stuck_after", c.Systemd.StuckAfter); err != nil {
			return err
		}
	}
	if st, err := os.Stat(c.PluginDir); err != nil || !st.IsDir() {
		return c.errf("plugin_dir", "%q is not a directory", c.PluginDir)
	}
	for key, v := range map[string]int{"limits.max_bytes": c.Limits.MaxBytes, "limits.max_pixels": c.Limits.MaxPixels, "limits.min_side": c.Limits.MinSide} {
		if v < 0 || v == 0 && key != "limits.min_side" {
			return c.errf(key, "must be > 0, got %d", v)
		}
	}
	if err := c.checkSensors(); err != nil {
		return err
	}
	return c.checkPipelines()
}

// positive checks that the duration at key is > 0.
func (c *Config) positive(key string, d Duration) error {
	if d.Duration <= 0 {
		return c.errf(key, "must be > 0, got %s", d)
	}
	return nil
}

func (c *Config) checkLog() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return c.errf("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return c.errf("log.format", "%q is not one of text, json", c.Log.Format)
	}
	for _, comp := range slices.Sorted(maps.Keys(c.Log.Levels)) {
		key := "log.levels." + comp
		if !slices.Contains(logging.Components, comp) {
			return c.errf(key, "%q is not a component; one of %s", comp, strings.Join(logging.Components, ", "))
		}
		switch c.Log.Levels[comp] {
		case "debug", "info", "warn", "error":
		default:
			return c.errf(key, "%q is not one of debug, info, warn, error", c.Log.Levels[comp])
		}
	}
	return nil
}

// PasswordEnv is the environment variable that may hold the broker
// password, in place of [mqtt] password_file.
const PasswordEnv = "EDGEINFER_MQTT_PASSWORD"

// credentialsDir is what password_file may start with: systemd's folder of
// the unit's credentials, $CREDENTIALS_DIRECTORY.
const credentialsDir = "${CREDENTIALS_DIRECTORY}"

// ReadPassword returns the broker password: the first line of
// password_file, or else the environment variable EDGEINFER_MQTT_PASSWORD
// ("" when neither is set). An empty password file is an error: it is what
// a missing credential file becomes under the unit's SetCredential=
// default. Errors never hold the password.
func (m MQTT) ReadPassword() (string, error) {
	if m.PasswordFile == "" {
		return os.Getenv(PasswordEnv), nil
	}
	b, err := os.ReadFile(m.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("mqtt.password_file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("mqtt.password_file: %s has no password on its first line", m.PasswordFile)
	}
	return line, nil
}

// checkPassword checks where the broker password comes from: never
// config.toml itself (password =, or a password in the broker URL), and one
// place only.
func (c *Config) checkPassword() error {
	m := c.MQTT
	if c.md.IsDefined("mqtt", "password") {
		return c.errf("mqtt.password", "the password is not written in config.toml: put it in a file readable by edgeinferd only and name it "+
			"with password_file (under systemd: password_file = \"%s/mqtt-password\", systemd/README.md), "+
			"or set the environment variable %s", credentialsDir, PasswordEnv)
	}
	if u, err := url.Parse(m.Broker); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return c.errf("mqtt.broker", "the URL holds a password (user:password@): set username, and password_file or the environment variable %s", PasswordEnv)
		}
	}
	if m.PasswordFile == "" {
		if os.Getenv(PasswordEnv) != "" && m.Username == "" {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: %s is set but [mqtt] username is not: the password is not used", c.file, PasswordEnv))
		}
		return nil
	}
	if strings.Contains(m.PasswordFile, credentialsDir) {
		return c.errf("mqtt.password_file", "%s is not set: edgeinferd does not run under a systemd unit with LoadCredential= (systemd/README.md)", credentialsDir)
	}
	if os.Getenv(PasswordEnv) != "" {
		return c.errf("mqtt.password_file", "set password_file or the environment variable %s, not both", PasswordEnv)
	}
	if m.Username == "" {
		return c.errf("mqtt.password_file", "a password needs a username: set [mqtt] username")
	}
	if _, err := os.Stat(m.PasswordFile); err != nil {
		return c.errf("mqtt.password_file", "%v", err)
	}
	return nil
}

func (c *Config) checkMQTT() error {
	if err := c.checkPassword(); err != nil {
		return err
	}
	m := c.MQTT
	if m.Broker == "embedded" {
		if err := c.checkEmbedded(); err != nil {
			return err
		}
	} else {
		if c.md.IsDefined("mqtt", "embedded") {
			return c.errf("mqtt.embedded", "only for broker = \"embedded\"; the broker %s has its own users, ACL and TLS (daemon/broker/README.md)", m.Broker)
		}
		u, err := url.Parse(m.Broker)
		if err != nil || u.Host == "" {
			return c.errf("mqtt.broker", "%q is neither \"embedded\" nor a broker URL such as tcp://host:1883", m.Broker)
		}
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
		default:
			return c.errf("mqtt.broker", "scheme %q is not one of tcp, mqtt, ssl, tls, mqtts, ws, wss", u.Scheme)
		}
	}
	if m.Prefix == "" || strings.ContainsAny(m.Prefix, "+#") || strings.HasPrefix(m.Prefix, "/") || strings.HasSuffix(m.Prefix, "/") {
		return c.errf("mqtt.prefix", "%q must be a topic without wildcards or leading/trailing '/'", m.Prefix)
	}
	if m.QoS < 0 || m.QoS > 2 {
		return c.errf("mqtt.qos", "must be 0, 1 or 2, got %d", m.QoS)
	}
	if m.Keepalive.Duration < time.Second {
		return c.errf("mqtt.keepalive", "must be at least 1s, got %s", m.Keepalive)
	}
	if (m.CertFile == "") != (m.KeyFile == "") {
		return c.errf("mqtt.cert_file", "cert_file and key_file go together")
	}
	for key, f := range map[string]string{"mqtt.ca_file": m.CAFile, "mqtt.cert_file": m.CertFile, "mqtt.key_file": m.KeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return c.errf(key, "%v", err)
		}
	}
	if m.OutboxMaxBytes != 0 && m.OutboxMaxBytes < outbox.MinBytes {
		return c.errf("mqtt.outbox_max_bytes", "must be 0 (no outbox) or at least %d (64 KiB), got %d", outbox.MinBytes, m.OutboxMaxBytes)
	}
	if m.Outbox() {
		if st, err := os.Stat(m.OutboxDir); err == nil && !st.IsDir() {
			return c.errf("mqtt.outbox_dir", "%q is not a directory", m.OutboxDir)
		}
	}
	return nil
}

// KeyError names the file, the line of key and key in front of err, for
// a setting found wrong when it is used (an outbox folder that cannot be
// made).
func (c *Config) KeyError(key string, err error) error { return c.errf(key, "%v", err) }

func (c *Config) checkHTTP() error {
	if c.HTTP.Listen == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(c.HTTP.Listen)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return c.errf("http.listen", "%q is not host:port (e.g. \"127.0.0.1:9470\"; \"\" serves no endpoint)", c.HTTP.Listen)
	}
	return nil
}

func (c *Config) checkSensors() error {
	for _, name := range slices.Sorted(maps.Keys(c.Sensors)) {
		s := c.Sensors[name]
		key := "sensors." + name
		if !nameRE.MatchString(name) {
			return c.errf(key, "sensor name %q may only hold letters, digits, '-' and '_'", name)
		}
		if s.Kind == "" {
			return c.errf(key, "kind is required; one of %s", strings.Join(sensors.Kinds(), ", "))
		}
		if _, err := c.NewSensor(name, sensors.Env{Name: name, Prefix: c.MQTT.Prefix}); err != nil {
			return err
		}
	}
	return nil
}

// NewSensor builds the sensor called name from its table with env; the
// daemon calls it once it is connected (env.Subscribe needs the broker).
func (c *Config) NewSensor(name string, env sensors.Env) (sensors.Sensor, error) {
	s, ok := c.Sensors[name]
	key := "sensors." + name
	if !ok {
		return nil, c.errf(key, "not defined")
	}
	kind, ok := sensors.Lookup(s.Kind)
	if !ok {
		return nil, c.errf(key+".kind", "unknown sensor kind %q; one of %s", s.Kind, strings.Join(sensors.Kinds(), ", "))
	}
	env.Limits = sensors.Limits{MaxBytes: c.Limits.MaxBytes, MaxPixels: c.Limits.MaxPixels, MinSide: c.Limits.MinSide}
	if env.Subscribe == nil {
		env.Subscribe = func(string, func(string, []byte, func())) error { return errors.New("not connected") }
	}
	decode := func(v any) error {
		decodeMu.Lock()
		defer decodeMu.Unlock()
		if err := c.md.PrimitiveDecode(s.prim, v); err != nil {
			return c.typeErr(err)
		}
		return nil
	}
	sensor, err := kind.New(env, decode)
	if err != nil {
		if strings.HasPrefix(err.Error(), c.file+":") {
			return nil, err
		}
		// The kind names the option first ("fps must be > 0"): point at it.
		opt, _, _ := strings.Cut(err.Error(), " ")
		opt = strings.TrimSuffix(opt, ":")
		if n, ok := c.lines[key+"."+opt]; ok {
			return nil, fmt.Errorf("%s:%d: %s: %w", c.file, n, key, err)
		}
		return nil, fmt.Errorf("%s:%d: %s: %w", c.file, lineOf(c.lines, key), key, err)
	}
	return sensor, nil
}

func (c *Config) checkPipelines() error {
	if len(c.Pipelines) == 0 {
		return fmt.Errorf("%s: no [pipelines.<name>] table: nothing would run", c.file)
	}
	used := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(c.Pipelines)) {
		p := c.Pipelines[name]
		key := "pipelines." + name
		if !nameRE.MatchString(name) {
			return c.errf(key, "pipeline name %q may only hold letters, digits, '-' and '_'", name)
		}
		switch {
		case p.Sensor != "" && p.From != "":
			return c.errf(key+".from", "set sensor or from, not both")
		case p.From != "":
			if err := c.checkFrom(name); err != nil {
				return err
			}
		case p.Crop != nil:
			return c.errf(key+".crop", "only for a pipeline fed by another (from = \"<pipeline>\")")
		case p.Sensor == "":
			return c.errf(key+".sensor", "required (or from = \"<pipeline>\", to take crops of another pipeline's detections)")
		default:
			if _, ok := c.Sensors[p.Sensor]; !ok {
				return c.errf(key+".sensor", "sensor %q is not defined; defined: %s", p.Sensor, strings.Join(slices.Sorted(maps.Keys(c.Sensors)), ", "))
			}
			used[p.Sensor] = true
		}
		if p.Model == "" {
			return c.errf(key+".model", "required")
		}
		if st, err := os.Stat(filepath.Join(c.Models.Repository, p.Model)); err != nil || !st.IsDir() {
			return c.errf(key+".model", "model %q is not in the repository %s", p.Model, c.Models.Repository)
		}
		if p.Queue < 1 {
			return c.errf(key+".queue", "must be >= 1, got %d", p.Queue)
		}
		if p.Retries < 0 {
			return c.errf(key+".retries", "must be >= 0, got %d", p.Retries)
		}
		if err := c.positive(key+".timeout", p.Timeout); err != nil {
			return err
		}
		if tc := p.Tracker; tc != nil {
			if err := TrackConfig(tc).Validate(); err != nil {
				field, _, _ := strings.Cut(err.Error(), " ")
				return c.errf(key+".tracker."+field, "%s", err)
			}
		}
		if sn := p.Snapshot; sn != nil {
			if err := c.positive(key+".snapshot.interval", sn.Interval); err != nil {
				return err
			}
			if sn.Quality < 1 || sn.Quality > 100 {
				return c.errf(key+".snapshot.quality", "must be 1..100, got %d", sn.Quality)
			}
		}
		for _, l := range p.HomeAssistant.Present {
			if strings.TrimSpace(l) == "" {
				return c.errf(key+".homeassistant.present", "holds an empty label")
			}
		}
	}
	if stuck := c.Systemd.StuckAfter.Duration; stuck > 0 {
		for _, name := range slices.Sorted(maps.Keys(c.Pipelines)) {
			if timeout := c.Pipelines[name].Timeout.Duration; stuck <= timeout {
				c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: systemd.stuck_after (%s) is not longer than pipelines.%s.timeout (%s): "+
					"a slow frame gets edgeinferd restarted by systemd's watchdog before edgeinferd gives up on the frame and restarts its plugin itself",
					c.file, lineOf(c.lines, "systemd.stuck_after"), stuck, name, timeout))
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Sensors)) {
		if !used[name] {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: sensors.%s feeds no pipeline", c.file, lineOf(c.lines, "sensors."+name), name))
		}
	}
	return nil
}

// checkFrom checks the from and crop of the pipeline called name: from
// names another pipeline, pipelines do not feed each other in a cycle, the
// upstream's model detects (its serving version's manifest says so; a
// model with no readable manifest yet is a warning), and the crop values
// are in range, its classes among the upstream model's labels.
func (c *Config) checkFrom(name string) error {
	p, key := c.Pipelines[name], "pipelines."+name
	up, ok := c.Pipelines[p.From]
	if !ok {
		others := slices.DeleteFunc(slices.Sorted(maps.Keys(c.Pipelines)), func(n string) bool { return n == name })
		return c.errf(key+".from", "pipeline %q is not defined; defined: %s", p.From, strings.Join(others, ", "))
	}
	chain := []string{name}
	for at := p.From; at != ""; at = c.Pipelines[at].From {
		chain = append(chain, at)
		if at == name {
			return c.errf(key+".from", "pipelines feed each other in a cycle: %s", strings.Join(chain, " <- "))
		}
		if len(chain) > len(c.Pipelines) {
			break // a cycle further up, reported at its own pipelines
		}
	}
	cr := p.Crop
	switch {
	case !(cr.MinScore >= 0 && cr.MinScore <= 1):
		return c.errf(key+".crop.min_score", "must be in [0, 1], got %g", cr.MinScore)
	case !(cr.Margin >= 0 && cr.Margin <= 10):
		return c.errf(key+".crop.margin", "must be in [0, 10] (a fraction of the box's side), got %g", cr.Margin)
	case cr.MinSize < 1:
		return c.errf(key+".crop.min_size", "must be >= 1, got %d", cr.MinSize)
	case cr.MaxCrops < 1:
		return c.errf(key+".crop.max_crops", "must be >= 1, got %d", cr.MaxCrops)
	}
	if i := slices.Index(cr.Classes, ""); i >= 0 {
		return c.errf(key+".crop.classes", "class %d is empty", i)
	}
	m, err := repo.ServingManifest(c.Models.Repository, up.Model, c.Serving(up.Model).Version)
	if err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: %s.from: cannot tell yet whether model %s of pipeline %s detects: %v; "+
			"%s gets crops only from results with detections", c.file, lineOf(c.lines, key+".from"), key, up.Model, p.From, err, name))
		return nil
	}
	if manifest.Plugin(m.Task) != "detect" {
		return c.errf(key+".from", "pipeline %q runs model %s, whose task %s makes no detections to crop (a detect_* task does)", p.From, up.Model, m.Task)
	}
	for _, class := range cr.Classes {
		if !slices.Contains(m.Labels, class) {
			return c.errf(key+".crop.classes", "%q is not a label of model %s; its labels: %s", class, up.Model, strings.Join(m.Labels, ", "))
		}
	}
	return nil
}

// checkUndecoded reports the first key no part of the program knows.
func (c *Config) checkUndecoded() error {
	var keys []string
	for _, k := range c.md.Undecoded() {
		key := strings.Join(k, ".")
		if len(k) >= 3 && k[0] == "pipelines" && k[2] == "options" {
			continue // the task's own, checked by the plugin
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Slice(keys, func(i, j int) bool { return lineOf(c.lines, keys[i]) < lineOf(c.lines, keys[j]) })
	return c.errf(keys[0], "unknown key")
}

// CropConfig is the crop table as daemon/crop takes it.
func CropConfig(c *Crop) crop.Config {
	return crop.Config{Classes: c.Classes, MinScore: c.MinScore, Margin: c.Margin, MinSize: c.MinSize, MaxCrops: c.MaxCrops}
}

// TrackConfig is the tracker's config with its defaults.
func TrackConfig(t *Tracker) track.Config {
	return track.Config{IoU: t.IoU, MaxAge: t.MaxAge.Duration, MinHits: t.MinHits, StrictClasses: t.StrictClasses}.Defaults()
}
