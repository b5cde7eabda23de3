// Package broker runs the embedded MQTT broker (mochi-mqtt v2) that
// `broker = "embedded"` asks for: a first run needs nothing else installed.
//
// It listens on a plain TCP address, a TLS address (optionally requiring
// client certificates), or both. With a users file (Mosquitto's
// password_file format, see ReadUsers) clients must log in, and with an
// acl_file (Mosquitto's format, see ReadACL) each user reaches only the
// topics granted to it: the same two files serve Mosquitto and the
// embedded broker (README.md, "Securing MQTT"). The daemon itself connects
// on a loopback listener of its own with Credentials made at random at
// every start.
package broker

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeinfer/edgeinfer/internal/pemfile"
)

// Options configure the embedded broker.
type Options struct {
	// Listen is the plain MQTT address (host:port; port 0 picks a free
	// one); "" opens none.
	Listen string
	// TLSListen is the MQTT-over-TLS address; "" opens none. CertFile and
	// KeyFile are its certificate chain and key (PEM).
	TLSListen, CertFile, KeyFile string
	// ClientCAFile, when set, makes the TLS listener require a client
	// certificate signed by one of its CAs (PEM).
	ClientCAFile string
	// Rules are who may connect and what each client may do (ReadRules);
	// the zero Rules let every client in and give it every topic.
	Rules  Rules
	Logger *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	server   *mqtt.Server
	addr     string // the plain listener's, "" without
	tlsAddr  string // the TLS listener's, "" without
	internal string // the daemon's own listener's
	self     Credentials
	access   *accessHook
	log      *slog.Logger
}

// internalListener is the id of the loopback listener the daemon connects
// on; only Credentials are accepted there.
const internalListener = "internal"

// Start listens and serves. Errors name the option at fault.
func Start(o Options) (*Broker, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Listen == "" && o.TLSListen == "" {
		return nil, errors.New("embedded broker: neither a plain nor a TLS address to listen on")
	}
	h := &accessHook{self: newCredentials(), log: o.Logger}
	h.rules.Store(&o.Rules)
	b := &Broker{self: h.self, access: h, log: o.Logger}
	type listener struct {
		id, addr string
		tls      *tls.Config
		bound    *string
	}
	ls := []listener{{id: internalListener, addr: "127.0.0.1:0", bound: &b.internal}}
	if o.Listen != "" {
		ls = append(ls, listener{id: "tcp", addr: o.Listen, bound: &b.addr})
	}
	if o.TLSListen != "" {
		tc, err := serverTLS(o)
		if err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
		ls = append(ls, listener{id: "tls", addr: o.TLSListen, tls: tc, bound: &b.tlsAddr})
	}
	b.server = mqtt.New(&mqtt.Options{InlineClient: false, Logger: o.Logger})
	if err := b.server.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	for _, l := range ls {
		// Bind first so that a busy port is an error here, not in a goroutine.
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
		*l.bound = ln.Addr().String()
		ln.Close()
		if err := b.server.AddListener(listeners.NewTCP(listeners.Config{ID: l.id, Address: *l.bound, TLSConfig: l.tls})); err != nil {
			return nil, fmt.Errorf("embedded broker on %s: %w", *l.bound, err)
		}
	}
	if err := b.server.Serve(); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	o.Logger.Info("embedded MQTT broker access", "users", len(o.Rules.Users), "acl", o.Rules.ACL != nil, "anonymous", o.Rules.anonymous(),
		"client_certificates", o.ClientCAFile != "")
	return b, nil
}

// SetRules replaces the broker's rules (a reload, which reads the files
// again as Mosquitto does on SIGHUP): the ACL applies to every later
// publish and delivery, the users to every later login. Connected clients
// who would no longer get in are disconnected and counted in the answer:
// a user removed from the users file or whose password changed, a client
// without a user name when anonymous clients are no longer let in, and
// every client let in without a password when there was no users file
// before.
func (b *Broker) SetRules(a Rules) (disconnected int) {
	old := b.access.rules.Swap(&a)
	for _, cl := range b.server.Clients.GetAll() {
		user := string(cl.Properties.Username)
		if cl.Net.Listener == internalListener || cl.Closed() || a.stillIn(old, user) {
			continue
		}
		b.log.Warn("MQTT client disconnected: its login is no longer valid", "user", user, "client_id", cl.ID, "remote", cl.Net.Remote)
		b.server.DisconnectClient(cl, packets.ErrNotAuthorized)
		disconnected++
	}
	b.log.Info("embedded MQTT broker rules replaced", "users", len(a.Users), "acl", a.ACL != nil, "anonymous", a.anonymous(),
		"disconnected", disconnected)
	return disconnected
}

// serverTLS is the TLS listener's config.
func serverTLS(o Options) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file/key_file: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if o.ClientCAFile != "" {
		pool, err := pemfile.CertPool(o.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client_ca_file: %w", err)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Addr is the plain listener's address ("" without one).
func (b *Broker) Addr() string { return b.addr }

// TLSAddr is the TLS listener's address ("" without one).
func (b *Broker) TLSAddr() string { return b.tlsAddr }

// URL is where the daemon connects, with Credentials: a loopback
// listener of its own.
func (b *Broker) URL() string { return "tcp://" + b.internal }

// Credentials are the daemon's own user name and password for URL.
func (b *Broker) Credentials() Credentials { return b.self }

// Close disconnects every client and stops listening.
func (b *Broker) Close() error { return b.server.Close() }

// Credentials are the daemon's identity on its embedded broker, made at
// random at every start and known only to the process: no file holds
// them. They grant every topic, and only on the daemon's own listener.
// The password is never printed: fmt and log/slog show it as [redacted].
type Credentials struct {
	Username string
	password string
}

func newCredentials() Credentials {
	return Credentials{Username: "edgeinferd-" + rand.Text()[:10], password: rand.Text() + rand.Text()}
}

// Password is the password, for the MQTT client and nothing else.
func (c Credentials) Password() string { return c.password }

// String shows the user name only.
func (c Credentials) String() string { return c.Username + ":[redacted]" }

// Format prints String for every verb, %#v included.
func (c Credentials) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// LogValue logs String.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }
