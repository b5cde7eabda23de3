package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// The outbox (daemon/outbox) through broker outages, with Mosquitto and
// the classify plugin on lenet5. The broker keeps its state across the
// outage (mosquitto.Persistent, stopped with SIGTERM), and the watcher has
// a persistent session subscribed before the daemon starts: whatever the
// daemon publishes, before, during (nothing) or after the outage, is
// queued for it, whether or not it has reconnected yet.

// outboxConfig is a daemon config with an outbox in dir bounded at
// maxBytes (0: the default bound).
func outboxConfig(t *testing.T, broker, prefix, dir string, maxBytes int, sensors, pipelines string) string {
	bound := ""
	if maxBytes > 0 {
		bound = fmt.Sprintf("outbox_max_bytes = %d", maxBytes)
	}
	return fmt.Sprintf(`
device = "e2e"
plugin_dir = %q
stats_interval = "500ms"

[log]
level = "debug"

[models]
repository = %q
threads = 1

[mqtt]
broker = %q
prefix = %q
qos = 1
outbox_dir = %q
%s
%s
%s`, binDir, models(t), broker, prefix, dir, bound, sensors, pipelines)
}

// persistentWatch is watch with a persistent session: the broker queues
// what it misses while it cannot connect (QoS 1).
func persistentWatch(t *testing.T, broker, prefix string) *watcher {
	t.Helper()
	w := &watcher{}
	record := func(_ paho.Client, m paho.Message) {
		w.mu.Lock()
		w.msgs = append(w.msgs, message{topic: strings.TrimPrefix(m.Topic(), prefix+"/"), payload: m.Payload(), retained: m.Retained()})
		w.mu.Unlock()
	}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("e2e-outbox-%d", time.Now().UnixNano())).
		SetCleanSession(false).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond).SetOrderMatters(true).SetDefaultPublishHandler(record)
	w.client = paho.NewClient(opts)
	if tok := w.client.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher: connect %s: %v", broker, tok.Error())
	}
	if tok := w.client.Subscribe(prefix+"/#", 1, record); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher: subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { w.client.Disconnect(100) })
	return w
}

// settled waits until the broker has acknowledged every record the
// outbox in dir delivered, which w saw on topics: a publish in flight when
// the broker goes away is sent again (QoS 1: at least once), and these
// tests want each result once. The cursor file (daemon/outbox) holds the
// seq of the last record acknowledged, and seqs count from 1.
func settled(t *testing.T, p *proc, dir string, w *watcher, topics ...string) {
	t.Helper()
	waitFor(t, p, 30*time.Second, "the outbox acknowledged", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "cursor"))
		if err != nil || len(b) != 20 || string(b[:8]) != "EIOCUR01" {
			return false
		}
		n := 0
		for _, topic := range topics {
			n += len(w.all(topic))
		}
		return binary.LittleEndian.Uint64(b[8:16]) == uint64(n)
	})
}

func doneFiles(inbox string) int {
	done, _ := filepath.Glob(filepath.Join(inbox, "done", "digit-*.png"))
	return len(done)
}

// outboxBytes is the size of the outbox's segment files.
func outboxBytes(dir string) int64 {
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	var n int64
	for _, s := range segs {
		if st, err := os.Stat(s); err == nil {
			n += st.Size()
		}
	}
	return n
}

// onceInOrder checks that rs answer the digits ds exactly once each, in
// the order their frames were made (seq increasing), and that they are
// right.
func onceInOrder(t *testing.T, rs []payload.Result, ds []digit) {
	t.Helper()
	for i := 1; i < len(rs); i++ {
		if rs[i].Seq <= rs[i-1].Seq {
			t.Fatalf("result %d has seq %d after %d: out of order or twice", i, rs[i].Seq, rs[i-1].Seq)
		}
	}
	if acc := checkDigits(t, rs, ds, func(r payload.Result) int { return indexOfName(r.Source) }); acc < 0.95 {
		t.Fatalf("accuracy %.3f", acc)
	}
}

func TestAFolderGoesOnThroughABrokerOutageAndEveryResultArrivesOnceInOrderAfterIt(t *testing.T) {
	broker := mosquitto.StartBroker(t, mosquitto.Persistent(t)...)
	prefix, inbox, box := prefixOf(t), t.TempDir(), filepath.Join(t.TempDir(), "outbox")
	w := persistentWatch(t, broker.URL, prefix)
	p := start(t, outboxConfig(t, broker.URL, prefix, box, 0, dirSensor(inbox), digitsPipeline))
	w.serving(t, p, "lenet5", "digits")
	ds := digits(t)[:90]

	dropDigits(t, inbox, ds[:30])
	waitFor(t, p, 60*time.Second, "the first 30 results", func() bool { return len(w.results(t, "digits")) == 30 })
	settled(t, p, box, w, "digits/result", "events")
	time.Sleep(300 * time.Millisecond) // and the watcher's own PUBACKs reached the broker

	broker.StopGracefully()
	dropDigits(t, inbox, ds[30:])
	// The pipeline goes on: each file moves to done/ once its result is on
	// disk in the outbox, with no broker.
	waitFor(t, p, 60*time.Second, "all 90 files in done/ during the outage", func() bool { return doneFiles(inbox) == 90 })
	time.Sleep(3 * time.Second) // the outbox tries to connect, and fails
	if n := len(w.results(t, "digits")); n != 30 {
		t.Fatalf("%d results arrived with the broker down", n)
	}
	if n := outboxBytes(box); n < 60*500 {
		t.Fatalf("the outbox holds %d bytes for 60 results", n)
	}

	broker.Resume(t)
	waitFor(t, p, 60*time.Second, "90 results after the outage", func() bool { return len(w.results(t, "digits")) >= 90 })
	time.Sleep(time.Second) // anything more (a result twice) arrives
	onceInOrder(t, w.results(t, "digits"), ds)
	if n := len(w.all("digits/result")); n != 90 {
		t.Fatalf("%d results for 90 files", n)
	}
	if n := outboxBytes(box); n > 64<<10 {
		t.Fatalf("%d bytes of segments left once everything was delivered", n)
	}
}

