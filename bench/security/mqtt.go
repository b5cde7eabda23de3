package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/bench/internal/kit"
	"github.com/edgeinfer/edgeinfer/daemon/broker"
)

// The camera publishes where the example ACL lets it (edgeinfer/+/in/#);
// the daemon's side reads it there.
const (
	cameraTopic    = "edgeinfer/bench/in/cam"
	cameraPassword = "camera-secret"
	daemonPassword = "daemon-secret"
	viewerPassword = "viewer-secret"
	exampleACL     = "daemon/broker/examples/acl"
)

// contestant is one broker with its two clients' logins: the camera's on
// the address cameras use, the daemon's as edgeinferd logs in.
type contestant struct {
	name             string
	cameraURL        string
	camUser, camPass string
	daemonURL        string
	daemonUser       string
	daemonPass       string

	daemon   paho.Client
	camera   paho.Client
	received chan arrival

	lat      []time.Duration
	connect  []time.Duration
	connects int // for client ids: a broker may not have let the last one go yet
	rates    []float64
}

// arrival is a message the daemon's side got: its number and when.
type arrival struct {
	seq uint64
	at  time.Time
}

// benchMQTT compares the brokers on connects, one message at a time and a
// burst.
func benchMQTT(ctx context.Context, s settings) error {
	dir, err := os.MkdirTemp("", "edgeinfer-bench-mqtt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Mosquitto started as root reads its files as its own user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	users, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	for user, pass := range map[string]string{"camera": cameraPassword, "edgeinferd": daemonPassword, "viewer": viewerPassword} {
		if err := broker.SetPassword(users, user, pass); err != nil {
			return err
		}
	}
	b, err := os.ReadFile(exampleACL)
	if err != nil {
		return err
	}
	if err := os.WriteFile(acl, b, 0o644); err != nil {
		return err
	}
	if err := os.Chmod(users, 0o644); err != nil {
		return err
	}

	// A client that closes its connection is logged at warning level.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	open, err := broker.Start(broker.Options{Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		return err
	}
	defer open.Close()
	var rules broker.Rules
	if rules.Users, err = broker.ReadUsers(users); err != nil {
		return err
	}
	if rules.ACL, err = broker.ReadACL(acl); err != nil {
		return err
	}
	guarded, err := broker.Start(broker.Options{Listen: "127.0.0.1:0", Rules: rules, Logger: quiet})
	if err != nil {
		return err
	}
	defer guarded.Close()
	mosq, mosqAddr, err := kit.StartMosquitto(ctx, dir, fmt.Sprintf("allow_anonymous false\npassword_file %s\nacl_file %s\n", users, acl))
	if err != nil {
		return err
	}
	defer mosq.Stop()

	embedded := func(name string, b *broker.Broker, camUser, camPass string) *contestant {
		self := b.Credentials()
		return &contestant{name: name, cameraURL: "tcp://" + b.Addr(), camUser: camUser, camPass: camPass,
			daemonURL: b.URL(), daemonUser: self.Username, daemonPass: self.Password()}
	}
	cs := []*contestant{
		embedded("embedded broker, open to all (limit)", open, "", ""),
		embedded("embedded broker, users and ACL", guarded, "camera", cameraPassword),
		{name: "Mosquitto, the same users and ACL", cameraURL: "tcp://" + mosqAddr, camUser: "camera", camPass: cameraPassword,
			daemonURL: "tcp://" + mosqAddr, daemonUser: "edgeinferd", daemonPass: daemonPassword},
	}
	for _, c := range cs {
		if err := c.open(); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		defer c.close()
	}
	// A camera the ACL does not let publish there must not get through,
	// or the guarded contestants guard nothing.
	for _, c := range cs[1:] {
		if err := c.refusesViewer(); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}

	payload := make([]byte, s.payload)
	for i := -200; i < s.connects; i++ { // the first 200 of each warm up
		for _, c := range cs {
			d, err := c.connectOnce()
			if err != nil {
				return fmt.Errorf("%s: connect: %w", c.name, err)
			}
			if i >= 0 {
				c.connect = append(c.connect, d)
			}
		}
	}
	var seq uint64
	for i := -200; i < s.messages; i++ {
		for _, c := range cs {
			seq++
			d, err := c.roundTrip(seq, payload)
			if err != nil {
				return fmt.Errorf("%s: message %d: %w", c.name, seq, err)
			}
			if i >= 0 {
				c.lat = append(c.lat, d)
			}
		}
	}
	for range 3 {
		for _, c := range cs {
			rate, err := c.burstOf(s.burst, &seq, payload)
			if err != nil {
				return fmt.Errorf("%s: burst: %w", c.name, err)
			}
			c.rates = append(c.rates, rate)
		}
	}

	fmt.Printf("## mqtt: a camera's QoS 1 messages (%d bytes) to the daemon's subscription; %d connects, %d messages one at a time, contestants alternating; 3 bursts of %d\n\n",
		s.payload, s.connects, s.messages, s.burst)
	fmt.Println("| broker | connect p50 | connect p99 | message p50 | message p99 | burst msgs/s (median) | message p50 vs limit | burst vs limit |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	limitLat, limitRate := kit.Summarise(cs[0].lat).P50, kit.Median(cs[0].rates)
	for _, c := range cs {
		con, lat, rate := kit.Summarise(c.connect), kit.Summarise(c.lat), kit.Median(c.rates)
		fmt.Printf("| %s | %s | %s | %s | %s | %.0f | %.2fx | %.2fx |\n", c.name, kit.Ms(con.P50), kit.Ms(con.P99), kit.Us(lat.P50), kit.Us(lat.P99),
			rate, float64(lat.P50)/float64(limitLat), rate/limitRate)
	}
	fmt.Println()
	return nil
}

