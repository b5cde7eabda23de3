package broker_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
	"github.com/edgeinfer/edgeinfer/daemon/broker/brokertest"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// site is a broker serving files: plain URL and TLS URL.
type site struct{ url, tlsURL string }

// brokers start the embedded broker and Mosquitto on the same files, each
// as its example config (examples/embedded.toml, examples/mosquitto.conf)
// sets it up.
var brokers = []struct {
	name  string
	start func(t *testing.T, f brokertest.Files) site
}{
	{"embedded", func(t *testing.T, f brokertest.Files) site {
		b, err := broker.Start(broker.Options{Listen: "127.0.0.1:0", TLSListen: "127.0.0.1:0", CertFile: f.ServerCrt, KeyFile: f.ServerKey,
			ClientCAFile: f.ClientsCA.File, Rules: f.Rules(t, f.ACL), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return site{url: "tcp://" + b.Addr(), tlsURL: "ssl://" + b.TLSAddr()}
	}},
	{"mosquitto", func(t *testing.T, f brokertest.Files) site {
		b, tlsAddr := brokertest.StartMosquitto(t, f)
		return site{url: b.URL, tlsURL: "ssl://" + tlsAddr}
	}},
}

// client is a connected MQTT client recording what it receives.
type client struct {
	paho.Client
	mu  sync.Mutex
	got []string // topic=payload
}

func dial(url, user, password string, tc *tls.Config) (*client, error) {
	c := &client{}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("%s-%d", user, time.Now().UnixNano())).
		SetUsername(user).SetPassword(password).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false).
		SetOrderMatters(true).SetTLSConfig(tc)
	c.Client = paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("no CONNACK within 10s")
	}
	return c, tok.Error()
}

func mustDial(t *testing.T, url, user string) *client {
	t.Helper()
	c, err := dial(url, user, brokertest.Passwords[user], nil)
	if err != nil {
		t.Fatalf("%s cannot connect to %s: %v", user, url, err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func (c *client) subscribe(t *testing.T, filter string) {
	t.Helper()
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		c.mu.Lock()
		c.got = append(c.got, m.Topic()+"="+string(m.Payload()))
		c.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

// publish0 publishes at QoS 0: a refused publish is dropped silently by
// both brokers (at QoS 1 the embedded one disconnects an MQTT 3.1.1
// client, Mosquitto acknowledges it).
func (c *client) publish0(t *testing.T, topic, payload string) {
	t.Helper()
	if tok := c.Publish(topic, 0, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// received waits until every message of awaited has arrived and returns
// everything received, in order.
func (c *client) received(t *testing.T, awaited ...string) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		got := slices.Clone(c.got)
		c.mu.Unlock()
		if !slices.ContainsFunc(awaited, func(m string) bool { return !slices.Contains(got, m) }) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q did not all arrive; got %q", awaited, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refused reports whether err is a broker's refusal of the login (not a
// network failure).
func refused(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "not Authorized") || strings.Contains(err.Error(), "bad user name or password"))
}

func TestTheExampleACLGivesEachUserTheSameTopicsOnBothBrokers(t *testing.T) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			f := brokertest.Site(t)
			s := b.start(t, f)

			if _, err := dial(s.url, "", "", nil); !refused(err) {
				t.Errorf("an anonymous client: err = %v, want a refused login", err)
			}
			if _, err := dial(s.url, "admin", "v-pw", nil); !refused(err) {
				t.Errorf("admin with viewer's password: err = %v, want a refused login", err)
			}

			const p = "edgeinfer/dev1/"
			daemon := mustDial(t, s.url, "edgeinferd")
			daemon.subscribe(t, "edgeinfer/#")
			viewer, camera, admin := mustDial(t, s.url, "viewer"), mustDial(t, s.url, "camera"), mustDial(t, s.url, "admin")
			viewer.subscribe(t, "edgeinfer/#")
			admin.subscribe(t, "edgeinfer/#")
			camera.subscribe(t, "edgeinfer/#")

			viewer.publish0(t, p+"cmd", "viewer's command")
			viewer.publish0(t, p+"in/front", "viewer's image")
			camera.publish0(t, p+"cmd", "camera's command")
			camera.publish0(t, p+"in/front", "camera's image")
			admin.publish0(t, p+"in/front", "admin's image")
			admin.publish0(t, p+"cmd", "admin's command")
			want := []string{p + "cmd=admin's command", p + "in/front=camera's image"}
			// Publishers on different connections: no order between them.
			if got := daemon.received(t, want...); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
				t.Errorf("the daemon received %q, want only %q", got, want)
			}

			daemon.publish0(t, p+"status", "online")
			daemon.publish0(t, p+"digits/result", "{}")
			daemon.publish0(t, p+"cmd/reply", "{ok}")
			daemon.publish0(t, p+"events", "last")
			sent := []string{p + "status=online", p + "digits/result={}", p + "cmd/reply={ok}", p + "events=last"}
			if got := viewer.received(t, sent[3]); !slices.Equal(got, []string{sent[0], sent[1], sent[3]}) {
				t.Errorf("the viewer, subscribed to edgeinfer/#, received %q: want the state and results, not the command reply", got)
			}
			if got := admin.received(t, sent[3]); !slices.Equal(got[len(got)-4:], sent) {
				t.Errorf("admin received %q, want everything the daemon sent", got)
			}
			if got := camera.received(t); len(got) != 0 {
				t.Errorf("the camera, which may only write, received %q", got)
			}
		})
	}
}

