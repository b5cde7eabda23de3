package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// A fleet: several edgeinferd, each with its own device id (and so its own
// client id, prefix and last will), on one Mosquitto, whose mqtt sensors
// share one input topic through an MQTT shared subscription. The broker
// gives each image to one daemon of the group; edgeinfer has no
// coordinator of its own.

const (
	fleetGroup  = "workers"
	fleetImages = 500
)

type fleetSetup struct {
	broker string
	input  string // images go to <input>/<n>; every daemon subscribes to $share/workers/<input>/+
	root   string // daemon d publishes under <root>/<d>
}

func newFleet(t *testing.T) fleetSetup {
	name := strings.ReplaceAll(t.Name(), "/", "_")
	return fleetSetup{broker: mosquitto.Start(t), input: "fleet/" + name + "/in", root: "e2e/" + name}
}

// config is the config of the daemon of device d.
func (f fleetSetup) config(t *testing.T, d string) string {
	t.Helper()
	sensor := fmt.Sprintf("[sensors.inbox]\nkind = \"mqtt\"\ntopic = %q\nshare = %q\n", f.input+"/+", fleetGroup)
	c := setup{broker: f.broker, sensors: sensor}.config(t, f.root+"/"+d)
	if !strings.Contains(c, `device = "e2e"`) {
		t.Fatal("the e2e config no longer sets device = \"e2e\"")
	}
	return strings.Replace(c, `device = "e2e"`, fmt.Sprintf("device = %q", d), 1)
}

// member starts the daemon of device d and a watcher on its prefix, and
// waits until it serves.
func (f fleetSetup) member(t *testing.T, d string) (*proc, *watcher) {
	t.Helper()
	p := start(t, f.config(t, d))
	w := watch(t, f.broker, f.root+"/"+d)
	w.serving(t, p, "lenet5", "digits")
	return p, w
}

// inputs are the images the test publishes: image n is digit n%200, sent
// to <input>/<n>.
func fleetInputs(t *testing.T) []digit {
	ds := digits(t)
	in := make([]digit, fleetImages)
	for n := range in {
		in[n] = ds[n%len(ds)]
		in[n].name = fmt.Sprintf("image %d (%s)", n, in[n].name)
	}
	return in
}

// publish sends images from..to-1 at QoS 1 without waiting for each
// acknowledgement, so that the broker has them all at once (a daemon then
// has many waiting for it), and waits for every acknowledgement.
func (f fleetSetup) publish(t *testing.T, w *watcher, in []digit, from, to int) {
	t.Helper()
	var toks []paho.Token
	for n := from; n < to; n++ {
		toks = append(toks, w.client.Publish(fmt.Sprintf("%s/%d", f.input, n), 1, false, in[n].png))
	}
	for n, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish image %d: %v", from+n, tok.Error())
		}
	}
}

// inputOf maps a result to the image it answers: its source is
// "<input>/<n>#<seq>", the topic the image came on.
func (f fleetSetup) inputOf(r payload.Result) int {
	topic, _, _ := strings.Cut(r.Source, "#")
	rest, ok := strings.CutPrefix(topic, f.input+"/")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		return -1
	}
	return n
}

// answer is one result for an input, by which daemon.
type answer struct {
	device string
	result payload.Result
}

// answers gathers the results of every member by input, checking that each
// result names the device that published it.
func (f fleetSetup) answers(t *testing.T, members map[string]*watcher) map[int][]answer {
	t.Helper()
	by := map[int][]answer{}
	for d, w := range members {
		for _, r := range w.results(t, "digits") {
			if r.Device != d {
				t.Fatalf("a result on %s's topic says device %q", d, r.Device)
			}
			n := f.inputOf(r)
			if n < 0 || n >= fleetImages {
				t.Fatalf("a result of %s for no image published: source %q", d, r.Source)
			}
			by[n] = append(by[n], answer{device: d, result: r})
		}
	}
	return by
}

func resultCount(ws ...*watcher) int {
	n := 0
	for _, w := range ws {
		n += len(w.all("digits/result"))
	}
	return n
}

func TestTwoDaemonsSharingAnInputTopicAnswerEachOf500ImagesExactlyOnce(t *testing.T) {
	f := newFleet(t)
	a, wa := f.member(t, "fleet-a")
	_, wb := f.member(t, "fleet-b")
	in := fleetInputs(t)
	f.publish(t, wa, in, 0, fleetImages)

	waitFor(t, a, 120*time.Second, "500 results", func() bool { return resultCount(wa, wb) >= fleetImages })
	time.Sleep(time.Second) // a duplicate would arrive now
	var all []payload.Result
	for _, w := range []*watcher{wa, wb} {
		all = append(all, w.results(t, "digits")...)
	}
	acc := checkDigits(t, all, in, f.inputOf) // each exactly once
	byA, byB := len(wa.all("digits/result")), len(wb.all("digits/result"))
	t.Logf("fleet-a answered %d, fleet-b %d; accuracy %.3f", byA, byB, acc)
	if byA == 0 || byB == 0 {
		t.Fatalf("fleet-a answered %d and fleet-b %d: both should have taken a share", byA, byB)
	}
	if acc < 0.95 {
		t.Fatalf("accuracy %.3f < 0.95", acc)
	}
	f.answers(t, map[string]*watcher{"fleet-a": wa, "fleet-b": wb}) // results name their device
	for d, w := range map[string]*watcher{"fleet-a": wa, "fleet-b": wb} {
		if w.last("status") != "online" {
			t.Fatalf("%s status %q, want online", d, w.last("status"))
		}
	}
}

