package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

func TestPasswdWritesAFileMosquittoLogsInWith(t *testing.T) {
	dir := mosquitto.ReadableDir(t)
	file := filepath.Join(dir, "passwd")
	var out strings.Builder
	if code := passwd([]string{file, "camera"}, strings.NewReader("s3cret pass\n"), &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if code := passwd([]string{file, "viewer"}, strings.NewReader("other"), &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	b, _ := os.ReadFile(file)
	if strings.Contains(string(b), "s3cret") {
		t.Fatalf("the file holds the password:\n%s", b)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("a new password file has mode %v, want 0600", st.Mode().Perm())
	}
	os.Chmod(file, 0o644) // Mosquitto reads it as its own user
	b2 := mosquitto.StartBroker(t, "allow_anonymous false", "password_file "+file)
	login := func(user, password string) error {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(b2.URL).SetClientID(fmt.Sprint(time.Now().UnixNano())).
			SetUsername(user).SetPassword(password).SetAutoReconnect(false))
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	if err := login("camera", "s3cret pass"); err != nil {
		t.Fatalf("Mosquitto refused camera's password: %v", err)
	}
	if err := login("viewer", "other"); err != nil {
		t.Fatalf("Mosquitto refused viewer's password (read without a final newline): %v", err)
	}
	if err := login("camera", "other"); err == nil {
		t.Fatal("Mosquitto let camera in with viewer's password")
	}
}

func TestPasswdTakesNoPasswordFromTheCommandLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	var out strings.Builder
	if code := passwd([]string{file, "camera", "s3cret"}, strings.NewReader("x\n"), &out); code != 2 || !strings.Contains(out.String(), "never from the command line") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if code := passwd([]string{file, "camera"}, strings.NewReader(""), &out); code != 1 {
		t.Fatalf("an empty standard input: exit %d: %s", code, out.String())
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("a password file was written without a password")
	}
}
