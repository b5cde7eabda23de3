package bus

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/outbox"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// proxy forwards TCP connections to a broker; mute drops what the broker
// says (PUBACKs never reach the client) and cut closes every connection.
type proxy struct {
	ln    net.Listener
	mute  atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, addr string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go io.Copy(u, c)
			go func() {
				buf := make([]byte, 4096)
				for {
					n, err := u.Read(buf)
					if err != nil {
						c.Close()
						return
					}
					if !p.mute.Load() {
						c.Write(buf[:n])
					}
				}
			}()
		}
	}()
	return p
}

func (p *proxy) url() string { return "tcp://" + p.ln.Addr().String() }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// The reason the outbox has a connection of its own: paho's tokens on the
// main connection (persistent session, automatic reconnection) complete
// without an error when paho resends a message after a reconnect, before
// any PUBACK. On the outbox's connection a publish whose PUBACK never
// came fails.
func TestAnOutboxPublishCompletesOnlyWithItsPUBACK(t *testing.T) {
	broker := mosquitto.StartBroker(t)
	px := startProxy(t, broker.Addr)
	o := options(px.url())
	c := newOutboxConn(o, nil)
	lost, err := c.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect()
	if a := c.Publish(outbox.Message{Topic: "ob/t", Payload: []byte("acked")}); !waitAck(a, 5*time.Second) || a.Error() != nil {
		t.Fatalf("a publish with its PUBACK: done=%v err=%v", waitAck(a, 0), a.Error())
	}
	px.mute.Store(true)
	a := c.Publish(outbox.Message{Topic: "ob/t", Payload: []byte("never acked")})
	if waitAck(a, 300*time.Millisecond) {
		t.Fatalf("a publish without a PUBACK completed: err=%v", a.Error())
	}
	px.cut()
	if !waitAck(a, 5*time.Second) {
		t.Fatal("a publish in flight when the connection was lost never completed")
	}
	if a.Error() == nil {
		t.Fatal("a publish in flight when the connection was lost completed without an error")
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection's loss was not signalled")
	}
}

func waitAck(a outbox.Ack, d time.Duration) bool {
	select {
	case <-a.Done():
		return true
	case <-time.After(d):
		return false
	}
}

func TestResultsAndEventsGoThroughTheOutboxInOrderAcrossABrokerRestart(t *testing.T) {
	broker := mosquitto.StartBroker(t, mosquitto.Persistent(t)...)
	box, err := outbox.Open(outbox.Options{Dir: t.TempDir(), MaxBytes: 1 << 20, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o := options(broker.URL)
	o.Outbox = box
	b := connect(t, o)

	// A subscriber with a persistent session: the broker keeps what it
	// misses while it reconnects.
	var mu sync.Mutex
	var got []string
	so := paho.NewClientOptions().AddBroker(broker.URL).SetClientID("ob-sub").SetCleanSession(false).
		SetOrderMatters(true).SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond)
	sub := paho.NewClient(so)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("ob/#", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got = append(got, string(m.Payload()))
		mu.Unlock()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	received := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }

	durable := make(chan error, 100)
	publish := func(i int) {
		if i%3 == 0 {
			b.Publish("ob/events", false, []byte(strconv.Itoa(i))) // an event: not retained
			durable <- nil
			return
		}
		b.PublishResult(context.Background(), "ob/r/result", false, []byte(strconv.Itoa(i)), true, func(err error) { durable <- err })
	}
	for i := range 10 {
		publish(i)
	}
	waitFor(t, "the first 10", func() bool { return len(received()) == 10 })
	// Their PUBACKs too: a publish in flight when the broker goes away is
	// sent again (QoS 1: at least once), and this test wants each once.
	waitFor(t, "the first 10 acknowledged", func() bool { n, _ := box.Depth(); return n == 0 })
	// And the subscriber's PUBACKs, sent after its handler ran.
	time.Sleep(300 * time.Millisecond)
	broker.StopGracefully()
	for i := 10; i < 60; i++ {
		publish(i)
	}
	for range 60 {
		if err := <-durable; err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := box.Depth(); n != 50 {
		t.Fatalf("%d records in the outbox during the outage, want 50", n)
	}
	broker.Resume(t)
	waitFor(t, "all 60", func() bool { return len(received()) >= 60 })
	time.Sleep(200 * time.Millisecond)
	r := received()
	for i, p := range r {
		if p != strconv.Itoa(i) {
			t.Fatalf("received %v", r)
		}
	}
	if len(r) != 60 {
		t.Fatalf("received %d", len(r))
	}
}

func TestRetainedStateWhileTheBrokerIsAwayIsSentNewestOnlyWhenItReturns(t *testing.T) {
	broker := mosquitto.StartBroker(t)
	b := connect(t, options(broker.URL))
	broker.Stop()
	waitFor(t, "the connection to drop", func() bool { return !b.Connected() })
	for i := range 5 {
		b.Publish("ob/state", true, []byte(fmt.Sprint("state ", i)))
	}
	broker.Resume(t)
	waitFor(t, "the reconnection", func() bool { return b.Reconnects() >= 1 })
	time.Sleep(300 * time.Millisecond)
	// A new subscriber sees what is retained now, and only that.
	var mu sync.Mutex
	var got []string
	sub := connect(t, options(broker.URL))
	if _, err := sub.Subscribe("ob/state", func(_ string, p []byte, ack func()) {
		ack()
		mu.Lock()
		got = append(got, string(p))
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	// (Once per SUBSCRIBE: the bus may subscribe twice as it connects.)
	if len(got) == 0 {
		t.Fatal("nothing retained after the outage")
	}
	for _, p := range got {
		if p != "state 4" {
			t.Fatalf("retained after the outage: %q", got)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
