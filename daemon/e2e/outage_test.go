package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

// outboxSample is one scrape of the outbox's metrics.
type outboxSample struct {
	at        time.Duration // since the feed began
	records   float64
	bytes     float64
	maxBytes  float64
	dropped   float64 // every kind
	connected float64 // edgeinfer_mqtt_connected
}

// scrapeOutbox reads the outbox's metrics from /metrics; it may run on any
// goroutine (no t).
func scrapeOutbox(base string) (outboxSample, error) {
	var s outboxSample
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("/metrics: %d %v", resp.StatusCode, err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return s, err
	}
	one := func(name string) (float64, error) {
		f, ok := fams[name]
		if !ok || len(f.Metric) == 0 {
			return 0, fmt.Errorf("/metrics has no %s", name)
		}
		var v float64
		for _, m := range f.Metric {
			if m.Gauge != nil {
				v += m.Gauge.GetValue()
			} else {
				v += m.Counter.GetValue()
			}
		}
		return v, nil
	}
	for name, dst := range map[string]*float64{"edgeinfer_outbox_records": &s.records, "edgeinfer_outbox_bytes": &s.bytes,
		"edgeinfer_outbox_max_bytes": &s.maxBytes, "edgeinfer_outbox_dropped_total": &s.dropped, "edgeinfer_mqtt_connected": &s.connected} {
		if *dst, err = one(name); err != nil {
			return s, err
		}
	}
	return s, nil
}

