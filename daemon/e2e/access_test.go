package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/broker"
	"github.com/edgeinfer/edgeinfer/daemon/broker/brokertest"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// accessPrefix is the default prefix of device "e2e", which the example
// ACL's edgeinfer/+/... rules cover.
const accessPrefix = "edgeinfer/e2e"

// clientAs connects user (no user: anonymous) to url; tc is for ssl://.
func clientAs(url, user string, tc *tls.Config) (paho.Client, error) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("e2e-%s-%d", user, time.Now().UnixNano())).
		SetUsername(user).SetPassword(brokertest.Passwords[user]).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
		SetOrderMatters(true).SetTLSConfig(tc))
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("no CONNACK from %s", url)
	}
	return c, tok.Error()
}

// watchAs is watch (harness_test.go) logged in as user.
func watchAs(t *testing.T, url, user string) *watcher {
	t.Helper()
	var c paho.Client
	waitFor(t, nil, 60*time.Second, user+" connected to "+url, func() bool {
		var err error
		c, err = clientAs(url, user, nil)
		return err == nil
	})
	w := &watcher{client: c}
	tok := c.Subscribe(accessPrefix+"/#", 1, func(_ paho.Client, m paho.Message) {
		w.mu.Lock()
		w.msgs = append(w.msgs, message{topic: strings.TrimPrefix(m.Topic(), accessPrefix+"/"), payload: m.Payload(), retained: m.Retained()})
		w.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: subscribe: %v", user, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return w
}

// clientTLS trusts ca and presents the certificate crt/key (when given).
func clientTLS(t *testing.T, ca *mosquitto.CA, crt, key string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool}
	if crt != "" {
		pair, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc
}

// frontConfig is device e2e's config: lenet5 on the images of mqtt sensor
// front, commands on, and mqtt as the rest of the [mqtt] table.
func frontConfig(t *testing.T, mqtt string) string {
	return fmt.Sprintf(`device = "e2e"
plugin_dir = %q
[models]
repository = %q
threads = 1
[commands]
enabled = true
[sensors.front]
kind = "mqtt"
[pipelines.digits]
sensor = "front"
model = "lenet5"
[mqtt]
qos = 1
%s`, binDir, models(t), mqtt)
}

func TestOnlyTheUsersTheACLNamesReachTheDaemon(t *testing.T) {
	for _, kind := range []string{"embedded", "mosquitto"} {
		t.Run(kind, func(t *testing.T) {
			f := brokertest.Site(t)
			var url, tlsURL, mqtt string
			switch kind {
			case "embedded":
				listen, tlsListen := mosquitto.FreeAddr(t), mosquitto.FreeAddr(t)
				url, tlsURL = "tcp://"+listen, "ssl://"+tlsListen
				mqtt = fmt.Sprintf("broker = \"embedded\"\nlisten = %q\n[mqtt.embedded]\nusers_file = %q\nacl_file = %q\n"+
					"tls_listen = %q\ncert_file = %q\nkey_file = %q\nclient_ca_file = %q\n",
					listen, f.Users, f.ACL, tlsListen, f.ServerCrt, f.ServerKey, f.ClientsCA.File)
			case "mosquitto":
				b, tlsAddr := brokertest.StartMosquitto(t, f)
				url, tlsURL = b.URL, "ssl://"+tlsAddr
				// The daemon logs in over TLS with a client certificate, as
				// a daemon on another host would.
				pw := filepath.Join(t.TempDir(), "mqtt-password")
				os.WriteFile(pw, []byte(brokertest.Passwords["edgeinferd"]+"\n"), 0o600)
				crt, key := f.ClientsCA.Issue(t, f.Dir, "edgeinferd-client", false)
				mqtt = fmt.Sprintf("broker = %q\nusername = \"edgeinferd\"\npassword_file = %q\nca_file = %q\ncert_file = %q\nkey_file = %q\n",
					tlsURL, pw, f.ServerCA.File, crt, key)
			}
			p := start(t, frontConfig(t, mqtt))
			admin := watchAs(t, url, "admin")
			admin.serving(t, p, "lenet5", "digits")

			if _, err := clientAs(url, "", nil); err == nil || !strings.Contains(err.Error(), "not Authorized") && !strings.Contains(err.Error(), "bad user name or password") {
				t.Errorf("an anonymous client: err = %v, want the login refused", err)
			}
			if _, err := clientAs(tlsURL, "camera", clientTLS(t, mosquitto.NewCA(t, f.Dir, "other-ca"), "", "")); err == nil {
				t.Error("a client trusting another CA connected over TLS")
			}

			// The viewer may read results but neither command nor send
			// images: both publishes are dropped by the broker.
			viewer := watchAs(t, url, "viewer")
			img := digits(t)[0]
			pin, _ := json.Marshal(payload.Command{ID: "viewer-pin", Command: payload.CommandPin, Model: "lenet5", Version: "1"})
			for topic, body := range map[string][]byte{"cmd": pin, "in/front": img.png} {
				viewer.client.Publish(accessPrefix+"/"+topic, 0, false, body).WaitTimeout(5 * time.Second)
			}

			// The camera sends an image over TLS with its client certificate.
			crt, key := f.ClientsCA.Issue(t, f.Dir, "camera-client", false)
			camera, err := clientAs(tlsURL, "camera", clientTLS(t, f.ServerCA, crt, key))
			if err != nil {
				t.Fatalf("camera over TLS: %v", err)
			}
			defer camera.Disconnect(50)
			if tok := camera.Publish(accessPrefix+"/in/front", 1, false, img.png); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("camera's image: %v", tok.Error())
			}
			waitFor(t, p, 60*time.Second, "the camera's result", func() bool { return len(admin.results(t, "digits")) > 0 })
			waitFor(t, p, 10*time.Second, "the result at the viewer", func() bool { return len(viewer.results(t, "digits")) > 0 })

			reload, _ := json.Marshal(payload.Command{ID: "admin-reload", Command: payload.CommandReload})
			if tok := admin.client.Publish(accessPrefix+"/cmd", 1, false, reload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("admin's command: %v", tok.Error())
			}
			waitFor(t, p, 30*time.Second, "the reply to admin's command", func() bool { return len(admin.all("cmd/reply")) > 0 })
			time.Sleep(time.Second) // room for anything that should not come
			replies := admin.all("cmd/reply")
			var r payload.Reply
			json.Unmarshal(replies[0].payload, &r)
			if len(replies) != 1 || r.ID != "admin-reload" || !r.OK {
				t.Errorf("replies %d, first %+v: want admin's reload alone, done", len(replies), r)
			}
			if st, _ := admin.model(t, "lenet5"); st.Policy.Pinned != "" {
				t.Errorf("the viewer's pin took effect: %+v", st)
			}
			if rs := admin.results(t, "digits"); len(rs) != 1 || rs[0].Sensor != "front" {
				t.Errorf("%d results (%+v), want the camera's one: the viewer's image must not get in", len(rs), rs)
			}
			if n := len(viewer.all("cmd/reply")); n != 0 {
				t.Errorf("the viewer read %d command replies; the ACL gives it results and state only", n)
			}
		})
	}
}

func TestTheDaemonRefusesANetworkAddressWithoutUsers(t *testing.T) {
	addr := mosquitto.FreeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	p := start(t, frontConfig(t, fmt.Sprintf("listen = \"0.0.0.0:%s\"\n", port)))
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("edgeinferd started on 0.0.0.0 with no users")
	}
	want := fmt.Sprintf(`config.toml:15: mqtt.listen: "0.0.0.0:%s" is reachable from the network but the embedded broker has no users: set [mqtt.embedded] users_file and acl_file`, port)
	if code := p.cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(p.stderr.String(), want) {
		t.Fatalf("exit %d, output:\n%s\nwant exit 2 and %s", code, p.stderr.String(), want)
	}
}

