// Package brokertest gives tests one site's MQTT files, made the way
// daemon/broker/README.md tells: users in a password file (written by
// mosquitto_passwd and by broker.SetPassword), the example ACL
// (daemon/broker/examples/acl) and TLS material, and starts Mosquitto
// from the example mosquitto.conf on them. Tests of the embedded broker
// and of Mosquitto use the same files, so docs and tests cannot drift.
package brokertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// Passwords of the example ACL's users.
var Passwords = map[string]string{"edgeinferd": "d-pw", "camera": "c-pw", "viewer": "v-pw", "admin": "a-pw"}

// Files are one site's MQTT files, in a folder Mosquitto can read.
type Files struct {
	Dir, Users, ACL      string
	ServerCA, ClientsCA  *mosquitto.CA
	ServerCrt, ServerKey string // issued by ServerCA for 127.0.0.1
}

// Examples is the folder of the example files.
func Examples() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "examples")
}

// Site makes the files.
func Site(t testing.TB) Files {
	t.Helper()
	f := Files{Dir: mosquitto.ReadableDir(t)}
	f.Users = filepath.Join(f.Dir, "passwd")
	// Half the entries from Mosquitto's tool, half from ours: both brokers
	// must take both.
	for _, u := range []string{"viewer", "admin"} {
		MosquittoPasswd(t, f.Users, u, Passwords[u])
	}
	for _, u := range []string{"edgeinferd", "camera"} {
		if err := broker.SetPassword(f.Users, u, Passwords[u]); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(f.Users, 0o644) // Mosquitto reads it as its own user
	acl, err := os.ReadFile(filepath.Join(Examples(), "acl"))
	if err != nil {
		t.Fatal(err)
	}
	f.ACL = filepath.Join(f.Dir, "acl")
	if err := os.WriteFile(f.ACL, acl, 0o644); err != nil {
		t.Fatal(err)
	}
	f.ServerCA = mosquitto.NewCA(t, f.Dir, "server-ca")
	f.ClientsCA = mosquitto.NewCA(t, f.Dir, "clients-ca")
	f.ServerCrt, f.ServerKey = f.ServerCA.Issue(t, f.Dir, "server", true)
	return f
}

// MosquittoPasswd adds user to the password file at path with Mosquitto's
// own tool (-c makes the file).
func MosquittoPasswd(t testing.TB, path, user, password string) {
	t.Helper()
	args := []string{"-b", path, user, password}
	if _, err := os.Stat(path); err != nil {
		args = append([]string{"-c"}, args...)
	}
	if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
	}
}

// StartMosquitto runs Mosquitto configured by the example mosquitto.conf
// on f: its plain listener on the broker's URL, its TLS listener
// (client certificates of ClientsCA required) on the returned address.
func StartMosquitto(t testing.TB, f Files) (b *mosquitto.Broker, tlsAddr string) {
	t.Helper()
	tlsAddr = mosquitto.FreeAddr(t)
	_, tlsPort, _ := strings.Cut(tlsAddr, ":")
	lines := mosquitto.ConfFile(t, filepath.Join(Examples(), "mosquitto.conf"),
		"/etc/mosquitto/edgeinfer.passwd", f.Users, "/etc/mosquitto/edgeinfer.acl", f.ACL,
		"/etc/mosquitto/certs/server.crt", f.ServerCrt, "/etc/mosquitto/certs/server.key", f.ServerKey,
		"/etc/mosquitto/certs/clients-ca.crt", f.ClientsCA.File,
		"listener 1883 127.0.0.1", "listener %d 127.0.0.1", "listener 8883", "listener "+tlsPort+" 127.0.0.1")
	return mosquitto.StartBroker(t, lines...), tlsAddr
}

// Rules reads the users file and the ACL file acl (f.ACL or another), as
// the config check does for the embedded broker.
func (f Files) Rules(t testing.TB, acl string) broker.Rules {
	t.Helper()
	users, err := broker.ReadUsers(f.Users)
	if err != nil {
		t.Fatal(err)
	}
	a, err := broker.ReadACL(acl)
	if err != nil {
		t.Fatal(err)
	}
	return broker.Rules{Users: users, ACL: a}
}
