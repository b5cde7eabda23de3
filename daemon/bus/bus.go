// Package bus is edgeinferd's MQTT connection (eclipse/paho.mqtt.golang):
// publishing results, events and retained state, subscribing to input
// topics, the last will, TLS and authentication, and reconnecting by itself.
// Subscriptions are remembered and made again after every reconnect.
//
// With an outbox (Options.Outbox, daemon/outbox), results and events go
// through it: on disk first, then to the broker on a connection of the
// outbox's own, in order (outbox.go says why not on this one). Retained
// state published while the connection is down is not queued: only the
// newest payload of each topic is kept, and sent when the connection is
// back (unless OnConnect published that topic again).
package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/outbox"

	"github.com/edgeinfer/edgeinfer/internal/pemfile"
)

// Options for Connect.
type Options struct {
	Broker         string // tcp://host:port, ssl://..., ws://...
	ClientID       string
	Username       string
	Password       string
	CAFile         string
	CertFile       string
	KeyFile        string
	Insecure       bool // skip TLS verification (testing only)
	Keepalive      time.Duration
	ConnectTimeout time.Duration // how long Connect waits for the first connection
	QoS            byte          // for publishes and subscriptions
	// Will is published by the broker if the connection is lost (retained).
	WillTopic, WillPayload string
	// OnConnect runs after every (re)connection, after subscriptions are
	// renewed: publish the retained state there.
	OnConnect func()
	Logger    *slog.Logger
	// Outbox, when set, takes the results (PublishResult) and every
	// publish that is not retained (events, command replies), and delivers
	// them once Connect has connected; Close closes it.
	Outbox *outbox.Outbox
}

// Bus is a connected MQTT client.
type Bus struct {
	client  paho.Client
	qos     byte
	log     *slog.Logger
	broker  string
	timeout time.Duration

	mu    sync.Mutex
	subs  map[string]*subscription
	early []earlyMessage

	connections atomic.Uint64 // made so far, the first one included

	box     *outbox.Outbox
	boxConn *outboxConn
	stopBox func()

	// retained holds the newest retained payload of each topic published
	// while the connection was down; sent when it is back.
	retMu    sync.Mutex
	retained map[string][]byte
}

// earlyMessage is a message of the persistent session that arrived before
// the subscription it belongs to was made again: right after connecting,
// the broker sends what the last session left unacknowledged, before the
// sensors have subscribed. Subscribe hands it to its handler.
type earlyMessage struct {
	msg paho.Message
	at  time.Time
}

// staleAfter is how long an early message waits for a subscription; after
// that no sensor takes its topic any more (the config changed) and it is
// acknowledged and dropped, so that it does not block the session.
const staleAfter = time.Minute

// New prepares a client; Connect connects it.
func New(opts Options) (*Bus, error) {
	b := &Bus{qos: opts.QoS, log: opts.Logger, subs: map[string]*subscription{}, timeout: opts.ConnectTimeout, broker: opts.Broker,
		box: opts.Outbox, retained: map[string][]byte{}}
	if b.log == nil {
		b.log = slog.Default()
	}
	o := paho.NewClientOptions().
		AddBroker(opts.Broker).
		SetClientID(opts.ClientID).
		SetKeepAlive(opts.Keepalive).
		SetConnectTimeout(opts.ConnectTimeout).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(30 * time.Second).
		SetCleanSession(false). // the broker keeps unacknowledged input for the next connection
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetWriteTimeout(30 * time.Second).
		SetDefaultPublishHandler(b.unrouted)
	if opts.Username != "" {
		o.SetUsername(opts.Username).SetPassword(opts.Password)
	}
	var tc *tls.Config
	if strings.HasPrefix(opts.Broker, "ssl") || strings.HasPrefix(opts.Broker, "tls") ||
		strings.HasPrefix(opts.Broker, "mqtts") || strings.HasPrefix(opts.Broker, "wss") || opts.CAFile != "" || opts.CertFile != "" {
		var err error
		if tc, err = tlsConfig(opts); err != nil {
			return nil, err
		}
		o.SetTLSConfig(tc)
	}
	if opts.WillTopic != "" {
		o.SetBinaryWill(opts.WillTopic, []byte(opts.WillPayload), opts.QoS, true)
	}
	o.SetOnConnectHandler(func(paho.Client) {
		b.log.Info("mqtt connected", "broker", opts.Broker)
		b.connections.Add(1)
		b.resubscribe()
		// Not at once: paho resends what its store holds from a snapshot
		// of it taken just after this handler starts, and a publish that
		// lands in the store before the snapshot is sent twice (and
		// raced on). A state published meanwhile (OnConnect's) supersedes
		// what was kept for its topic.
		time.AfterFunc(retainedDelay, b.sendRetained)
		if opts.OnConnect != nil {
			opts.OnConnect()
		}
	})
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		b.log.Warn("mqtt connection lost; reconnecting", "broker", opts.Broker, "err", err)
	})
	b.client = paho.NewClient(o)
	if b.box != nil {
		b.boxConn = newOutboxConn(opts, tc)
	}
	return b, nil
}