func TestTLSClientsOfAnotherCAAreRefusedOnBothBrokers(t *testing.T) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			f := brokertest.Site(t)
			s := b.start(t, f)
			other := mosquitto.NewCA(t, f.Dir, "other-ca")
			goodCrt, goodKey := f.ClientsCA.Issue(t, f.Dir, "admin-client", false)
			badCrt, badKey := other.Issue(t, f.Dir, "rogue-client", false)
			tc := func(ca *mosquitto.CA, crt, key string) *tls.Config {
				pem, _ := os.ReadFile(ca.File)
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pem)
				c := &tls.Config{RootCAs: pool}
				if crt != "" {
					pair, err := tls.LoadX509KeyPair(crt, key)
					if err != nil {
						t.Fatal(err)
					}
					c.Certificates = []tls.Certificate{pair}
				}
				return c
			}
			c, err := dial(s.tlsURL, "admin", brokertest.Passwords["admin"], tc(f.ServerCA, goodCrt, goodKey))
			if err != nil {
				t.Fatalf("admin with a client certificate of the clients' CA: %v", err)
			}
			c.Disconnect(50)
			for name, cfg := range map[string]*tls.Config{
				"a client trusting another CA":       tc(other, goodCrt, goodKey),
				"a client certificate of another CA": tc(f.ServerCA, badCrt, badKey),
				"no client certificate":              tc(f.ServerCA, "", ""),
			} {
				if c, err := dial(s.tlsURL, "admin", brokertest.Passwords["admin"], cfg); err == nil {
					c.Disconnect(0)
					t.Errorf("%s: connected", name)
				} else if refused(err) {
					t.Errorf("%s: refused at login, not in the TLS handshake: %v", name, err)
				}
			}
		})
	}
}

