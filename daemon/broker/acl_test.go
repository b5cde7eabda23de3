package broker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
)

func writeACL(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTheACLGrantsWhatItsRulesSayAndDeniesTheRest(t *testing.T) {
	acl, err := broker.ReadACL(writeACL(t, `# anonymous
topic read public/#

user cam
topic write	site/+/in/#
topic site/+/both
topic deny site/secret/in/x

user ops
topic readwrite #
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, topic string
		want        broker.Access
		ok          bool
	}{
		{"", "public/a/b", broker.Read, true},
		{"", "public", broker.Read, true}, // "a/#" matches "a" too
		{"", "public/a", broker.Write, false},
		{"cam", "public/a", broker.Read, false}, // anonymous rules are for anonymous clients
		{"cam", "site/d1/in/front", broker.Write, true},
		{"cam", "site/d1/in/front", broker.Read, false},
		{"cam", "site/d1/in", broker.Write, true},
		{"cam", "site/d1/out", broker.Write, false},
		{"cam", "site/d1/both", broker.Read, true}, // no access word: readwrite
		{"cam", "site/d1/both", broker.Write, true},
		{"cam", "site/secret/in/x", broker.Write, false}, // deny wins over the grant above
		{"nobody", "site/d1/in/front", broker.Write, false},
		{"ops", "anything/at/all", broker.Write, true},
		{"ops", "$SYS/broker/uptime", broker.Read, false}, // a leading wildcard matches no $ topic
	} {
		if got := acl.Allowed(c.user, c.topic, c.want); got != c.ok {
			t.Errorf("Allowed(%q, %q, %d) = %v, want %v", c.user, c.topic, c.want, got, c.ok)
		}
	}
}

func TestAnUnsupportedACLLineIsAnErrorNamingTheFileAndLine(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"user a\npattern write %u/in/#\n", ":2: pattern lines"},
		{"user a\ntopic read a/#/b\n", ":2: topic \"a/#/b\": '#' must be the last level"},
		{"\n\nallow a\n", ":3: \"allow\": not a user or topic line"},
		{"user\n", ":1: user: no user name"},
	} {
		path := writeACL(t, c.text)
		_, err := broker.ReadACL(path)
		if err == nil || !strings.HasPrefix(err.Error(), path+c.want) {
			t.Errorf("%q: err = %v, want %s%s", c.text, err, path, c.want)
		}
	}
}
