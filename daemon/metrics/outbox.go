package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeinfer/edgeinfer/daemon/outbox"
)

// OutboxSource is what the outbox metrics read at each scrape: the
// daemon's outbox (daemon/outbox, bus.Outbox()).
type OutboxSource interface {
	// Depth is what waits for the broker: records and their bytes.
	Depth() (records int, bytes int64)
	// Dropped counts the records dropped for want of room since the
	// outbox was opened, per topic.
	Dropped() outbox.Overflow
	// MaxBytes is the bound ([mqtt] outbox_max_bytes).
	MaxBytes() int64
}

// OutboxDropKinds are the values of edgeinfer_outbox_dropped_total's kind
// label: a pipeline's results (and the images published with them),
// events (<prefix>/events) and command replies (<prefix>/cmd/reply).
// Lossless results are never dropped (their pipeline waits for room).
var OutboxDropKinds = []string{"result", "event", "reply"}

var (
	outboxRecords = desc("edgeinfer_outbox_records",
		"Records (results and events) in the on-disk outbox not yet acknowledged by the broker, read at the scrape.")
	outboxBytes = desc("edgeinfer_outbox_bytes",
		"Bytes of the records in the outbox not yet acknowledged by the broker (what outbox_max_bytes bounds), read at the scrape.")
	outboxMaxBytes = desc("edgeinfer_outbox_max_bytes",
		"The outbox's bound in bytes ([mqtt] outbox_max_bytes).")
	outboxDropped = desc("edgeinfer_outbox_dropped_total",
		"Records dropped because the outbox was full (live results and events; lossless results wait instead), by kind: result, event, reply.", "kind")
)

// outboxCollector reads an outbox at each scrape.
type outboxCollector struct {
	box    OutboxSource
	events string // <prefix>/events
	reply  string // <prefix>/cmd/reply
}

// NewOutboxCollector returns the metrics of the daemon's outbox, for
// Register: its depth (edgeinfer_outbox_records, edgeinfer_outbox_bytes),
// its bound (edgeinfer_outbox_max_bytes) and what it dropped for want of
// room (edgeinfer_outbox_dropped_total, by kind), all read from box at the
// scrape. prefix is [mqtt] prefix, which tells events and command replies
// from results in the dropped topics.
func NewOutboxCollector(box OutboxSource, prefix string) prometheus.Collector {
	prefix = strings.TrimSuffix(prefix, "/")
	return &outboxCollector{box: box, events: prefix + "/events", reply: prefix + "/cmd/reply"}
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{outboxRecords, outboxBytes, outboxMaxBytes, outboxDropped} {
		ch <- d
	}
}

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	records, bytes := c.box.Depth()
	ch <- prometheus.MustNewConstMetric(outboxRecords, prometheus.GaugeValue, float64(records))
	ch <- prometheus.MustNewConstMetric(outboxBytes, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(outboxMaxBytes, prometheus.GaugeValue, float64(c.box.MaxBytes()))
	byKind := map[string]uint64{}
	for topic, n := range c.box.Dropped().Topics {
		byKind[c.kind(topic)] += n
	}
	for _, kind := range OutboxDropKinds {
		ch <- prometheus.MustNewConstMetric(outboxDropped, prometheus.CounterValue, float64(byKind[kind]), kind)
	}
}

// kind is the kind label of a dropped record's topic.
func (c *outboxCollector) kind(topic string) string {
	switch topic {
	case c.events:
		return "event"
	case c.reply:
		return "reply"
	}
	return "result"
}
