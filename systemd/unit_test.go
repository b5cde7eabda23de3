// Package systemd_test checks the files of systemd/ with Debian's own
// systemd tools, offline: there is no systemd running the tests (no PID 1
// to ask), so nothing here starts the unit. How edgeinferd speaks the
// notify protocol is tested in daemon/cmd/edgeinferd (systemd_test.go).
package systemd_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/config"
)

const (
	unit     = "edgeinferd.service"
	sysusers = "sysusers.d/edgeinfer.conf"
	// maxExposure is the most "systemd-analyze security" may say.
	maxExposure = 3.0
	// installedDaemon is where the unit runs edgeinferd from.
	installedDaemon = "/opt/edgeinfer/bin/edgeinferd"
)

// tool finds one of systemd's tools; make sysdeps installs Debian's systemd.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (make sysdeps installs Debian's systemd package): %v", name, err)
	}
	return p
}

// settings reads the unit's Key=Value lines by section ("Service.Type"),
// each key's values in order.
func settings(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

// verifiable writes the unit into a temporary folder with ExecStart naming
// an edgeinferd built for the test: "systemd-analyze verify" checks that
// the command exists and is executable, and /opt/edgeinfer is not there on
// a build machine. (--root= would not do: it looks for every unit the
// service depends on, sysinit.target and the rest, under the root too.)
func verifiable(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	daemon := filepath.Join(dir, "edgeinferd")
	if out, err := exec.Command("go", "build", "-o", daemon, "../daemon/cmd/edgeinferd").CombinedOutput(); err != nil {
		t.Fatalf("go build edgeinferd: %v\n%s", err, out)
	}
	src, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "ExecStart="+installedDaemon+" ") {
		t.Fatalf("%s: ExecStart does not run %s", unit, installedDaemon)
	}
	path := filepath.Join(dir, unit)
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(src), installedDaemon, daemon)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// systemd-analyze verify exits 0 even for an unknown key (a typo); it only
// warns. Silence is what passes.
func TestTheUnitPassesSystemdAnalyzeVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	out, err := exec.Command(analyze, "verify", "--man=no", verifiable(t)).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(unit) + `: (\d+\.\d)`)

// The unit file as it is in the repository, assessed offline (systemd >=
// 250); --threshold is in tenths.
func TestTheUnitsSecurityExposureIsAtMost3(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	threshold := strconv.Itoa(int(maxExposure * 10))
	out, err := exec.Command(analyze, "security", "--offline=true", "--threshold="+threshold, unit).CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v; no overall exposure in:\n%s", err, out)
	}
	exposure, _ := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || exposure > maxExposure {
		t.Fatalf("exposure %.1f (at most %.1f): %v\n%s", exposure, maxExposure, err, out)
	}
	t.Logf("systemd-analyze security --offline=true %s: exposure %.1f", unit, exposure)
}

// What the daemon relies on, and what must stay out.
func TestTheUnitIsANotifyServiceWithAWatchdogAndTheHardeningItNeeds(t *testing.T) {
	s := settings(t)
	for key, want := range map[string]string{
		"Service.Type":                    "notify",
		"Service.NotifyAccess":            "main", // not the plugins
		"Service.ExecReload":              "/bin/kill -HUP $MAINPID",
		"Service.Restart":                 "on-failure",
		"Service.WatchdogSec":             "2min",
		"Service.User":                    "edgeinfer",
		"Service.StateDirectory":          "edgeinfer",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.ProtectHome":             "yes",
		"Service.PrivateTmp":              "yes",
		"Service.CapabilityBoundingSet":   "",
		"Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"Service.DeviceAllow":             "char-video4linux rw",
		"Service.KillMode":                "mixed",
		"Service.LimitNICE":               "+0",
	} {
		if got, ok := s[key]; !ok || got[len(got)-1] != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if got := s["Service.SystemCallFilter"]; len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("SystemCallFilter = %q, want @system-service first", got)
	}
	for _, f := range s["Service.SystemCallFilter"] {
		if strings.Contains(f, "@resources") {
			t.Errorf("SystemCallFilter %q: edgeinferd renices its plugins (setpriority is in @resources)", f)
		}
	}
	for _, key := range []string{
		"Service.MemoryDenyWriteExecute", // TensorFlow's JIT kernels (README)
		"Service.PrivateDevices",         // would hide /dev/video*
		"Service.DynamicUser",            // the user is sysusers.d's, which owns the model repository
	} {
		if v, ok := s[key]; ok {
			t.Errorf("%s=%q is set; see README.md for why it must not be", key, v)
		}
	}
}

// The broker password reaches the daemon as a credential, and a device
// without /etc/edgeinfer/mqtt-password still starts: LoadCredential= alone
// would fail the start when the file is missing, so SetCredential= gives
// the same credential a default, whose empty first line edgeinferd refuses
// as a password (rather than sending an empty one to the broker).
func TestTheMQTTPasswordIsACredentialWhoseAbsenceDoesNotStopTheUnit(t *testing.T) {
	s := settings(t)
	if got := s["Service.LoadCredential"]; len(got) != 1 || got[0] != "mqtt-password:/etc/edgeinfer/mqtt-password" {
		t.Fatalf("LoadCredential = %q", got)
	}
	got := s["Service.SetCredential"]
	if len(got) != 1 || !strings.HasPrefix(got[0], "mqtt-password:") {
		t.Fatalf("SetCredential = %q, want a default for mqtt-password", got)
	}
	// systemd unescapes the value C-style ("\n").
	value, err := strconv.Unquote(`"` + strings.TrimPrefix(got[0], "mqtt-password:") + `"`)
	if err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	if err := os.WriteFile(filepath.Join(creds, "mqtt-password"), []byte(value), 0o400); err != nil {
		t.Fatal(err)
	}
	m := config.MQTT{PasswordFile: filepath.Join(creds, "mqtt-password")}
	if pw, err := m.ReadPassword(); err == nil {
		t.Fatalf("the default credential %q is taken as the password %q", value, pw)
	}
}

// The user the unit runs as is the one sysusers.d creates, and the file is
// one systemd-sysusers takes (an unknown or short line fails it), tried on
// an empty root.
func TestSysusersCreatesTheUnitsUser(t *testing.T) {
	sysusersBin := tool(t, "systemd-sysusers")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(sysusers)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sysusersBin, "--dry-run", "--root="+root, abs).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	user := settings(t)["Service.User"][0]
	if !strings.Contains(string(out), "Creating user '"+user+"'") || !strings.Contains(string(out), "Creating group '"+user+"'") {
		t.Fatalf("systemd-sysusers would not create %s:\n%s", user, out)
	}
	if strings.Contains(string(out), abs+":") {
		t.Fatalf("systemd-sysusers complained about a line:\n%s", out)
	}
}
