package bus

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

func options(broker string) Options {
	return Options{Broker: broker, ClientID: fmt.Sprintf("bus-test-%d", time.Now().UnixNano()), Keepalive: 5 * time.Second,
		ConnectTimeout: 5 * time.Second, QoS: 1}
}

func connect(t *testing.T, o Options) *Bus {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(100 * time.Millisecond) })
	return b
}

// roundTrip checks that what one client publishes reaches the other's
// subscription.
func roundTrip(t *testing.T, pub, sub *Bus, topic string) {
	t.Helper()
	got := make(chan string, 10)
	if _, err := sub.Subscribe(topic, func(_ string, p []byte, ack func()) { ack(); got <- string(p) }); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint(time.Now().UnixNano())
	if err := pub.PublishWait(topic, false, []byte(want), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != want {
			t.Fatalf("got %q, want %q", p, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing arrived on %s", topic)
	}
}

func TestReconnectsAndSubscribesAgainAfterTheBrokerRestarts(t *testing.T) {
	broker := mosquitto.StartBroker(t)
	var connects atomic.Int32
	o := options(broker.URL)
	o.OnConnect = func() { connects.Add(1) }
	b := connect(t, o)
	got := make(chan string, 10)
	if _, err := b.Subscribe("bus/in", func(_ string, p []byte, ack func()) { ack(); got <- string(p) }); err != nil {
		t.Fatal(err)
	}
	other := connect(t, options(broker.URL))

	broker.Restart(t)
	deadline := time.Now().Add(20 * time.Second)
	for connects.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnection: %d connects", connects.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The publisher reconnects too; then the subscription made before the
	// restart must deliver again.
	for deadline := time.Now().Add(20 * time.Second); ; {
		if err := other.PublishWait("bus/in", false, []byte("after restart"), time.Second); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	select {
	case p := <-got:
		if p != "after restart" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription was not renewed after the reconnect")
	}
}

// sharedDir is a temporary folder the broker (which drops root for the
// mosquitto user) can read.
func sharedDir(t *testing.T) string {
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return dir
}

func TestAuthenticatesWithUsernameAndPassword(t *testing.T) {
	dir := sharedDir(t)
	pw := filepath.Join(dir, "passwords")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, "edge", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	os.Chmod(pw, 0o644)
	broker := mosquitto.StartBroker(t, "allow_anonymous false", "password_file "+pw)

	o := options(broker.URL)
	o.Username, o.Password = "edge", "wrong"
	b, _ := New(o)
	if err := b.Connect(); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("a wrong password: got %v", err)
	}
	o = options(broker.URL)
	o.Username, o.Password = "edge", "s3cret"
	good := connect(t, o)
	roundTrip(t, good, good, "bus/auth")
}

func TestConnectsOverTLSWithAClientCertificate(t *testing.T) {
	dir := sharedDir(t)
	ca := mosquitto.NewCA(t, dir, "ca")
	serverCert, serverKey := ca.Issue(t, dir, "server", true)
	clientCert, clientKey := ca.Issue(t, dir, "client", false)
	broker := mosquitto.StartBroker(t, "listener %d 127.0.0.1",
		"cafile "+ca.File,
		"certfile "+serverCert,
		"keyfile "+serverKey,
		"require_certificate true")
	url := strings.Replace(broker.URL, "tcp://", "ssl://", 1)

	o := options(url)
	o.CAFile = ca.File
	o.CertFile, o.KeyFile = clientCert, clientKey
	b := connect(t, o)
	roundTrip(t, b, b, "bus/tls")

	// Without the client certificate the broker refuses the handshake.
	o = options(url)
	o.CAFile = ca.File
	o.ConnectTimeout = 2 * time.Second
	nocert, _ := New(o)
	if err := nocert.Connect(); err == nil {
		t.Fatal("connected without a client certificate")
	}
	// A CA file that holds no certificate is named in the error.
	o.CAFile = clientKey
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("bad ca_file: got %v", err)
	}
}

func TestMessagesLeftFromTheLastSessionReachTheNewSubscription(t *testing.T) {
	broker := mosquitto.StartBroker(t)
	pub := connect(t, options(broker.URL))
	o := options(broker.URL)
	o.ClientID = "persistent"

	// The first session takes a message and dies before acknowledging it.
	first := connect(t, o)
	got := make(chan string, 10)
	if _, err := first.Subscribe("in/+", func(_ string, p []byte, _ func()) { got <- string(p) }); err != nil {
		t.Fatal(err)
	}
	pub.PublishWait("in/a", false, []byte("taken, not acknowledged"), 5*time.Second)
	if p := <-got; p != "taken, not acknowledged" {
		t.Fatalf("got %q", p)
	}
	first.Close(0)
	pub.PublishWait("in/b", false, []byte("sent while away"), 5*time.Second)

	// The next session connects; the broker sends both at once, before the
	// subscription is made again. Subscribe hands them over.
	second := connect(t, o)
	time.Sleep(300 * time.Millisecond)
	again := make(chan string, 10)
	if _, err := second.Subscribe("in/+", func(_ string, p []byte, ack func()) { ack(); again <- string(p) }); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"taken, not acknowledged": true, "sent while away": true}
	for len(want) > 0 {
		select {
		case p := <-again:
			if !want[p] {
				t.Fatalf("unexpected %q", p)
			}
			delete(want, p)
		case <-time.After(10 * time.Second):
			t.Fatalf("never delivered: %v", want)
		}
	}
}

