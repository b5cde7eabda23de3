package broker

import (
	"crypto/subtle"
	"log/slog"
	"strings"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// accessHook decides who may connect and what each client may publish
// and receive, the way Mosquitto does with the same password_file and
// acl_file. mochi's own auth.Ledger is not used: it compares plain-text
// passwords, lets a client do what no rule mentions, and takes the first
// rule of a user it finds in a map (in random order) instead of letting a
// deny win; a file working with Mosquitto would grant more here.
type accessHook struct {
	mqtt.HookBase
	rules atomic.Pointer[Rules] // replaced whole by Broker.SetRules
	self  Credentials
	log   *slog.Logger
}

// Rules are who may use the broker and how: the users and ACL files'
// contents (ReadUsers, ReadACL). The config check reads them
// ([mqtt.embedded]), so that a mistake is reported with its file and line
// by -check and by a refused reload, and hands them over.
type Rules struct {
	Users Users // nil: every client is let in
	ACL   *ACL  // nil: every topic
	// AllowAnonymous lets clients without a user name in when there are
	// Users; they get the ACL's anonymous rules.
	AllowAnonymous bool
}

// anonymous reports whether clients without a user name are let in.
func (a *Rules) anonymous() bool { return a.Users == nil || a.AllowAnonymous }

// stillIn reports whether a client logged in as user under old may stay
// under a: a client without a user name while anonymous clients are let
// in, and a user whose password file entry is the same (its password
// unchanged). A client let in because old had no users file has shown no
// password, and must log in again.
func (a *Rules) stillIn(old *Rules, user string) bool {
	switch {
	case a.Users == nil:
		return true
	case user == "":
		return a.AllowAnonymous
	case old.Users == nil:
		return false
	}
	now, ok := a.Users[user]
	before, was := old.Users[user]
	return ok && was && now.String() == before.String()
}

func (h *accessHook) ID() string { return "edgeinfer-access" }

func (h *accessHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate lets the daemon in on its own listener (and no one
// else there), and other clients in on the others by their password file
// entry.
func (h *accessHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	if cl.Net.Listener == internalListener {
		return user == h.self.Username && subtle.ConstantTimeCompare(pk.Connect.Password, []byte(h.self.password)) == 1
	}
	a := h.rules.Load()
	var ok bool
	switch {
	case a.Users == nil:
		ok = true
	case user == "":
		ok = a.AllowAnonymous
	default:
		ok = a.Users.Check(user, string(pk.Connect.Password))
	}
	if !ok {
		h.log.Warn("MQTT client refused: not authorised", "user", user, "client_id", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
	}
	return ok
}

// OnACLCheck is asked before a publish (write) and before each message is
// delivered (read, the message's topic). It is also asked for each
// subscription's filter: as Mosquitto does, a filter with wildcards is
// accepted and each message it brings is checked on delivery; a filter
// without wildcards is the topic itself and is checked for read.
func (h *accessHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	acl := h.rules.Load().ACL
	if cl.Net.Listener == internalListener || acl == nil {
		return true
	}
	if rest, ok := strings.CutPrefix(topic, "$share/"); ok {
		_, topic, _ = strings.Cut(rest, "/") // $share/<group>/<filter>
	}
	want := Read
	if write {
		want = Write
	} else if strings.ContainsAny(topic, "+#") {
		return true
	}
	ok := acl.Allowed(string(cl.Properties.Username), topic, want)
	if !ok && write {
		h.log.Warn("MQTT publish refused by the ACL", "user", string(cl.Properties.Username), "client_id", cl.ID, "topic", topic)
	}
	return ok
}
