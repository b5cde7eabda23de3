package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/sensors/internal/sensortest"
)

// broker stands in for the daemon's MQTT connection: it records the
// subscription and lets the test publish to the handler.
type broker struct {
	mu      sync.Mutex
	topic   string
	handler func(topic string, payload []byte, ack func())
	err     error // returned by Subscribe
	acked   []string
}

func (b *broker) subscribe(topic string, handler func(string, []byte, func())) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.topic, b.handler = topic, handler
	return b.err
}

// subscribed waits for the sensor to subscribe and returns the topic.
func (b *broker) subscribed(t *testing.T) string {
	t.Helper()
	sensortest.WaitFor(t, 5*time.Second, "the subscription", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.handler != nil
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.topic
}

// publish hands a message to the sensor's handler, as the MQTT client would;
// its ack records the topic.
func (b *broker) publish(t *testing.T, topic string, payload []byte) {
	t.Helper()
	b.subscribed(t)
	b.handler(topic, payload, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.acked = append(b.acked, topic)
	})
}

func (b *broker) acks() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.acked)
}

// start builds a sensor from body and runs it until the test ends.
func start(t *testing.T, body string) (*broker, *sensortest.Sink) {
	t.Helper()
	b := &broker{}
	env := sensortest.Env("uploads")
	env.Subscribe = b.subscribe
	s, err := New(env, sensortest.Decoder(body))
	if err != nil {
		t.Fatalf("New(%q): %v", body, err)
	}
	sink := &sensortest.Sink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	})
	return b, sink
}

func TestNewRejectsBadOptionsNamingThem(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{`topic = "a/#/b"`, `topic "a/#/b": "#" must be the whole last level`},
		{`topic = "a/b#"`, `topic "a/b#": "#" must be the whole last level`},
		{`topic = "a/x+/b"`, `topic "a/x+/b": "+" must be a whole level`},
		{`max_bytes = -1`, "max_bytes must be >= 0 (0 = no limit), got -1"},
		{`max_bytes = "big"`, "max_bytes"},
		{`qos = 1`, `unknown option "qos"`},
		{"share = \"a/b\"\ntopic = \"in/+\"", `share "a/b": must not hold "/", "+" or "#"`},
		{"share = \"a+\"\ntopic = \"in/+\"", `share "a+": must not hold "/", "+" or "#"`},
		{`share = "workers"`, `share "workers" needs a topic that every daemon of the group subscribes to: the default "edgeinfer/test/in/uploads" is this device's own`},
		{"share = \"workers\"\ntopic = \"$share/workers/in/+\"", `topic "$share/workers/in/+": is a shared subscription already: set share or a "$share/" topic, not both`},
		{`topic = "$share/workers"`, `topic "$share/workers": a shared subscription is "$share/<group>/<filter>"`},
		{`topic = "$share/workers/"`, `topic "$share/workers/": a shared subscription is "$share/<group>/<filter>"`},
		{`topic = "$share//in/+"`, `topic "$share//in/+": group "": is empty`},
		{`topic = "$share/w+/in/+"`, `topic "$share/w+/in/+": group "w+": must not hold "/", "+" or "#"`},
		{`topic = "$share/workers/in/#/x"`, `topic "$share/workers/in/#/x": "#" must be the whole last level`},
		{"share = \"workers\"\ntopic = \"in/x+\"", `topic "in/x+": "+" must be a whole level`},
	}
	for _, tt := range tests {
		_, err := New(sensortest.Env("uploads"), sensortest.Decoder(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q) = %v, want an error containing %q", tt.body, err, tt.want)
		}
	}
}

