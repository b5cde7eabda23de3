package broker

import (
	"crypto/subtle"
	"log/slog"
	"strings"

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
	users     Users // nil: every client is let in
	acl       *ACL  // nil: every topic
	anonymous bool  // clients without a user name are let in
	self      Credentials
	log       *slog.Logger
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
	var ok bool
	switch {
	case h.users == nil:
		ok = true
	case user == "":
		ok = h.anonymous
	default:
		ok = h.users.Check(user, string(pk.Connect.Password))
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
	if cl.Net.Listener == internalListener || h.acl == nil {
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
	ok := h.acl.Allowed(string(cl.Properties.Username), topic, want)
	if !ok && write {
		h.log.Warn("MQTT publish refused by the ACL", "user", string(cl.Properties.Username), "client_id", cl.ID, "topic", topic)
	}
	return ok
}