// Connect connects to the broker, waiting at most Options.ConnectTimeout
// for the first connection. After that the client reconnects by itself.
func (b *Bus) Connect() error {
	tok := b.client.Connect()
	if !tok.WaitTimeout(b.timeout + time.Second) {
		b.client.Disconnect(0)
		return fmt.Errorf("mqtt %s: no connection within %s", b.broker, b.timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt %s: %w", b.broker, err)
	}
	b.startOutbox()
	return nil
}

// Connected reports whether the connection to the broker is up now (not
// lost, and not being made again).
func (b *Bus) Connected() bool { return b.client.IsConnectionOpen() }

// Reconnects counts the connections made again after one was lost.
func (b *Bus) Reconnects() uint64 {
	if n := b.connections.Load(); n > 1 {
		return n - 1
	}
	return 0
}

func tlsConfig(opts Options) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.Insecure}
	if opts.CAFile != "" {
		pool, err := pemfile.CertPool(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	if opts.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Publish sends payload without waiting; a failure is logged. With an
// outbox, what is not retained goes through it (dropped and counted if it
// is full: Publish never waits). Retained payloads published while the
// connection is down wait, the newest of each topic only, for the
// connection to come back.
func (b *Bus) Publish(topic string, retain bool, payload []byte) {
	if !retain && b.box != nil {
		err := b.box.Put(context.Background(), outbox.Message{Topic: topic, Payload: payload}, false, nil)
		if err != nil && !errors.Is(err, outbox.ErrFull) {
			b.log.Warn("not queued in the outbox", "topic", topic, "err", err)
		}
		return
	}
	if retain && b.keepRetained(topic, payload) {
		return
	}
	tok := b.client.Publish(topic, b.qos, retain, payload)
	go func() {
		if tok.WaitTimeout(time.Minute) && tok.Error() != nil {
			b.log.Warn("mqtt publish failed", "topic", topic, "err", tok.Error())
		}
	}()
}

// PublishThen sends payload without waiting and calls then once the broker
// has it (QoS 1, 2) or it is written (QoS 0), or with the error.
func (b *Bus) PublishThen(topic string, retain bool, payload []byte, then func(error)) {
	tok := b.client.Publish(topic, b.qos, retain, payload)
	go func() {
		<-tok.Done()
		if err := tok.Error(); err != nil {
			b.log.Warn("mqtt publish failed", "topic", topic, "err", err)
			then(err)
			return
		}
		then(nil)
	}()
}

// PublishWait sends payload and waits until the broker has it (for QoS 1
// and 2) or timeout passes.
func (b *Bus) PublishWait(topic string, retain bool, payload []byte, timeout time.Duration) error {
	tok := b.client.Publish(topic, b.qos, retain, payload)
	if !tok.WaitTimeout(timeout) {
		return fmt.Errorf("mqtt publish %s: no acknowledgement within %s", topic, timeout)
	}
	return tok.Error()
}

// subscription is one Subscribe's handler, subscribed again after every
// reconnect.
type subscription struct{ handler paho.MessageHandler }

// Subscribe subscribes to topic now and after every reconnect. handler runs
// on the client's goroutine, in order; it may block, which holds back the
// next messages (back-pressure for lossless inputs). The handler's ack
// acknowledges the message: until it is called, the broker keeps the
// message and delivers it again to the next session (QoS 1 and 2).
//
// unsubscribe ends the subscription at the broker, unless a later
// Subscribe to the same topic has taken it over; it does not wait for the
// broker's answer. A subscription left in place keeps what is published
// meanwhile in the session (a restart); one whose reader is gone for good
// must be ended, or its messages, never acknowledged, fill the broker's
// window of messages in flight to this client and hold back every other
// topic's.
func (b *Bus) Subscribe(topic string, handler func(topic string, payload []byte, ack func())) (unsubscribe func(), err error) {
	sub := &subscription{handler: func(_ paho.Client, m paho.Message) { handler(m.Topic(), m.Payload(), m.Ack) }}
	b.mu.Lock()
	b.subs[topic] = sub
	b.mu.Unlock()
	unsubscribe = func() { b.unsubscribe(topic, sub) }
	tok := b.client.Subscribe(topic, b.qos, sub.handler)
	if !tok.WaitTimeout(10 * time.Second) {
		return unsubscribe, fmt.Errorf("mqtt subscribe %s: no answer within 10s", topic)
	}
	if err := tok.Error(); err != nil {
		return unsubscribe, err
	}
	if early := b.takeEarly(topic); len(early) > 0 {
		b.log.Info("mqtt: handing over messages left from the last session", "topic", topic, "messages", len(early))
		go func() {
			for _, m := range early {
				sub.handler(b.client, m)
			}
		}()
	}
	return unsubscribe, nil
}

// unsubscribe ends sub if it is still topic's subscription.
func (b *Bus) unsubscribe(topic string, sub *subscription) {
	b.mu.Lock()
	if b.subs[topic] != sub {
		b.mu.Unlock()
		return
	}
	delete(b.subs, topic)
	b.mu.Unlock()
	tok := b.client.Unsubscribe(topic)
	go func() {
		if tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
			b.log.Warn("mqtt unsubscribe failed", "topic", topic, "err", tok.Error())
		}
	}()
}

// unrouted keeps a message no subscription of this session took (yet).
func (b *Bus) unrouted(_ paho.Client, m paho.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.early) == 0 {
		time.AfterFunc(staleAfter+time.Second, b.dropStale)
	}
	b.early = append(b.early, earlyMessage{msg: m, at: time.Now()})
}