func TestTopicFilters(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a/b/c", true},
		{"a/#", "a", true}, // "#" also matches the parent level (MQTT 3.1.1, 4.7.1.2)
		{"+/b", "a/b", true},
		{"$share/g/a/+", "a/b", true},
		{"a/b/c", "a/b", false},
	} {
		if got := matches(tc.filter, tc.topic); got != tc.want {
			t.Errorf("matches(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestConnectedAndReconnectsFollowABrokerOutage(t *testing.T) {
	broker := mosquitto.StartBroker(t)
	b := connect(t, options(broker.URL))
	if !b.Connected() || b.Reconnects() != 0 {
		t.Fatalf("after the first connection: connected %v, reconnects %d; want true, 0", b.Connected(), b.Reconnects())
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: connected %v, reconnects %d", what, b.Connected(), b.Reconnects())
			}
		}
	}
	broker.Stop()
	wait("the connection to drop", func() bool { return !b.Connected() })
	if b.Reconnects() != 0 {
		t.Fatalf("reconnects %d while the broker is down, want 0", b.Reconnects())
	}
	broker.Restart(t)
	wait("the reconnection", func() bool { return b.Connected() && b.Reconnects() == 1 })
}

func TestUnsubscribeEndsTheSubscriptionUnlessALaterOneTookTheTopicOver(t *testing.T) {
	url := mosquitto.Start(t)
	pub, sub := connect(t, options(url)), connect(t, options(url))
	got := make(chan string, 10)
	handler := func(name string) func(string, []byte, func()) {
		return func(_ string, p []byte, ack func()) { ack(); got <- name + ":" + string(p) }
	}
	// A later subscription to the topic takes it over: the first's
	// unsubscribe leaves it alone.
	first, err := sub.Subscribe("bus/unsub", handler("first"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := sub.Subscribe("bus/unsub", handler("second"))
	if err != nil {
		t.Fatal(err)
	}
	first()
	if err := pub.PublishWait("bus/unsub", false, []byte("1"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "second:1" {
			t.Fatalf("got %q, want second:1", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first's unsubscribe ended the second's subscription")
	}
	// Its own unsubscribe ends it at the broker: nothing more arrives.
	second()
	time.Sleep(200 * time.Millisecond) // the UNSUBACK is not waited for
	if err := pub.PublishWait("bus/unsub", false, []byte("2"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, pub, sub, "bus/other") // a later message on another topic arrives...
	select {
	case m := <-got:
		t.Fatalf("after unsubscribe, %q arrived", m) // ...and the unsubscribed one never did
	default:
	}
}
