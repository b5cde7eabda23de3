package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// embeddedConfig is a valid config with the embedded broker and mqtt as
// the [mqtt] table's body, from line 8 on.
func embeddedConfig(t *testing.T, mqtt string) string {
	t.Helper()
	repo, plugins, inbox := fixture(t)
	src := valid(repo, plugins, inbox)
	return strings.Replace(src, "broker = \"tcp://127.0.0.1:1883\"\nqos = 1\n", mqtt, 1)
}

func TestANetworkAddressWithoutUsersIsRefusedNamingTheFix(t *testing.T) {
	dir := t.TempDir()
	users, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	os.WriteFile(users, []byte("admin:$7$101$ErciNP0mXYTfZSQ+$a41bY1WJX49e949YVaDY5lUTvLB6BbZ5TyVGN/KN3d8CAWcNUBtdODL7Qyum8qJDqK/eWLedTooX/sV9Nv/ooQ==\n"), 0o600)
	os.WriteFile(acl, []byte("user admin\ntopic readwrite #\n"), 0o600)
	cert := filepath.Join(dir, "server.crt")
	os.WriteFile(cert, []byte("x"), 0o600)
	for _, c := range []struct{ name, mqtt, err string }{
		{"the default loopback listener", "", ""},
		{"localhost", "listen = \"localhost:1883\"\n", ""},
		{"every interface", "listen = \"0.0.0.0:1883\"\n",
			`config.toml:8: mqtt.listen: "0.0.0.0:1883" is reachable from the network but the embedded broker has no users: set [mqtt.embedded] users_file and acl_file (see daemon/broker/README.md, "Securing MQTT"), or listen on 127.0.0.1`},
		{"no host", "listen = \":1883\"\n", `config.toml:8: mqtt.listen: ":1883" is reachable from the network`},
		{"a TLS listener on the network", "[mqtt.embedded]\ntls_listen = \"0.0.0.0:8883\"\ncert_file = \"" + cert + "\"\nkey_file = \"" + cert + "\"\n",
			`config.toml:9: mqtt.embedded.tls_listen: "0.0.0.0:8883" is reachable from the network but the embedded broker has no users`},
		{"users on the network", "listen = \"0.0.0.0:1883\"\n[mqtt.embedded]\nusers_file = \"" + users + "\"\nacl_file = \"" + acl + "\"\n", ""},
		{"no listener at all", "listen = \"\"\n", `config.toml:8: mqtt.listen: "" turns the plain listener off, but there is no [mqtt.embedded] tls_listen either`},
		{"TLS only", "listen = \"\"\n[mqtt.embedded]\ntls_listen = \"127.0.0.1:8883\"\ncert_file = \"" + cert + "\"\nkey_file = \"" + cert + "\"\n", ""},
		{"TLS without a certificate", "[mqtt.embedded]\ntls_listen = \"127.0.0.1:8883\"\n", `config.toml:9: mqtt.embedded.tls_listen: needs cert_file and key_file`},
		{"an ACL without users", "[mqtt.embedded]\nacl_file = \"" + acl + "\"\n", `config.toml:9: mqtt.embedded.acl_file: needs users_file`},
		{"the embedded table with another broker", "broker = \"tcp://127.0.0.1:1883\"\n[mqtt.embedded]\nusers_file = \"" + users + "\"\n",
			`config.toml:9: mqtt.embedded: only for broker = "embedded"`},
		{"an unknown key", "[mqtt.embedded]\npassword = \"x\"\n", `config.toml:9: mqtt.embedded.password: unknown key`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("config.toml", embeddedConfig(t, c.mqtt))
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.err != "" && (err == nil || !strings.HasPrefix(err.Error(), c.err)):
				t.Fatalf("err = %v\nwant %s", err, c.err)
			}
		})
	}
}

func TestAMistakeInTheACLFileIsReportedWithBothFilesLines(t *testing.T) {
	dir := t.TempDir()
	users, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	os.WriteFile(users, nil, 0o600)
	os.WriteFile(acl, []byte("user cam\npattern write %u/in/#\n"), 0o600)
	_, err := Parse("config.toml", embeddedConfig(t, "[mqtt.embedded]\nusers_file = \""+users+"\"\nacl_file = \""+acl+"\"\n"))
	want := "config.toml:10: mqtt.embedded.acl_file: " + acl + ":2: pattern lines"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}
