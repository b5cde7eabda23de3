package metrics

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// dashboardFile is the Grafana dashboard shipped with the daemon.
var dashboardFile = filepath.Join("..", "..", "docs", "grafana", "edgeinfer.json")

// registered maps the name of every series the daemon's registry exports
// to its metric's name (histograms and summaries have _bucket, _sum and
// _count series), from a registry given something to say about every
// metric.
func registered(t *testing.T) map[string]string {
	t.Helper()
	loaded := time.Now()
	snap := Snapshot{
		Pipelines: []Pipeline{{Name: "p", Model: "m", Stats: payload.PipelineStats{Frames: 1, Crops: &payload.CropStats{Made: 1}}}},
		Sensors:   map[string]payload.SensorStats{"cam": {Frames: 1}},
		Models: []payload.ModelState{{Model: "m", Serving: "1", Versions: map[string]payload.VersionState{
			"1": {State: payload.StateServing, PID: os.Getpid(), LoadedAt: &loaded, LoadMS: 1, WarmupMS: 1, Pipelines: []string{"p"}}}}},
		MQTT: MQTT{Connected: true},
	}
	m := New(func() Snapshot { return snap }, quiet)
	m.ObserveResult(payload.Result{Pipeline: "p"})
	m.ObserveEvent(payload.Event{Type: payload.EventStarted})
	// The daemon registers the outbox's metrics when it has one.
	if err := m.Register(NewOutboxCollector(&fakeOutbox{records: 1, bytes: 1, max: 1 << 20,
		dropped: map[string]uint64{"x/p/result": 1}}, "x")); err != nil {
		t.Fatal(err)
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, f := range fams {
		name := f.GetName()
		names[name] = name
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = name, name, name
			delete(names, name)
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = name, name
		}
	}
	return names
}

// metricNames are the metrics of a registered map.
func metricNames(series map[string]string) map[string]bool {
	out := map[string]bool{}
	for _, name := range series {
		out[name] = true
	}
	return out
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	if dec.More() {
		t.Fatalf("%s: more than one JSON value", dashboardFile)
	}
	return d
}

// queries are the dashboard's PromQL expressions, each with where it is.
func (d dashboard) queries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for i, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q: query %d is empty", p.Title, i)
				}
				out[p.Title+"/"+string(rune('A'+i))] = tg.Expr
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil {
			json.Unmarshal(v.Query, &q.Query) // a plain string
		}
		// label_values(<series selector>, <label>) is Grafana's, around PromQL.
		if m := labelValuesRE.FindStringSubmatch(q.Query); m != nil {
			out["variable "+v.Name] = m[1]
		} else {
			t.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, q.Query)
		}
	}
	return out
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

func TestTheDashboardIsValidJSONWithAQueryInEveryPanel(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard lacks a uid, title or panels: %+v", d)
	}
	ids := map[int]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if other, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q has id %d, taken by %q (or 0)", p.Title, p.ID, other)
			}
			ids[p.ID] = p.Title
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q does not fit Grafana's 24 columns: %+v", p.Title, p.GridPos)
			}
			if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != "${datasource}") {
				t.Errorf("panel %q does not use the datasource variable", p.Title)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if len(d.queries(t)) < 20 {
		t.Errorf("only %d queries", len(d.queries(t)))
	}
}

func TestTheDashboardQueriesOnlyMetricsTheDaemonRegisters(t *testing.T) {
	names := registered(t)
	used := map[string]bool{}
	for where, expr := range readDashboard(t).queries(t) {
		ids, err := promqlMetrics(expr)
		if err != nil {
			t.Errorf("%s: %v: %s", where, err, expr)
			continue
		}
		if len(ids) == 0 {
			t.Errorf("%s names no metric: %s", where, expr)
		}
		for _, id := range ids {
			if _, ok := names[id]; !ok {
				t.Errorf("%s queries %s, which the daemon does not register", where, id)
			}
			used[names[id]] = true
		}
	}
	// And every metric of the daemon's own has a panel.
	for _, name := range slices.Sorted(maps.Keys(metricNames(names))) {
		if strings.HasPrefix(name, "edgeinfer_") && !used[name] {
			t.Errorf("%s is registered but no panel shows it", name)
		}
	}
}

func TestTheReadmeNamesEveryMetric(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, name := range slices.Sorted(maps.Keys(metricNames(registered(t)))) {
		if strings.HasPrefix(name, "edgeinfer_") && !strings.Contains(readme, "`"+name+"`") {
			t.Errorf("README.md does not name %s", name)
		}
	}
}

func TestPromQLMetricNamesAreFoundAndTheRestLeftOut(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`rate(a_total{job="x", le=~"1|2"}[5m])`, []string{"a_total"}},
		{`histogram_quantile(0.99, sum by (le, stage) (rate(h_bucket{instance=~"$instance"}[$__rate_interval])))`, []string{"h_bucket"}},
		{`sum(rate(a[1m])) by (pipeline) / on (pipeline) group_left(model) b`, []string{"a", "b"}},
		{`count(s == 0) or vector(0)`, []string{"s"}},
		{`x offset 5m and ignoring(a, b) y unless z > bool 1e-3`, []string{"x", "y", "z"}},
		{`max_over_time(m{a="}{[("}[1h:5m]) - min(n) without (le)`, []string{"m", "n"}},
		{`{__name__="named"} + ns:recorded:rate5m`, []string{"named", "ns:recorded:rate5m"}},
		{`topk(3, sum by (type) (increase(e_total[${__range}])))`, []string{"e_total"}},
	} {
		got, err := promqlMetrics(c.expr)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: got %q (%v), want %q", c.expr, got, err, c.want)
		}
	}
	for _, bad := range []string{`rate(a[5m]`, `a{b="c"`, `"open`} {
		if _, err := promqlMetrics(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
