package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/daemon/broker/brokertest"
	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// secret is a password no log line or payload could hold by chance.
func secret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "pw-" + hex.EncodeToString(b)
}

// passwordBroker starts a Mosquitto that takes only the users of logins
// (name: password), made with mosquitto_passwd.
func passwordBroker(t *testing.T, logins map[string]string) *mosquitto.Broker {
	t.Helper()
	file := filepath.Join(mosquitto.ReadableDir(t), "passwd")
	for user, pw := range logins {
		brokertest.MosquittoPasswd(t, file, user, pw)
	}
	if err := os.Chmod(file, 0o644); err != nil { // Mosquitto reads it as its own user
		t.Fatal(err)
	}
	return mosquitto.StartBroker(t, "allow_anonymous false", "password_file "+file)
}

// writeSecretFile writes a password file of the daemon's, readable by its
// owner only, and returns its path.
func writeSecretFile(t *testing.T, pw string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mqtt-password")
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// authConfig is a digits daemon at log level debug in format, on broker
// as user edge, with auth (the password_file line, or nothing) in [mqtt].
func authConfig(t *testing.T, broker, prefix, format, auth, inbox string) string {
	return fmt.Sprintf(`device = "e2e"
plugin_dir = %q
stats_interval = "500ms"

[log]
level = "debug"
format = %q

[models]
repository = %q
threads = 1

[mqtt]
broker = %q
prefix = %q
username = "edge"
connect_timeout = "5s"
%s
%s%s`, binDir, format, models(t), broker, prefix, auth, dirSensor(inbox), digitsPipeline)
}

// exited waits for a daemon that must stop by itself and returns its exit
// code.
func (p *proc) exited(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("edgeinferd still runs after %s", within)
		return 0
	}
}