// The case: Mosquitto stopped for 30 seconds during a lossless run
// at 20 images/s, then started again on the same port: no result lost,
// their order kept, and the outbox's depth seen rising and falling in the
// metrics, scraped every 250 ms as Prometheus would (more often).
func TestAThirtySecondBrokerOutageAt20ImagesASecondLosesNothingAndTheOutboxDepthRisesAndFalls(t *testing.T) {
	const (
		rate   = 20               // images a second
		before = 5 * time.Second  // of feeding before the broker stops
		outage = 30 * time.Second // with the broker stopped
		after  = 10 * time.Second // of feeding once it is back
		scrape = 250 * time.Millisecond
		total  = int((before + outage + after) / time.Second * rate)
	)
	broker := mosquitto.StartBroker(t, mosquitto.Persistent(t)...)
	prefix, inbox, box := prefixOf(t), t.TempDir(), filepath.Join(t.TempDir(), "outbox")
	addr := mosquitto.FreeAddr(t)
	base := "http://" + addr
	w := persistentWatch(t, broker.URL, prefix)
	p := start(t, outboxConfig(t, broker.URL, prefix, box, 0, dirSensor(inbox),
		digitsPipeline+fmt.Sprintf("\n[http]\nlisten = %q\n", addr)))
	w.serving(t, p, "lenet5", "digits")
	waitFor(t, p, 30*time.Second, "the outbox metrics", func() bool { _, err := scrapeOutbox(base); return err == nil })

	// total images: the 200 sample digits over and over, each file a name
	// of its own (digit-0417.png is the 17th sample).
	samples := digits(t)
	ds := make([]digit, total)
	for i := range ds {
		d := samples[i%len(samples)]
		ds[i] = digit{name: fmt.Sprintf("digit-%04d.png", i), label: d.label, png: d.png}
	}

	t0 := time.Now()
	var wg sync.WaitGroup
	// The feed: one image every 50 ms, written as a camera would.
	feedErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for _, d := range ds {
			tmp := filepath.Join(inbox, "."+d.name+".part")
			err := os.WriteFile(tmp, d.png, 0o644)
			if err == nil {
				err = os.Rename(tmp, filepath.Join(inbox, d.name))
			}
			if err != nil {
				feedErr <- err
				return
			}
			<-tick.C
		}
	}()
	// The scrapes, until stop.
	var (
		mu        sync.Mutex
		series    []outboxSample
		scrapeErr error
	)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(scrape)
		defer tick.Stop()
		for {
			s, err := scrapeOutbox(base)
			s.at = time.Since(t0)
			mu.Lock()
			if err != nil && scrapeErr == nil {
				scrapeErr = err
			}
			if err == nil {
				series = append(series, s)
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wg.Wait()
		}
	}()

	time.Sleep(time.Until(t0.Add(before)))
	broker.StopGracefully()
	down := time.Since(t0)
	time.Sleep(time.Until(t0.Add(before + outage)))
	broker.Resume(t)
	up := time.Since(t0)

	// Every image's result arrives (the outbox reconnects with a backoff
	// of up to 30 s), and every file is let go.
	waitFor(t, p, 120*time.Second, fmt.Sprintf("%d results", total), func() bool {
		seen := map[uint64]bool{}
		for _, r := range w.results(t, "digits") {
			seen[r.Seq] = true
		}
		return len(seen) >= total
	})
	allResults := time.Since(t0)
	waitFor(t, p, 30*time.Second, "the outbox gauge back to 0 records and 0 bytes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		last := series[len(series)-1]
		return last.at > allResults && last.records == 0 && last.bytes == 0
	})
	time.Sleep(time.Second) // anything more (a result twice) arrives
	close(stop)
	wg.Wait()
	stopped = true
	select {
	case err := <-feedErr:
		t.Fatalf("feeding the folder: %v", err)
	default:
	}
	if scrapeErr != nil {
		t.Fatalf("a scrape failed: %v", scrapeErr)
	}

	// Nothing lost, nothing twice (a record in flight when the connection
	// went may go again, identical: QoS 1 is at least once), in order.
	var rs []payload.Result
	first := map[uint64][]byte{}
	resent, twice := 0, []string(nil)
	for _, m := range w.all("digits/result") {
		var r payload.Result
		if err := json.Unmarshal(m.payload, &r); err != nil {
			t.Fatalf("result is not JSON: %v", err)
		}
		if prev, ok := first[r.Seq]; ok {
			if !bytes.Equal(prev, m.payload) {
				t.Fatalf("seq %d arrived twice with different results: a frame processed twice", r.Seq)
			}
			resent++
			twice = append(twice, fmt.Sprintf("seq %d (captured %.1fs)", r.Seq, r.CapturedAt.Sub(t0).Seconds()))
			continue
		}
		first[r.Seq] = m.payload
		rs = append(rs, r)
	}
	if resent > 32 { // outbox.Options.Window: the publishes that may be in flight
		t.Fatalf("%d results arrived twice: more than were in flight when the broker went away", resent)
	}
	onceInOrder(t, rs, ds)
	if len(rs) != total {
		t.Fatalf("%d results for %d images", len(rs), total)
	}
	if n := doneFiles(inbox); n != total {
		t.Fatalf("%d of %d files in done/", n, total)
	}
	if left, _ := filepath.Glob(filepath.Join(inbox, "digit-*.png")); len(left) != 0 {
		t.Fatalf("%d files left in the folder", len(left))
	}

	// The outbox depth in the metrics: flat near 0 before, rising through
	// the outage (nothing is delivered, so it never falls), back to 0.
	var maxBefore, maxDuring outboxSample
	var drained time.Duration
	prev := -1.0
	for _, s := range series {
		switch {
		case s.at < down:
			if s.records > maxBefore.records {
				maxBefore = s
			}
		case s.at < up:
			if s.at > down+time.Second && s.records < prev {
				t.Errorf("the outbox depth fell during the outage: %v records at %s after %v", s.records, s.at, prev)
			}
			if s.at > down+time.Second {
				prev = s.records
			}
			if s.records > maxDuring.records {
				maxDuring = s
			}
		default:
			if s.records > maxDuring.records {
				maxDuring = s // the images fed until the outbox reconnects
			}
			if drained == 0 && s.records <= 2 {
				drained = s.at
			}
		}
		if s.dropped != 0 || s.maxBytes != 64<<20 {
			t.Fatalf("at %s: %v records dropped (a lossless pipeline waits instead), bound %v", s.at, s.dropped, s.maxBytes)
		}
	}
	atResume := series[0]
	for _, s := range series {
		if s.at < up {
			atResume = s
		}
	}
	want := float64(rate * (outage - 5*time.Second) / time.Second) // the results of 25 of the 30 s at least
	if maxBefore.records > rate || maxDuring.records < want || atResume.records < want {
		t.Fatalf("outbox depth: at most %v records before the outage (want <= %d), %v at its end and at most %v (want >= %v)",
			maxBefore.records, rate, atResume.records, maxDuring.records, want)
	}
	if perRecord := maxDuring.bytes / maxDuring.records; perRecord < 200 || perRecord > 4096 {
		t.Fatalf("the outbox gauge says %v bytes for %v records", maxDuring.bytes, maxDuring.records)
	}
	if drained == 0 {
		t.Fatalf("the outbox depth never fell back after the broker returned")
	}
	// And the retained stats, sent again once the broker is back, say so.
	waitFor(t, p, 10*time.Second, "<prefix>/stats with an empty outbox", func() bool {
		var st payload.Stats
		return json.Unmarshal([]byte(w.last("stats")), &st) == nil && st.Outbox != nil &&
			st.Outbox.Records == 0 && st.Outbox.MaxBytes == 64<<20 && st.Pipelines["digits"].Results == uint64(total)
	})

	var spark []string
	for _, s := range series {
		if s.at.Round(scrape)%(2*time.Second) == 0 {
			spark = append(spark, fmt.Sprintf("%.0fs:%.0f", s.at.Seconds(), s.records))
		}
	}
	t.Logf("%d images at %d/s; broker stopped at %.1fs, back at %.1fs (down %.1fs); %d scrapes every %s",
		total, rate, down.Seconds(), up.Seconds(), (up - down).Seconds(), len(series), scrape)
	t.Logf("outbox depth: at most %.0f records before the outage; %.0f records (%.0f bytes) when the broker came back; max %.0f records, %.0f bytes (%.0f bytes a record) at %.1fs",
		maxBefore.records, atResume.records, atResume.bytes, maxDuring.records, maxDuring.bytes, maxDuring.bytes/maxDuring.records, maxDuring.at.Seconds())
	t.Logf("drained (<= 2 records) %.1fs after the broker came back; all %d results at %.1fs; %d arrived twice (at least once), 0 lost, in order; %d files in done/; 0 dropped",
		(drained - up).Seconds(), total, allResults.Seconds(), resent, doneFiles(inbox))
	t.Logf("records by time: %s", strings.Join(spark, " "))
	if len(twice) > 0 {
		t.Logf("arrived twice: %s", strings.Join(twice, ", "))
	}
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(line, "broker reachable again") {
			t.Logf("edgeinferd: %s", line)
		}
	}
}
