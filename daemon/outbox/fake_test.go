package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// broker is a fake MQTT broker and the outbox's connection to it. What
// reaches it is kept in order; its acknowledgements can be held back, and
// it can go away and come back.
type broker struct {
	mu        sync.Mutex
	up        bool
	connected bool
	lost      chan struct{}
	got       []Message
	hold      bool   // hold acknowledgements until release (or loss)
	held      []*ack // held, in order
	connects  int
}

type ack struct {
	done chan struct{}
	err  error
}

func (a *ack) Done() <-chan struct{} { return a.done }
func (a *ack) Error() error          { return a.err }

func newAck(err error) *ack {
	a := &ack{done: make(chan struct{}), err: err}
	if err != nil {
		close(a.done)
	}
	return a
}

func newBroker(up bool) *broker { return &broker{up: up} }

func (b *broker) Connect() (<-chan struct{}, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.up {
		return nil, errors.New("connection refused")
	}
	b.connected = true
	b.connects++
	b.lost = make(chan struct{})
	return b.lost, nil
}

func (b *broker) Publish(m Message) Ack {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.connected {
		return newAck(errors.New("not connected"))
	}
	m.Payload = append([]byte(nil), m.Payload...)
	b.got = append(b.got, m)
	a := newAck(nil)
	if b.hold {
		b.held = append(b.held, a)
	} else {
		close(a.done)
	}
	return a
}

func (b *broker) Disconnect() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.connected = false
}

// down makes the broker go away: the connection is lost, and the
// acknowledgements held back never come (their publishes fail).
func (b *broker) down() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.up = false
	if b.connected {
		b.connected = false
		close(b.lost)
	}
	for _, a := range b.held {
		a.err = errors.New("connection lost before the PUBACK")
		close(a.done)
	}
	b.held = nil
}

func (b *broker) setUp() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.up = true
}

// release sends the acknowledgements held back.
func (b *broker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range b.held {
		close(a.done)
	}
	b.held = nil
}

func (b *broker) received() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.got...)
}

// payloads are the payloads received on topic, as strings.
func (b *broker) payloads(topic string) []string {
	var out []string
	for _, m := range b.received() {
		if m.Topic == topic {
			out = append(out, string(m.Payload))
		}
	}
	return out
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func open(t *testing.T, dir string, max int64, tune ...func(*Options)) *Outbox {
	t.Helper()
	opts := Options{Dir: dir, MaxBytes: max, Logger: quiet(), ReconnectMin: 5 * time.Millisecond, ReconnectMax: 20 * time.Millisecond}
	for _, f := range tune {
		f(&opts)
	}
	o, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// running runs the outbox on b until the test ends (or stop is called).
func running(t *testing.T, o *Outbox, b *broker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); o.Run(ctx, b) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// put puts a record that must be accepted and waits until it is on disk.
func put(t *testing.T, o *Outbox, topic, payload string) {
	t.Helper()
	durable := make(chan error, 1)
	if err := o.Put(context.Background(), Message{Topic: topic, Payload: []byte(payload)}, true, func(err error) { durable <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-durable; err != nil {
		t.Fatal(err)
	}
}

func drain(t *testing.T, o *Outbox) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := o.Drain(ctx); err != nil {
		n, b := o.Depth()
		t.Fatalf("outbox not drained: %d records, %d bytes left", n, b)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// numbered are "0".."n-1".
func numbered(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(from + i)
	}
	return out
}

func same(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got  %d: %s\nwant %d: %s", len(got), abbrev(got), len(want), abbrev(want))
	}
}

func abbrev(s []string) string {
	if len(s) > 40 {
		return strings.Join(s[:20], ",") + ",...," + strings.Join(s[len(s)-20:], ",")
	}
	return strings.Join(s, ",")
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), segExt) {
			out = append(out, e.Name())
		}
	}
	return out
}

func payloadOf(n int) string { return fmt.Sprintf("%d", n) }
