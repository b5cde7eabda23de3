package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/sensors"
)

// errLineRE finds the line an error names: "config.toml:12: ...".
var errLineRE = regexp.MustCompile(`^config\.toml:(\d+): `)

// FuzzParse feeds arbitrary text to the config parser, in a folder laid
// out as the shipped configs expect (models, models-real, bin, run/...):
// every input is a Config or an error naming config.toml (and a line that
// is in the file), never a panic; and what is accepted is consistent.
func FuzzParse(f *testing.F) {
	checkout, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		f.Fatal(err)
	}
	root := f.TempDir()
	zoo := filepath.Join(checkout, "models")
	if dir := os.Getenv("EDGEINFER_MODELS"); dir != "" {
		zoo = dir
	}
	if err := os.Symlink(zoo, filepath.Join(root, "models")); err != nil {
		f.Fatal(err)
	}
	if dir := os.Getenv("EDGEINFER_REAL_MODELS"); dir != "" {
		if err := os.Symlink(dir, filepath.Join(root, "models-real")); err != nil {
			f.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "run/inbox", "run/faces", "run/photos"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	// The shipped configs, the tests' own, and one with each sensor kind's
	// sample.conf.
	for _, p := range []string{"config.toml", "config.real.toml", "packaging/config.toml"} {
		b, err := os.ReadFile(filepath.Join(checkout, p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	base := valid("models", "bin", "run/inbox")
	f.Add(base)
	for _, name := range sensors.Kinds() {
		kind, _ := sensors.Lookup(name)
		f.Add(base + "\n" + kind.SampleConfig)
	}
	f.Add(base + "[pipelines.faces]\nfrom = \"digits\"\nmodel = \"lenet5\"\n[pipelines.faces.crop]\nclasses = [\"7\"]\n")
	f.Add(base + "[serving.lenet5]\nversion = \"1\"\n[pipelines.digits.tracker]\niou = 0.5\n[systemd]\nstuck_after = \"1s\"\n")
	f.Fuzz(func(t *testing.T, src string) {
		// Not f.Chdir: the fuzzing workers would start there, and go test
		// would write a failing input there instead of into testdata.
		t.Chdir(root)
		c, err := Parse("config.toml", src)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "config.toml:") || strings.ContainsRune(msg, 0) {
				t.Fatalf("the error does not name the file, or holds a NUL: %q", msg)
			}
			if m := errLineRE.FindStringSubmatch(msg); m != nil {
				// A syntax error may be reported on the line after the last.
				n, _ := strconv.Atoi(m[1])
				if lines := strings.Count(src, "\n") + 1; n < 1 || n > lines+1 {
					t.Fatalf("the error names line %d of %d: %v", n, lines, err)
				}
			}
			return
		}
		if !nameRE.MatchString(c.Device) || c.MQTT.QoS < 0 || c.MQTT.QoS > 2 || c.Limits.MaxBytes <= 0 || c.Limits.MaxPixels <= 0 {
			t.Fatalf("accepted: device %q, qos %d, limits %+v", c.Device, c.MQTT.QoS, c.Limits)
		}
		if len(c.Pipelines) == 0 {
			t.Fatal("accepted without a pipeline")
		}
		for name, p := range c.Pipelines {
			_, sensor := c.Sensors[p.Sensor]
			_, from := c.Pipelines[p.From]
			if sensor == from || p.Queue < 1 || p.Timeout.Duration <= 0 {
				t.Fatalf("accepted pipeline %s: %+v", name, p)
			}
		}
	})
}