// takeEarly removes and returns the early messages on topics filter matches.
func (b *Bus) takeEarly(filter string) []paho.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var mine []paho.Message
	kept := b.early[:0]
	for _, e := range b.early {
		if matches(filter, e.msg.Topic()) {
			mine = append(mine, e.msg)
		} else {
			kept = append(kept, e)
		}
	}
	b.early = kept
	return mine
}

// dropStale acknowledges and drops early messages nobody subscribed to.
func (b *Bus) dropStale() {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.early[:0]
	for _, e := range b.early {
		if time.Since(e.at) < staleAfter {
			kept = append(kept, e)
			continue
		}
		b.log.Warn("mqtt: dropping a message no subscription takes any more", "topic", e.msg.Topic())
		e.msg.Ack()
	}
	b.early = kept
	if len(b.early) > 0 {
		time.AfterFunc(staleAfter, b.dropStale)
	}
}

// matches reports whether an MQTT topic filter (with + and #, and maybe a
// $share/<group>/ prefix) matches a topic.
func matches(filter, topic string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, f, ok := strings.Cut(rest, "/"); ok {
			filter = f
		}
	}
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		switch {
		case f == "#":
			return true
		case i >= len(ts):
			return false
		case f != "+" && f != ts[i]:
			return false
		}
	}
	return len(fs) == len(ts)
}

func (b *Bus) resubscribe() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for topic, sub := range b.subs {
		// Not waited for: this runs on paho's connect goroutine.
		b.client.Subscribe(topic, b.qos, sub.handler)
	}
}

// keepRetained keeps a retained payload for later if the connection is
// down now, and reports whether it did. While it is down paho would queue
// every retained publish in memory, and resend them in no particular
// order after the reconnect, leaving an older state retained over a newer
// one; what is retained is state, and only its newest value matters.
func (b *Bus) keepRetained(topic string, payload []byte) bool {
	b.retMu.Lock()
	defer b.retMu.Unlock()
	if b.client.IsConnectionOpen() {
		delete(b.retained, topic) // superseded
		return false
	}
	b.retained[topic] = payload
	return true
}

// retainedDelay is how long after a connection the retained payloads
// kept while it was down are sent.
const retainedDelay = 200 * time.Millisecond

// sendRetained sends the retained payloads kept while the connection was
// down, shortly after every connection.
func (b *Bus) sendRetained() {
	b.retMu.Lock()
	defer b.retMu.Unlock()
	if !b.client.IsConnectionOpen() {
		return // lost again: they wait for the next one
	}
	for topic, payload := range b.retained {
		b.client.Publish(topic, b.qos, true, payload)
		delete(b.retained, topic)
	}
}

// Close disconnects cleanly, waiting up to quiesce for pending work. The
// broker does not publish the will after a clean disconnect: publish the
// final status first. An outbox is given a few seconds to deliver what it
// holds, if the broker can be reached, and closed: the rest goes out after
// the next start.
func (b *Bus) Close(quiesce time.Duration) {
	b.closeOutbox()
	b.client.Disconnect(uint(quiesce.Milliseconds()))
}
