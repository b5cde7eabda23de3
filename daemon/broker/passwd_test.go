package broker_test

import (
	"crypto/sha512"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
	"github.com/edgeinfer/edgeinfer/daemon/broker/brokertest"
)

func TestAPasswordFileWrittenByMosquittoPasswdChecksItsPasswords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	brokertest.MosquittoPasswd(t, path, "alice", "correct horse")
	brokertest.MosquittoPasswd(t, path, "bob", "battery staple")
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "alice:$7$101$") {
		t.Fatalf("mosquitto_passwd wrote another format than the one tested:\n%s", b)
	}
	users, err := broker.ReadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, password string
		ok             bool
	}{
		{"alice", "correct horse", true},
		{"bob", "battery staple", true},
		{"alice", "battery staple", false},
		{"alice", "correct hors", false},
		{"carol", "correct horse", false},
		{"alice", "", false},
	} {
		if got := users.Check(c.user, c.password); got != c.ok {
			t.Errorf("Check(%q, %q) = %v, want %v", c.user, c.password, got, c.ok)
		}
	}
}

func TestSetPasswordReplacesOneUsersEntryAndKeepsTheOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	brokertest.MosquittoPasswd(t, path, "alice", "old")
	brokertest.MosquittoPasswd(t, path, "bob", "bob's")
	if err := broker.SetPassword(path, "alice", "new"); err != nil {
		t.Fatal(err)
	}
	if err := broker.SetPassword(path, "carol", "carol's"); err != nil {
		t.Fatal(err)
	}
	users, err := broker.ReadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 3 || users.Check("alice", "old") || !users.Check("alice", "new") || !users.Check("bob", "bob's") || !users.Check("carol", "carol's") {
		t.Fatalf("after SetPassword: %d users; alice old %v new %v, bob %v, carol %v", len(users),
			users.Check("alice", "old"), users.Check("alice", "new"), users.Check("bob", "bob's"), users.Check("carol", "carol's"))
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "new") || !strings.HasPrefix(string(b), "alice:$7$101$") {
		t.Fatalf("the file holds a plain password or lost its order:\n%s", b)
	}
	if err := broker.SetPassword(path, "da:ve", "x"); err == nil {
		t.Fatal("a user name with ':' was accepted")
	}
}

func TestASalted512HashOfMosquitto1IsAccepted(t *testing.T) {
	salt := []byte("0123456789ab")
	sum := sha512.Sum512(append([]byte("pw"), salt...))
	path := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(path, []byte("old:$6$"+base64.StdEncoding.EncodeToString(salt)+"$"+base64.StdEncoding.EncodeToString(sum[:])+"\n"), 0o600)
	users, err := broker.ReadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if !users.Check("old", "pw") || users.Check("old", "pw2") {
		t.Fatal("a $6$ entry does not check its password")
	}
}

func TestAPasswordFileWithAPlainPasswordIsRefusedNamingTheLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(path, []byte("# users\nalice:secret\n"), 0o600)
	_, err := broker.ReadUsers(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: user \"alice\": the hash is neither") {
		t.Fatalf("err = %v", err)
	}
}
