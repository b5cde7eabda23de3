package config

import (
	"net"
	"os"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
)

// securingGuide is where a refused broker setting is explained.
const securingGuide = "daemon/broker/README.md, \"Securing MQTT\""

// checkEmbedded checks [mqtt] listen and [mqtt.embedded] for the embedded
// broker. The users and ACL files are read here (BrokerRules), so that a
// mistake in them is reported by -check, at start and by a reload with its
// file and line. An
// address other hosts can reach is refused while every client would be
// let in.
func (c *Config) checkEmbedded() error {
	m, e := c.MQTT, c.MQTT.Embedded
	if m.Listen == "" && e.TLSListen == "" {
		return c.errf("mqtt.listen", "\"\" turns the plain listener off, but there is no [mqtt.embedded] tls_listen either: the broker would not listen at all")
	}
	for _, l := range []struct{ key, addr string }{{"mqtt.listen", m.Listen}, {"mqtt.embedded.tls_listen", e.TLSListen}} {
		if l.addr == "" {
			continue
		}
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil {
			return c.errf(l.key, "%q is not host:port", l.addr)
		}
		if e.UsersFile == "" && !loopback(host) {
			return c.errf(l.key, "%q is reachable from the network but the embedded broker has no users: "+
				"set [mqtt.embedded] users_file and acl_file (see %s), or listen on 127.0.0.1", l.addr, securingGuide)
		}
	}
	if e.TLSListen != "" && (e.CertFile == "" || e.KeyFile == "") {
		return c.errf("mqtt.embedded.tls_listen", "needs cert_file and key_file (PEM)")
	}
	if e.TLSListen == "" {
		for _, f := range []struct{ key, path string }{{"cert_file", e.CertFile}, {"key_file", e.KeyFile}, {"client_ca_file", e.ClientCAFile}} {
			if f.path != "" {
				return c.errf("mqtt.embedded."+f.key, "only with tls_listen")
			}
		}
	}
	if e.ACLFile != "" && e.UsersFile == "" {
		return c.errf("mqtt.embedded.acl_file", "needs users_file: without logins a client could claim any user's rules")
	}
	if e.AllowAnonymous && e.UsersFile == "" {
		return c.errf("mqtt.embedded.allow_anonymous", "only with users_file (without it every client is let in)")
	}
	for key, f := range map[string]string{"mqtt.embedded.cert_file": e.CertFile, "mqtt.embedded.key_file": e.KeyFile, "mqtt.embedded.client_ca_file": e.ClientCAFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return c.errf(key, "%v", err)
		}
	}
	r := broker.Rules{AllowAnonymous: e.AllowAnonymous}
	var err error
	if e.UsersFile != "" {
		if r.Users, err = broker.ReadUsers(e.UsersFile); err != nil {
			return c.errf("mqtt.embedded.users_file", "%v", err)
		}
	}
	if e.ACLFile != "" {
		if r.ACL, err = broker.ReadACL(e.ACLFile); err != nil {
			return c.errf("mqtt.embedded.acl_file", "%v", err)
		}
	}
	c.brokerRules = r
	return nil
}

// BrokerRules are the embedded broker's users and ACL, as the config's
// files held them when it was checked.
func (c *Config) BrokerRules() broker.Rules { return c.brokerRules }

// loopback reports whether host (of host:port) can only be reached from
// this machine: "localhost" or a loopback address. "" and 0.0.0.0 are
// every interface.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