// startOn starts the embedded broker on a plain loopback listener with f's
// users and ACL, logging to the test's output.
func startOn(t *testing.T, f brokertest.Files) *broker.Broker {
	t.Helper()
	b, err := broker.Start(broker.Options{Listen: "127.0.0.1:0", Rules: f.Rules(t, f.ACL), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestTheDaemonsIdentityWorksOnlyOnItsOwnListener(t *testing.T) {
	f := brokertest.Site(t)
	b := startOn(t, f)
	self := b.Credentials()
	c, err := dial(b.URL(), self.Username, self.Password(), nil)
	if err != nil {
		t.Fatalf("the daemon's identity on its listener: %v", err)
	}
	c.subscribe(t, "anything/#")
	c.publish0(t, "anything/the/acl/does/not/name", "x") // no ACL rule names it
	c.received(t, "anything/the/acl/does/not/name=x")
	c.Disconnect(50)
	if _, err := dial("tcp://"+b.Addr(), self.Username, self.Password(), nil); !refused(err) {
		t.Errorf("the daemon's identity on the public listener: err = %v, want refused", err)
	}
	if _, err := dial(b.URL(), "admin", brokertest.Passwords["admin"], nil); !refused(err) {
		t.Errorf("a user of the password file on the daemon's listener: err = %v, want refused", err)
	}
	if _, err := dial(b.URL(), self.Username, "guess", nil); !refused(err) {
		t.Errorf("a wrong password for the daemon's user: err = %v, want refused", err)
	}
	var log strings.Builder
	slog.New(slog.NewTextHandler(&log, nil)).Info("connecting", "credentials", self)
	printed := fmt.Sprintf("%v %+v %#v %s", self, self, self, self) + log.String()
	if strings.Contains(printed, self.Password()) || !strings.Contains(printed, self.Username+":[redacted]") {
		t.Fatalf("the daemon's password is printed or logged:\n%s", printed)
	}
}

func TestAReloadAppliesTheNewFilesAndDisconnectsOnlyWhoNoLongerGetsIn(t *testing.T) {
	f := brokertest.Site(t)
	b := startOn(t, f)
	url := "tcp://" + b.Addr()
	admin, camera, viewer := mustDial(t, url, "admin"), mustDial(t, url, "camera"), mustDial(t, url, "viewer")
	admin.subscribe(t, "edgeinfer/#")
	camera.publish0(t, "edgeinfer/dev/in/cam", "1")
	admin.received(t, "edgeinfer/dev/in/cam=1")

	// The viewer's password changes; the camera may no longer publish.
	if err := broker.SetPassword(f.Users, "viewer", "new-viewer-password"); err != nil {
		t.Fatal(err)
	}
	acl, err := os.ReadFile(f.ACL)
	if err != nil {
		t.Fatal(err)
	}
	noCamera := strings.Replace(string(acl), "topic write edgeinfer/+/in/#", "", 1)
	if noCamera == string(acl) {
		t.Fatal("the example ACL no longer grants the camera edgeinfer/+/in/#")
	}
	if err := os.WriteFile(f.ACL, []byte(noCamera), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := b.SetRules(f.Rules(t, f.ACL)); n != 1 {
		t.Fatalf("SetRules disconnected %d clients; want the viewer alone", n)
	}
	for deadline := time.Now().Add(5 * time.Second); viewer.IsConnectionOpen(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the viewer, whose password changed, is still connected")
		}
	}
	if !admin.IsConnectionOpen() || !camera.IsConnectionOpen() {
		t.Fatal("a client whose login is unchanged was disconnected")
	}
	if _, err := dial(url, "viewer", brokertest.Passwords["viewer"], nil); !refused(err) {
		t.Errorf("the viewer's old password after the reload: err = %v, want refused", err)
	}
	if c, err := dial(url, "viewer", "new-viewer-password", nil); err != nil {
		t.Errorf("the viewer's new password after the reload: %v", err)
	} else {
		c.Disconnect(50)
	}
	camera.publish0(t, "edgeinfer/dev/in/cam", "2") // now denied: dropped
	admin.publish0(t, "edgeinfer/dev/cmd", "after")
	if got := admin.received(t, "edgeinfer/dev/cmd=after"); slices.Contains(got, "edgeinfer/dev/in/cam=2") {
		t.Fatalf("the camera's publish went through after the ACL took its grant away: %q", got)
	}
}

// TestReloadsWhileClientsLogInAndPublish swaps the rules while clients log
// in and publish (run under -race by make test-race); once the reloads
// end, the rules last read are the ones applied.
func TestReloadsWhileClientsLogInAndPublish(t *testing.T) {
	f := brokertest.Site(t)
	b := startOn(t, f)
	url := "tcp://" + b.Addr()
	admin, camera := mustDial(t, url, "admin"), mustDial(t, url, "camera")
	admin.subscribe(t, "edgeinfer/#")
	grant, err := os.ReadFile(f.ACL)
	if err != nil {
		t.Fatal(err)
	}
	noGrant := filepath.Join(t.TempDir(), "acl")
	os.WriteFile(noGrant, []byte(strings.Replace(string(grant), "topic write edgeinfer/+/in/#", "", 1)), 0o644)
	granted, notGranted := f.Rules(t, f.ACL), f.Rules(t, noGrant)

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
				camera.Publish("edgeinfer/dev/in/cam", 0, false, fmt.Sprint(i)).Wait()
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
				if c, err := dial(url, "viewer", brokertest.Passwords["viewer"], nil); err == nil {
					c.Disconnect(0)
				}
			}
		}
	}()
	for i := range 50 {
		rules := granted
		if i%2 == 0 {
			rules = notGranted
		}
		if n := b.SetRules(rules); n != 0 {
			t.Fatalf("reload %d: %d disconnected: the logins did not change", i, n)
		}
		time.Sleep(2 * time.Millisecond) // room for logins and publishes between reloads
	}
	close(done)
	wg.Wait()
	camera.publish0(t, "edgeinfer/dev/in/cam", "last") // the last reload granted it
	admin.received(t, "edgeinfer/dev/in/cam=last")
}