func TestSubscribesToTheConfiguredOrDefaultTopic(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{"", "edgeinfer/test/in/uploads"},
		{`topic = "cameras/+/jpeg"`, "cameras/+/jpeg"},
		{`topic = "uploads/#"`, "uploads/#"},
		{"share = \"workers\"\ntopic = \"fleet/in/+\"", "$share/workers/fleet/in/+"},
		{`topic = "$share/workers/fleet/in/+"`, "$share/workers/fleet/in/+"},
	}
	for _, tt := range tests {
		b, _ := start(t, tt.body)
		if got := b.subscribed(t); got != tt.want {
			t.Errorf("config %q subscribed to %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestSampleConfBuildsASensor(t *testing.T) {
	_, decode := sensortest.Sample(t, "mqtt", sampleConf)
	s, err := New(sensortest.Env("uploads"), decode)
	if err != nil {
		t.Fatalf("New(sample.conf): %v", err)
	}
	if got := s.(*sensor); got.topic != "edgeinfer/demo/in/uploads" || got.limits.MaxBytes != 8<<20 {
		t.Errorf("sample.conf gives topic %q, max_bytes %d", got.topic, got.limits.MaxBytes)
	}
	if k, ok := sensors.Lookup("mqtt"); !ok || k.SampleConfig != sampleConf {
		t.Fatalf("kind mqtt is not registered with its sample.conf")
	}
}

func TestImagesBecomeFramesAndBadPayloadsBadInputs(t *testing.T) {
	b, sink := start(t, `topic = "cams/+"`)
	png1, rgb1 := sensortest.PNG(t, 32, 24, 1)
	png2, rgb2 := sensortest.PNG(t, 16, 16, 2)
	huge := make([]byte, 50<<20)
	copy(huge, png1) // a valid header: the size alone must refuse it

	before := time.Now()
	b.publish(t, "cams/door", png1)
	b.publish(t, "cams/door", huge)
	b.publish(t, "cams/yard", []byte("hello"))
	b.publish(t, "cams/yard", png2)

	frames := sink.Frames()
	if len(frames) != 2 || sink.Offered() != 0 {
		t.Fatalf("got %d frames (%d offered), want 2 delivered", len(frames), sink.Offered())
	}
	for i, want := range []struct {
		source string
		w, h   int
		rgb    []byte
	}{{"cams/door#1", 32, 24, rgb1}, {"cams/yard#2", 16, 16, rgb2}} {
		f := frames[i]
		if f.Sensor != "uploads" || f.Seq != uint64(i+1) || f.Source != want.source || f.Width != want.w || f.Height != want.h ||
			!bytes.Equal(f.RGB, want.rgb) || f.Time.Before(before) {
			t.Errorf("frame %d = %s #%d %q %dx%d at %v; want uploads #%d %q %dx%d with the image's pixels",
				i, f.Sensor, f.Seq, f.Source, f.Width, f.Height, f.Time, i+1, want.source, want.w, want.h)
		}
	}

	bad := sink.BadInputs()
	if len(bad) != 2 {
		t.Fatalf("got %d bad inputs, want 2: %v", len(bad), bad)
	}
	if bad[0].Source != "cams/door" || bad[0].Err.Error() != "payload of 52428800 bytes is over max_bytes 33554432" {
		t.Errorf("bad input 0 = %q %v, want the oversized payload", bad[0].Source, bad[0].Err)
	}
	if bad[1].Source != "cams/yard" || !errors.Is(bad[1].Err, sensors.ErrBadImage) {
		t.Errorf("bad input 1 = %q %v, want the text payload as a bad image", bad[1].Source, bad[1].Err)
	}
}

func TestAMessageIsAcknowledgedOnceItsFrameIsFinishedOrRefused(t *testing.T) {
	b, sink := start(t, `topic = "in/+"`)
	data, _ := sensortest.PNG(t, 16, 16, 1)
	b.publish(t, "in/bad", []byte("not an image"))
	if got := b.acks(); !slices.Equal(got, []string{"in/bad"}) {
		t.Fatalf("after a bad input: acks %v, want [in/bad]", got)
	}
	b.publish(t, "in/good", data)
	b.publish(t, "in/kept", data)
	if got := b.acks(); len(got) != 1 {
		t.Fatalf("acked before the frames finished: %v", got)
	}
	frames := sink.Frames()
	frames[0].Finish(nil)
	frames[1].Finish(fmt.Errorf("daemon stopping: %w", sensors.ErrUnfinished))
	if got := b.acks(); !slices.Equal(got, []string{"in/bad", "in/good"}) {
		t.Fatalf("acks %v, want [in/bad in/good]: an unfinished frame's message stays unacknowledged", got)
	}
}

func TestMaxBytesOverridesTheLimit(t *testing.T) {
	b, sink := start(t, "max_bytes = 100")
	data, _ := sensortest.PNG(t, 32, 32, 1)
	b.publish(t, "t", data)
	bad := sink.BadInputs()
	if len(bad) != 1 || !strings.Contains(bad[0].Err.Error(), "over max_bytes 100") {
		t.Fatalf("a %d-byte image with max_bytes = 100 gave bad inputs %v", len(data), bad)
	}
}

func TestHandlerWaitsForDeliver(t *testing.T) {
	b, sink := start(t, "")
	release := make(chan struct{})
	sink.OnFrame = func(*sensors.Frame) { <-release }
	data, _ := sensortest.PNG(t, 16, 16, 1)
	returned := make(chan struct{})
	go func() {
		b.publish(t, "t", data)
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("the handler returned before the frame was taken: no back-pressure")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-returned
}

func TestRunReturnsTheSubscribeError(t *testing.T) {
	b := &broker{err: errors.New("not connected")}
	env := sensortest.Env("uploads")
	env.Subscribe = b.subscribe
	s, err := New(env, sensortest.Decoder(""))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(t.Context(), &sensortest.Sink{})
	if err == nil || err.Error() != `subscribe to "edgeinfer/test/in/uploads": not connected` {
		t.Fatalf("Run = %v, want the subscribe error", err)
	}
}

func TestASharedSubscriptionsFrameNamesTheTopicItsMessageCameOn(t *testing.T) {
	b, sink := start(t, "share = \"workers\"\ntopic = \"fleet/in/+\"")
	data, _ := sensortest.PNG(t, 16, 16, 1)
	b.publish(t, "fleet/in/417", data)
	frames := sink.Frames()
	if len(frames) != 1 || frames[0].Source != "fleet/in/417#1" {
		t.Fatalf("frames %v, want one with source fleet/in/417#1 (the topic, not the $share filter)", frames)
	}
}