func (c *contestant) options(url, id, user, pass string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false)
}

// open connects the daemon's side, subscribed, and the camera.
func (c *contestant) open() error {
	c.received = make(chan arrival, 1<<16)
	c.daemon = paho.NewClient(c.options(c.daemonURL, "bench-daemon", c.daemonUser, c.daemonPass))
	if err := wait(c.daemon.Connect()); err != nil {
		return fmt.Errorf("daemon's side: %w", err)
	}
	if err := wait(c.daemon.Subscribe(cameraTopic, 1, func(_ paho.Client, m paho.Message) {
		c.received <- arrival{seq: binary.BigEndian.Uint64(m.Payload()), at: time.Now()}
	})); err != nil {
		return fmt.Errorf("daemon's side: subscribe: %w", err)
	}
	c.camera = paho.NewClient(c.options(c.cameraURL, "bench-camera", c.camUser, c.camPass))
	if err := wait(c.camera.Connect()); err != nil {
		return fmt.Errorf("camera: %w", err)
	}
	return nil
}

func (c *contestant) close() {
	c.camera.Disconnect(100)
	c.daemon.Disconnect(100)
}

// refusesViewer checks that the viewer, who may log in but whom the ACL
// gives no write, reaches the daemon's side with nothing.
func (c *contestant) refusesViewer() error {
	v := paho.NewClient(c.options(c.cameraURL, "bench-viewer", "viewer", viewerPassword))
	if err := wait(v.Connect()); err != nil {
		return fmt.Errorf("viewer: %w", err)
	}
	wait(v.Publish(cameraTopic, 1, false, binary.BigEndian.AppendUint64(nil, 0)))
	v.Disconnect(100)
	select {
	case a := <-c.received:
		return fmt.Errorf("the viewer's message %d reached the daemon's side: the ACL is not applied", a.seq)
	case <-time.After(500 * time.Millisecond):
		return nil
	}
}

// connectOnce times a camera's connect (CONNECT to CONNACK, the password
// checked), then disconnects.
func (c *contestant) connectOnce() (time.Duration, error) {
	c.connects++
	cl := paho.NewClient(c.options(c.cameraURL, fmt.Sprintf("bench-connect-%d", c.connects), c.camUser, c.camPass))
	t0 := time.Now()
	err := wait(cl.Connect())
	d := time.Since(t0)
	if err == nil {
		cl.Disconnect(0)
	}
	return d, err
}

// roundTrip publishes message seq and waits until the daemon's side has it.
func (c *contestant) roundTrip(seq uint64, payload []byte) (time.Duration, error) {
	binary.BigEndian.PutUint64(payload, seq)
	t0 := time.Now()
	c.camera.Publish(cameraTopic, 1, false, payload)
	select {
	case a := <-c.received:
		if a.seq != seq {
			return 0, fmt.Errorf("got message %d", a.seq)
		}
		return a.at.Sub(t0), nil
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("not received within 10 s")
	}
}

// burstOf publishes n messages at once and returns messages per second
// until the daemon's side has them all, in order.
func (c *contestant) burstOf(n int, seq *uint64, payload []byte) (float64, error) {
	first := *seq + 1
	t0 := time.Now()
	for range n {
		*seq++
		p := append([]byte(nil), payload...)
		binary.BigEndian.PutUint64(p, *seq)
		c.camera.Publish(cameraTopic, 1, false, p)
	}
	for i := range uint64(n) {
		select {
		case a := <-c.received:
			if a.seq != first+i {
				return 0, fmt.Errorf("message %d came where %d was due", a.seq, first+i)
			}
		case <-time.After(30 * time.Second):
			return 0, fmt.Errorf("%d of %d messages received", i, n)
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// wait waits for a paho token, up to 10 s.
func wait(t paho.Token) error {
	if !t.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("no answer within 10 s")
	}
	return t.Error()
}