// TestASIGHUPAppliesTheEmbeddedBrokersChangedUsersAndACL rotates the
// camera's password and then takes its grant away, each followed by a
// SIGHUP (systemctl reload), as one would with Mosquitto: the camera's
// connection with the old password ends and the new one works, the ACL
// applies to the next image, a broken ACL is refused naming its line, and
// the model's process serves throughout.
func TestASIGHUPAppliesTheEmbeddedBrokersChangedUsersAndACL(t *testing.T) {
	f := brokertest.Site(t)
	listen := mosquitto.FreeAddr(t)
	url := "tcp://" + listen
	p := start(t, frontConfig(t, fmt.Sprintf("broker = \"embedded\"\nlisten = %q\n[mqtt.embedded]\nusers_file = %q\nacl_file = %q\n", listen, f.Users, f.ACL)))
	admin := watchAs(t, url, "admin")
	pid := admin.serving(t, p, "lenet5", "digits").PID
	img := digits(t)[0].png
	camera, err := clientAs(url, "camera", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer camera.Disconnect(50)
	send := func(c paho.Client) {
		t.Helper()
		if tok := c.Publish(accessPrefix+"/in/front", 0, false, img); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("image: %v", tok.Error())
		}
	}
	results := func(n int) {
		t.Helper()
		waitFor(t, p, 60*time.Second, fmt.Sprintf("%d results", n), func() bool { return len(admin.results(t, "digits")) >= n })
	}
	hup := func(events int, typ string) payload.Event {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, p, 30*time.Second, typ+" event", func() bool { return len(admin.eventsOf(t, typ)) >= events })
		return admin.eventsOf(t, typ)[events-1]
	}
	send(camera)
	results(1)

	// The camera's password is rotated.
	if err := broker.SetPassword(f.Users, "camera", "rotated"); err != nil {
		t.Fatal(err)
	}
	if ev := hup(1, payload.EventConfigReloaded); !strings.Contains(ev.Message, "embedded broker access read again, 1 clients disconnected") {
		t.Fatalf("reload event %q: want the camera disconnected", ev.Message)
	}
	waitFor(t, p, 10*time.Second, "the camera with the old password disconnected", func() bool { return !camera.IsConnectionOpen() })
	if _, err := clientAs(url, "camera", nil); err == nil {
		t.Fatal("the camera's old password still logs in")
	}
	rotated := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("e2e-camera-rotated").SetUsername("camera").
		SetPassword("rotated").SetAutoReconnect(false))
	if tok := rotated.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the camera's new password: %v", tok.Error())
	}
	defer rotated.Disconnect(50)
	send(rotated)
	results(2)
	if !admin.client.IsConnectionOpen() {
		t.Fatal("admin, whose login did not change, was disconnected")
	}

	// The camera's grant is taken away: its next image is dropped.
	acl, err := os.ReadFile(f.ACL)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(f.ACL, []byte(strings.Replace(string(acl), "topic write edgeinfer/+/in/#", "", 1)), 0o644)
	if ev := hup(2, payload.EventConfigReloaded); !strings.Contains(ev.Message, "0 clients disconnected") {
		t.Fatalf("reload event %q", ev.Message)
	}
	send(rotated)
	// A broken ACL is refused, naming its line; the rules stay.
	os.WriteFile(f.ACL, []byte("user camera\ntopic write edgeinfer/#/in\n"), 0o644)
	if ev := hup(1, payload.EventConfigRejected); !strings.Contains(ev.Message, f.ACL+":2") {
		t.Fatalf("config_rejected %q: want the ACL's line 2 named", ev.Message)
	}
	send(rotated)
	time.Sleep(2 * time.Second) // room for a result that must not come
	if n := len(admin.results(t, "digits")); n != 2 {
		t.Fatalf("%d results: the camera's images after its grant was taken away got through", n)
	}
	if st := admin.serving(t, p, "lenet5", "digits"); st.PID != pid || !p.running() {
		t.Fatalf("lenet5's process changed (%d, was %d) or the daemon stopped: a reload of the broker's access restarts nothing", st.PID, pid)
	}
}