// What Mosquitto (2.0.11; MQTT 3.1.1 and 5 alike) does with a member of a
// shared subscription that dies: the messages it was given and had not
// acknowledged stay in its persistent session, and so does its
// round-robin share of what is published while it is away; none goes to
// the other members. They are delivered when it comes back with the same
// client id, which systemd's Restart= does. The daemon that keeps going
// finishes its own share.
func TestADaemonKilledMidRunInAFleetLosesNoImage(t *testing.T) {
	f := newFleet(t)
	a, wa := f.member(t, "fleet-a")
	b, wb := f.member(t, "fleet-b")
	members := map[string]*watcher{"fleet-a": wa, "fleet-b": wb}
	in := fleetInputs(t)
	const beforeKill = 300
	f.publish(t, wa, in, 0, beforeKill)
	waitFor(t, b, 120*time.Second, "fleet-b's first 40 results", func() bool { return len(wb.all("digits/result")) >= 40 })
	b.cmd.Process.Kill()
	<-b.done
	time.Sleep(300 * time.Millisecond) // results already at the broker arrive
	byBBefore := len(wb.all("digits/result"))
	byABefore := len(wa.all("digits/result"))

	// More images while fleet-b is down; fleet-a keeps going.
	f.publish(t, wa, in, beforeKill, fleetImages)
	settled := settle(t, a, wa, 2*time.Second, 120*time.Second)
	answered := f.answers(t, members)
	afterKill := 0
	for n := beforeKill; n < fleetImages; n++ {
		for _, x := range answered[n] {
			if x.device == "fleet-a" {
				afterKill++
			}
		}
	}
	if afterKill == 0 || settled <= byABefore {
		t.Fatalf("fleet-a answered none of the images published after fleet-b died (%d results before, %d after)", byABefore, settled)
	}
	waiting := fleetImages - len(answered)
	t.Logf("fleet-b answered %d before its SIGKILL; with fleet-b down fleet-a answered %d in all (%d of the %d published after the kill); %d images wait in fleet-b's session",
		byBBefore, settled, afterKill, fleetImages-beforeKill, waiting)
	if w := wb.last("status"); w != "offline" {
		t.Fatalf("fleet-b's status after the kill is %q, want offline (its last will)", w)
	}

	// fleet-b comes back (same device, same client id): the broker hands it
	// what its session kept.
	b2 := start(t, f.config(t, "fleet-b"))
	waitFor(t, b2, 120*time.Second, "an answer for every image", func() bool { return len(f.answers(t, members)) == fleetImages })
	time.Sleep(time.Second)
	answered = f.answers(t, members)
	preKill := map[int]bool{} // images fleet-b answered before its SIGKILL
	for _, r := range wb.results(t, "digits")[:byBBefore] {
		preKill[f.inputOf(r)] = true
	}
	var firsts []payload.Result
	twice := 0
	for n := range fleetImages {
		as := answered[n]
		if len(as) == 0 {
			t.Fatalf("%s: no answer", in[n].name)
		}
		firsts = append(firsts, as[0].result)
		if len(as) == 1 {
			continue
		}
		twice++
		// Only an image fleet-b had answered but not yet acknowledged when
		// it died comes again, and only to fleet-b.
		if len(as) > 2 || as[0].device != "fleet-b" || as[1].device != "fleet-b" || !preKill[n] {
			t.Fatalf("%s answered %d times: %v", in[n].name, len(as), devices(as))
		}
	}
	total := resultCount(wa, wb)
	t.Logf("after fleet-b's restart: %d results for %d images, %d answered twice (at least once: answered by fleet-b, not yet acknowledged at the kill); fleet-a %d, fleet-b %d before and %d after the restart",
		total, fleetImages, twice, len(wa.all("digits/result")), byBBefore, len(wb.all("digits/result"))-byBBefore)
	// Mosquitto sends a client at most max_inflight_messages (20)
	// unacknowledged messages: no more can come again.
	if twice > 20 || total != fleetImages+twice {
		t.Fatalf("%d images answered twice, %d results for %d images", twice, total, fleetImages)
	}
	if acc := checkDigits(t, firsts, in, f.inputOf); acc < 0.95 {
		t.Fatalf("accuracy %.3f < 0.95", acc)
	}
}

func devices(as []answer) []string {
	var ds []string
	for _, a := range as {
		ds = append(ds, a.device)
	}
	return ds
}

// settle waits until w has seen no new result for quiet, and returns its
// count of results.
func settle(t *testing.T, p *proc, w *watcher, quiet, timeout time.Duration) int {
	t.Helper()
	n, since := len(w.all("digits/result")), time.Now()
	waitFor(t, p, timeout, "results to stop coming", func() bool {
		if m := len(w.all("digits/result")); m != n {
			n, since = m, time.Now()
		}
		return time.Since(since) >= quiet
	})
	return n
}