// The broker password, from a file (JSON logs) or from
// EDGEINFER_MQTT_PASSWORD (text logs), takes the daemon onto a Mosquitto
// that requires it, and a run with a wrong password file fails to connect;
// at log level debug, through results, bad inputs, a reload and the stop,
// neither the password nor the wrong one ever shows in the daemon's output
// (its plugins' included) nor in anything published under its prefix.
func TestTheMQTTPasswordNeverShowsInTheLogsNorOnAnyTopic(t *testing.T) {
	pw, watcherPW, wrong := secret(t), secret(t), secret(t)
	broker := passwordBroker(t, map[string]string{"edge": pw, "watcher": watcherPW})
	ds := digits(t)[:3]
	for _, tc := range []struct {
		name, format string
		env          string // EDGEINFER_MQTT_PASSWORD
		file         string // password_file's content
	}{
		{"from a file, JSON logs", "json", "", pw},
		{"from the environment, text logs", "text", pw, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(config.PasswordEnv, tc.env)
			auth := ""
			if tc.file != "" {
				auth = fmt.Sprintf("password_file = %q", writeSecretFile(t, tc.file))
			}
			prefix, inbox := prefixOf(t), t.TempDir()
			w := watch(t, "tcp://watcher:"+watcherPW+"@"+broker.Addr, prefix)
			p := start(t, authConfig(t, broker.URL, prefix, tc.format, auth, inbox))
			w.serving(t, p, "lenet5", "digits")
			dropDigits(t, inbox, ds)
			if err := os.WriteFile(filepath.Join(inbox, "torn.png"), ds[0].png[:100], 0o644); err != nil {
				t.Fatal(err)
			}
			waitFor(t, p, 60*time.Second, "3 results and a bad input", func() bool {
				return len(w.results(t, "digits")) == 3 && len(w.eventsOf(t, payload.EventBadInput)) == 1
			})
			p.cmd.Process.Signal(syscall.SIGHUP)
			waitFor(t, p, 30*time.Second, "the reload", func() bool { return len(w.eventsOf(t, payload.EventConfigReloaded)) == 1 })
			if code := p.stop(t); code != 0 {
				t.Fatalf("edgeinferd exited %d", code)
			}
			waitFor(t, nil, 10*time.Second, "offline", func() bool { return w.last("status") == "offline" })
			log := p.stderr.String()
			if !strings.Contains(log, "mqtt connected") || !strings.Contains(log, "DEBUG") || (tc.format == "json") != strings.HasPrefix(log, "{") {
				t.Fatalf("not the %s debug log of a connected daemon:\n%s", tc.format, log)
			}
			if strings.Contains(log, pw) {
				t.Fatalf("the password shows in the log:\n%s", log)
			}
			topics := map[string]int{}
			w.mu.Lock()
			msgs := slices.Clone(w.msgs)
			w.mu.Unlock()
			for _, m := range msgs {
				topics[m.topic]++
				if strings.Contains(string(m.payload), pw) {
					t.Fatalf("the password shows on %s: %s", m.topic, m.payload)
				}
			}
			for _, topic := range []string{"status", "events", "digits/result", "models/lenet5", "stats"} {
				if topics[topic] == 0 {
					t.Fatalf("nothing was published on %s (seen: %v)", topic, topics)
				}
			}
			t.Logf("%d log lines, %d messages %v: no password", strings.Count(log, "\n"), len(msgs), topics)
		})
	}

	t.Run("a wrong password file", func(t *testing.T) {
		t.Setenv(config.PasswordEnv, "")
		auth := fmt.Sprintf("password_file = %q", writeSecretFile(t, wrong))
		p := start(t, authConfig(t, broker.URL, prefixOf(t), "text", auth, t.TempDir()))
		if code := p.exited(t, 30*time.Second); code != 1 {
			t.Fatalf("edgeinferd exited %d, want 1", code)
		}
		log := p.stderr.String()
		if !strings.Contains(log, "not Authorized") {
			t.Fatalf("the log does not say the broker refused the login:\n%s", log)
		}
		if strings.Contains(log, wrong) || strings.Contains(log, pw) {
			t.Fatalf("a password shows in the log:\n%s", log)
		}
	})

	t.Run("a password in config.toml", func(t *testing.T) {
		t.Setenv(config.PasswordEnv, "")
		src := authConfig(t, broker.URL, prefixOf(t), "text", fmt.Sprintf("password = %q", pw), t.TempDir())
		line := strings.Count(src[:strings.Index(src, "password =")], "\n") + 1
		p := start(t, src)
		if code := p.exited(t, 10*time.Second); code != 2 {
			t.Fatalf("edgeinferd exited %d, want 2 (a config error)", code)
		}
		log := p.stderr.String()
		want := regexp.MustCompile(fmt.Sprintf(`config\.toml:%d: mqtt\.password: the password is not written in config\.toml: .*password_file.*%s`, line, config.PasswordEnv))
		if !want.MatchString(log) {
			t.Fatalf("the error does not name line %d, the key and the fix:\n%s", line, log)
		}
		if strings.Contains(log, pw) {
			t.Fatalf("the error repeats the password:\n%s", log)
		}
	})
}

// edgeinferd watch logs in to a broker that requires a password as the
// daemon would, from the same config, and shows no password either.
func TestWatchLogsInWithTheDaemonsPasswordFile(t *testing.T) {
	t.Setenv(config.PasswordEnv, "")
	pw, watcherPW := secret(t), secret(t)
	broker := passwordBroker(t, map[string]string{"edge": pw, "watcher": watcherPW})
	prefix := prefixOf(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	src := authConfig(t, broker.URL, prefix, "text", fmt.Sprintf("password_file = %q", writeSecretFile(t, pw)), t.TempDir())
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(filepath.Join(binDir, "edgeinferd"), "watch", "-json", "-config", path)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitFor(t, nil, 20*time.Second, "edgeinferd watch to connect", func() bool { return strings.Contains(out.String(), "watching "+prefix) })
	w := watch(t, "tcp://watcher:"+watcherPW+"@"+broker.Addr, prefix)
	w.publish(t, prefix+"/events", []byte(`{"type":"hello"}`))
	waitFor(t, nil, 20*time.Second, "the event in edgeinferd watch's output", func() bool { return strings.Contains(out.String(), `events {"type":"hello"}`) })
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if strings.Contains(out.String(), pw) {
		t.Fatalf("the password shows in edgeinferd watch's output:\n%s", out)
	}
}