func TestResultsInTheOutboxSurviveADaemonKilledWithSIGKILLDuringAnOutage(t *testing.T) {
	broker := mosquitto.StartBroker(t, mosquitto.Persistent(t)...)
	prefix, inbox, box := prefixOf(t), t.TempDir(), filepath.Join(t.TempDir(), "outbox")
	w := persistentWatch(t, broker.URL, prefix)
	config := outboxConfig(t, broker.URL, prefix, box, 0, dirSensor(inbox), digitsPipeline)
	first := start(t, config)
	w.serving(t, first, "lenet5", "digits")
	ds := digits(t)[:40]

	broker.StopGracefully()
	dropDigits(t, inbox, ds)
	waitFor(t, first, 60*time.Second, "all 40 files in done/ (their results in the outbox)", func() bool { return doneFiles(inbox) == 40 })
	first.cmd.Process.Kill()
	<-first.done
	if n := len(w.results(t, "digits")); n != 0 {
		t.Fatalf("%d results arrived with the broker down", n)
	}

	broker.Resume(t)
	second := start(t, config) // the same outbox: what it holds goes first
	waitFor(t, second, 60*time.Second, "40 results from the outbox", func() bool { return len(w.results(t, "digits")) >= 40 })
	time.Sleep(time.Second)
	rs := w.results(t, "digits")
	onceInOrder(t, rs, ds)
	for _, r := range rs {
		if r.Seq < 1 || r.Seq > 40 {
			t.Fatalf("a result with seq %d: not one the first daemon made", r.Seq)
		}
	}
	if second.stderr.Len() == 0 || !strings.Contains(second.stderr.String(), "records kept from before go out first") {
		t.Fatalf("the second daemon did not say it found records in its outbox")
	}
}

func TestLiveResultsBeyondTheOutboxBoundAreDroppedAndTheirCountPublishedWhenTheBrokerReturns(t *testing.T) {
	broker := mosquitto.StartBroker(t, mosquitto.Persistent(t)...)
	prefix, box := prefixOf(t), filepath.Join(t.TempDir(), "outbox")
	w := persistentWatch(t, broker.URL, prefix)
	const frames = 400 // 16 s at 25 fps
	sensor := fmt.Sprintf("[sensors.pattern]\nkind = \"synthetic\"\nfps = 25\nwidth = 32\nheight = 32\nframes = %d\n", frames)
	pipeline := "[pipelines.live]\nsensor = \"pattern\"\nmodel = \"lenet5\"\n"
	p := start(t, outboxConfig(t, broker.URL, prefix, box, 64<<10, sensor, pipeline))
	w.serving(t, p, "lenet5", "live")
	waitFor(t, p, 30*time.Second, "results", func() bool { return len(w.results(t, "live")) >= 10 })

	broker.StopGracefully()
	outage := time.Now()
	time.Sleep(7 * time.Second) // ~175 results of ~700 bytes: more than 64 KiB
	broker.Resume(t)

	var ev payload.Event
	waitFor(t, p, 60*time.Second, "an outbox_overflow event", func() bool {
		evs := w.eventsOf(t, payload.EventOutboxOverflow)
		if len(evs) > 0 {
			ev = evs[0]
		}
		return len(evs) > 0
	})
	dropped := func(e payload.Event) uint64 {
		topics, _ := e.Attrs["topics"].(map[string]any)
		n, _ := topics[prefix+"/live/result"].(float64)
		return uint64(n)
	}
	if d, _ := ev.Attrs["dropped"].(float64); d == 0 || dropped(ev) == 0 || uint64(d) < dropped(ev) {
		t.Fatalf("outbox_overflow event: %+v", ev)
	}
	// Once the sensor has made all its frames, every result the pipeline
	// made either arrived or was counted as dropped.
	var st payload.Stats
	var arrived map[uint64]bool
	var lost uint64
	waitFor(t, p, 60*time.Second, "every result accounted for", func() bool {
		if json.Unmarshal([]byte(w.last("stats")), &st) != nil || st.Sensors["pattern"].Frames != frames {
			return false
		}
		arrived, lost = map[uint64]bool{}, 0
		for _, r := range w.results(t, "live") {
			arrived[r.Seq] = true
		}
		for _, e := range w.eventsOf(t, payload.EventOutboxOverflow) {
			lost += dropped(e)
		}
		return st.Pipelines["live"].Results == uint64(len(arrived))+lost
	})
	// In order (a result in flight when the broker went away may come
	// twice: QoS 1), and the results made during the outage up to the
	// bound were kept.
	rs := w.results(t, "live")
	during := 0
	for i, r := range rs {
		if i > 0 && r.Seq < rs[i-1].Seq {
			t.Fatalf("seq %d after %d", r.Seq, rs[i-1].Seq)
		}
		if r.CapturedAt.After(outage.Add(time.Second)) && r.CapturedAt.Before(outage.Add(6*time.Second)) {
			during++
		}
	}
	if during < 20 {
		t.Fatalf("only %d results made during the outage were kept", during)
	}
	t.Logf("%d results made, %d arrived (%d made during the outage), %d dropped and reported: %s",
		st.Pipelines["live"].Results, len(arrived), during, lost, ev.Message)
}
