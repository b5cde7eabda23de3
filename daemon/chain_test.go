package daemon

import (
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/daemon/router"
	"github.com/edgeinfer/edgeinfer/daemon/serving"
	"github.com/edgeinfer/edgeinfer/daemon/telemetry"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

// A reload adds, changes and removes pipelines fed by others as it does
// sensors' pipelines: each gets its feed while it has a from, and its queue
// goes back to a sensor when it has a sensor again.
func TestAReloadAddsChangesAndRemovesPipelinesFedByOthers(t *testing.T) {
	dir := t.TempDir()
	plugins, models, in := filepath.Join(dir, "bin"), filepath.Join(dir, "models"), filepath.Join(dir, "in")
	for _, d := range []string{plugins, filepath.Join(models, "m"), in} {
		os.MkdirAll(d, 0o755)
	}
	head := `device = "t"
plugin_dir = "` + plugins + `"
[models]
repository = "` + models + `"
[sensors.in]
kind = "dir"
path = "` + in + `"
[pipelines.p]
sensor = "in"
model = "m"
`
	parse := func(extra string) *config.Config {
		t.Helper()
		c, err := config.Parse(filepath.Join(dir, "config.toml"), head+extra)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	first := parse("[pipelines.c]\nfrom = \"p\"\nmodel = \"m\"\n")
	d := New(first, log)
	d.tel = &telemetry.Publisher{Bus: nopBus{}, Prefix: "t", Logger: log}
	d.mgr = serving.New(serving.Config{PluginDir: plugins, CacheDir: t.TempDir(), Logger: log,
		Start:   func(string, sdk.Access) (sdk.Process, error) { return sdk.NewFake(nopTask{}), nil },
		Publish: func(payload.ModelState) {}, Event: func(payload.Event) {}})
	d.watcher = repo.NewWatcher(repo.WatchOptions{Repository: models, Logger: log})
	t.Cleanup(func() {
		d.mu.Lock()
		for name := range d.pipelines {
			d.stopPipeline(name, router.ErrStopping)
		}
		for name := range d.sensors {
			d.stopSensor(name)
		}
		d.mu.Unlock()
		d.mgr.Close()
	})
	fedBy := func(want string) {
		t.Helper()
		var got []string
		for _, name := range slices.Sorted(maps.Keys(d.pipelines)) {
			run := d.pipelines[name]
			queue := slices.Contains(d.sensors["in"].sink.Queues(), run.p.Queue())
			switch {
			case run.feed != nil && !queue:
				got = append(got, name+"<-"+run.cfg.From)
			case run.feed == nil && queue:
				got = append(got, name+"<-in")
			default:
				t.Fatalf("pipeline %s: feed %v, on the sensor %v", name, run.feed != nil, queue)
			}
		}
		if strings.Join(got, " ") != want {
			t.Fatalf("pipelines %q, want %q", strings.Join(got, " "), want)
		}
	}
	d.mu.Lock()
	d.apply(nil, first)
	d.mu.Unlock()
	fedBy("c<-p p<-in")
	c := d.pipelines["c"]
	for _, step := range []struct {
		name, extra, want string
	}{
		{"a second pipeline fed by p, a crop table changed",
			"[pipelines.c]\nfrom = \"p\"\nmodel = \"m\"\n[pipelines.c.crop]\nmargin = 0.5\n[pipelines.d]\nfrom = \"p\"\nmodel = \"m\"\n", "c<-p d<-p p<-in"},
		{"a chain of two", "[pipelines.c]\nfrom = \"p\"\nmodel = \"m\"\n[pipelines.d]\nfrom = \"c\"\nmodel = \"m\"\n", "c<-p d<-c p<-in"},
		{"c on the sensor, d removed", "[pipelines.c]\nsensor = \"in\"\nmodel = \"m\"\n", "c<-in p<-in"},
		{"c fed by p again", "[pipelines.c]\nfrom = \"p\"\nmodel = \"m\"\n", "c<-p p<-in"},
	} {
		d.mu.Lock()
		d.apply(d.cfg, parse(step.extra))
		d.mu.Unlock()
		fedBy(step.want)
		if d.pipelines["c"] != c {
			t.Fatalf("%s: pipeline c was started again; a change keeps its worker and queue", step.name)
		}
	}
}
