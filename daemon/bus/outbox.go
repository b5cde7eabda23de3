package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/outbox"
)

// The outbox (daemon/outbox) keeps results and events on disk while the
// broker cannot be reached and delivers them on a connection of its own,
// made by outboxConn: client id <client_id>-outbox, a clean session, and
// no automatic reconnection (the outbox reconnects it). Why not the main
// connection: it keeps a persistent session (the mqtt sensor's input must
// survive a restart) and reconnects by itself, and then paho resends the
// QoS 1 publishes it holds in Go map order (MemoryStore.All), and
// completes the token of each one, without an error, when it resends it
// (messageIds.claimID), not when the broker acknowledges it. On a clean
// session without paho's reconnection, a token completes only with the
// PUBACK, or with "connection lost before Publish completed", and paho's
// store is emptied at every connection: the outbox alone decides what is
// sent again, and in which order.

// outboxConn is the outbox's connection; it implements outbox.Conn.
type outboxConn struct {
	client  paho.Client
	qos     byte
	timeout time.Duration

	mu   sync.Mutex
	lost chan struct{} // of the current connection; closed when it is lost
}

func newOutboxConn(opts Options, tc *tls.Config) *outboxConn {
	c := &outboxConn{qos: max(opts.QoS, 1), timeout: opts.ConnectTimeout}
	o := paho.NewClientOptions().
		AddBroker(opts.Broker).
		SetClientID(opts.ClientID + "-outbox").
		SetKeepAlive(opts.Keepalive).
		SetConnectTimeout(opts.ConnectTimeout).
		SetAutoReconnect(false).
		SetCleanSession(true).
		SetWriteTimeout(30 * time.Second)
	if opts.Username != "" {
		o.SetUsername(opts.Username).SetPassword(opts.Password)
	}
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	o.SetConnectionLostHandler(func(paho.Client, error) { c.setLost() })
	c.client = paho.NewClient(o)
	return c
}

func (c *outboxConn) setLost() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.lost:
	default:
		close(c.lost)
	}
}

// Connect implements outbox.Conn.
func (c *outboxConn) Connect() (<-chan struct{}, error) {
	lost := make(chan struct{})
	c.mu.Lock()
	c.lost = lost
	c.mu.Unlock()
	tok := c.client.Connect()
	if !tok.WaitTimeout(c.timeout + time.Second) {
		c.client.Disconnect(0)
		return nil, fmt.Errorf("no connection within %s", c.timeout)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return lost, nil
}

// Publish implements outbox.Conn: the token completes with the PUBACK (at
// QoS 1; PUBCOMP at 2), or with an error once the connection is lost.
func (c *outboxConn) Publish(m outbox.Message) outbox.Ack {
	return c.client.Publish(m.Topic, c.qos, m.Retain, m.Payload)
}

// Disconnect implements outbox.Conn.
func (c *outboxConn) Disconnect() {
	if c.client.IsConnectionOpen() {
		c.client.Disconnect(250)
	}
}

// Outbox is the bus's outbox, nil when it has none: its Depth is what
// waits for the broker (the metrics' edgeinfer_outbox_* gauges).
func (b *Bus) Outbox() *outbox.Outbox { return b.box }

// PublishResult hands a result, or an image the task made with it, to the
// outbox and calls then once it is on disk there (fsync'd): the frame's
// input can then be let go, whether or not the broker can be reached. A
// lossless result waits for room in the outbox until ctx ends; any other
// is dropped when there is none, counted, and then gets outbox.ErrFull.
// Without an outbox it is PublishThen: then runs once the broker has it.
func (b *Bus) PublishResult(ctx context.Context, topic string, retain bool, payload []byte, lossless bool, then func(error)) {
	if b.box == nil {
		b.PublishThen(topic, retain, payload, then)
		return
	}
	if err := b.box.Put(ctx, outbox.Message{Topic: topic, Payload: payload, Retain: retain}, lossless, then); err != nil {
		if !errors.Is(err, outbox.ErrFull) {
			b.log.Warn("result not queued in the outbox", "topic", topic, "err", err)
		}
		then(err)
	}
}

// startOutbox runs the outbox's delivery until Close.
func (b *Bus) startOutbox() {
	if b.box == nil || b.stopBox != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.stopBox = func() { cancel(); <-done }
	go func() { defer close(done); b.box.Run(ctx, b.boxConn) }()
}

// outboxDrain bounds how long Close waits for the outbox to empty while
// its connection is up.
const outboxDrain = 5 * time.Second

// closeOutbox lets the outbox deliver what it holds for a while if the
// broker can be reached, then stops its delivery and closes it: what is
// left goes out after the next start.
func (b *Bus) closeOutbox() {
	if b.box == nil {
		return
	}
	if b.boxConn.client.IsConnectionOpen() {
		ctx, cancel := context.WithTimeout(context.Background(), outboxDrain)
		if err := b.box.Drain(ctx); err != nil {
			n, bytes := b.box.Depth()
			b.log.Warn("outbox not empty at shutdown; the rest goes out after the next start", "records", n, "bytes", bytes)
		}
		cancel()
	}
	if b.stopBox != nil {
		b.stopBox()
	}
	if err := b.box.Close(); err != nil {
		b.log.Error("closing the outbox", "err", err)
	}
}
