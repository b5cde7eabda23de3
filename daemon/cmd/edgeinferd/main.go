// Command edgeinferd is the edgeinfer daemon.
//
//	edgeinferd [-config config.toml]         run until SIGTERM or SIGINT
//	edgeinferd -check [-config config.toml]  check the config, load every
//	                                         pipeline's model in its plugin, exit
//	edgeinferd -check -config-only           check the config file only
//	edgeinferd watch [-config config.toml]   print what the daemon publishes
//	edgeinferd models [-config config.toml]  list the model repository: versions,
//	                                         signatures, and the running daemon's states
//	edgeinferd passwd <file> <user>          set a user's password in an MQTT password file
//	                                         (Mosquitto's format; read from the terminal or stdin)
//	edgeinferd keygen [-out file] <name>     make a key pair for signing model versions
//	edgeinferd sign -key <file> <dir>...     sign model version directories (edgeinfer.sig)
//	edgeinferd verify -keys <file> <dir>...  check version directories' signatures
//
// See README.md for the config reference and the MQTT topics.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/edgeinfer/edgeinfer/daemon"
	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/internal/logging"
	"github.com/edgeinfer/edgeinfer/internal/sdnotify"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	_ "github.com/edgeinfer/edgeinfer/sensors/all" // every sensor kind
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "watch" {
		os.Exit(watch(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "models" {
		os.Exit(models(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "passwd" {
		os.Exit(passwd(os.Args[2:], os.Stdin, os.Stderr))
	}
	if len(os.Args) > 1 && signingCommands[os.Args[1]] != nil {
		os.Exit(signingCommands[os.Args[1]](os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("edgeinferd", flag.ExitOnError)
	path := fs.String("config", "config.toml", "the config file")
	check := fs.Bool("check", false, "check the config and load every pipeline's model in its plugin (load, options, warm-up, validation), then exit")
	configOnly := fs.Bool("config-only", false, "with -check: check the config file only, loading no model")
	fs.Parse(args)
	if fs.NArg() == 1 && *path == "config.toml" {
		*path = fs.Arg(0) // edgeinferd -check other.toml
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *check {
		return checkModels(cfg, !*configOnly)
	}
	log := newLogger(cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d := daemon.New(cfg, log)
	reportToSystemd(d, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			d.Reload()
		}
	}()
	if err := d.Run(ctx); err != nil {
		log.Error("edgeinferd failed", "err", err)
		return 1
	}
	return 0
}

// reportToSystemd makes d report to systemd when it runs as a Type=notify
// service ($NOTIFY_SOCKET; with WatchdogSec=, $WATCHDOG_USEC). The
// variables are then removed from the environment: the plugin processes
// must not inherit them.
func reportToSystemd(d *daemon.Daemon, log *slog.Logger) {
	n, err := sdnotify.FromEnv()
	if err != nil {
		log.Warn("not reporting to systemd", "err", err)
	}
	watchdog, err := sdnotify.Watchdog()
	if err != nil {
		log.Warn("no watchdog", "err", err)
	}
	sdnotify.Unsetenv()
	if n == nil {
		return
	}
	d.ReportTo(n, watchdog)
	if watchdog > 0 {
		log.Info("reporting to systemd", "watchdog", watchdog, "ping_every", watchdog/2)
	} else {
		log.Info("reporting to systemd, no watchdog")
	}
}

// checkModels reports, for -check, what each pipeline would serve; with
// load, each model is loaded in its plugin with its pipelines' options,
// warmed up and validated against its golden samples, as the daemon would
// before serving it.
func checkModels(cfg *config.Config, load bool) int {
	for _, w := range cfg.Warnings {
		fmt.Println("warning:", w)
	}
	byModel := cfg.ModelPipelines()
	// Plugins are started as the daemon starts them: confined unless
	// [models] confine or the kernel says otherwise (a warning, then).
	confined := load && daemon.ConfinePlugins(cfg.Models.Confine,
		slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	bad := 0
	for _, model := range slices.Sorted(maps.Keys(byModel)) {
		pipelines := byModel[model]
		report, err := checkModel(cfg, model, pipelines, load, confined)
		for _, name := range slices.Sorted(maps.Keys(pipelines)) {
			p := cfg.Pipelines[name]
			perr := err
			if perr == nil {
				perr = report.refused[name]
			}
			if perr != nil {
				fmt.Fprintf(os.Stderr, "%s: pipelines.%s: model %s: %v\n", cfg.File(), name, model, perr)
				bad++
				continue
			}
			in := "sensor " + p.Sensor
			if p.From != "" {
				in = "crops of pipeline " + p.From
			}
			fmt.Printf("pipeline %s: %s -> model %s version %s (%s)%s\n", name, in, model, report.version, report.task, report.detail)
		}
	}
	if bad > 0 {
		return 1
	}
	fmt.Printf("%s: ok\n", cfg.File())
	return 0
}

type checkReport struct {
	version, task, detail string
	refused               map[string]error
}

// checkModel checks the version of model that would serve now, in a
// plugin process confined when confined is set.
func checkModel(cfg *config.Config, model string, pipelines map[string]json.RawMessage, load, confined bool) (checkReport, error) {
	s := cfg.Serving(model)
	var v repo.Version
	var err error
	if s.Version == config.VersionLatest {
		v, err = repo.Servable(cfg.Models.Repository, model)
	} else {
		v, err = pinned(cfg.Models.Repository, model, s.Version)
	}
	if err != nil {
		return checkReport{}, err
	}
	r := checkReport{version: v.Version, task: v.Manifest.Task, refused: map[string]error{}}
	bin := filepath.Join(cfg.PluginDir, "edgeinfer-"+manifest.Plugin(v.Manifest.Task))
	if _, err := os.Stat(bin); err != nil {
		return r, fmt.Errorf("no plugin for task %q: %w", v.Manifest.Task, err)
	}
	if !load {
		return r, nil
	}
	if err := daemon.Vet(cfg, &v); err != nil {
		return r, fmt.Errorf("version %s: refused before loading: %w", v.Version, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.LoadTimeout.Duration)
	defer cancel()
	p, err := sdk.Start(sdk.Options{Path: bin, Stderr: os.Stderr, Confine: confined, Access: sdk.AccessFor(v.Dir, pipelines)})
	if err != nil {
		return r, err
	}
	defer p.Kill()
	info, err := p.Load(ctx, sdk.LoadRequest{Model: model, Version: v.Version, ModelDir: v.Dir, Threads: cfg.Models.Threads, Tolerance: s.Tolerance})
	if err != nil {
		return r, fmt.Errorf("version %s: load: %w", v.Version, err)
	}
	for name, opts := range pipelines {
		if err := p.Configure(ctx, map[string]json.RawMessage{name: opts}); err != nil {
			r.refused[name] = fmt.Errorf("version %s: options: %w", v.Version, err)
		}
	}
	val, err := p.Validate(ctx)
	if err != nil {
		return r, fmt.Errorf("version %s: validation: %w", v.Version, err)
	}
	r.detail = fmt.Sprintf(": loaded, warm-up %.1f ms", sdk.Millis(info.Warmup))
	if val.Samples > 0 {
		r.detail += fmt.Sprintf(", golden samples reproduced (max abs diff %.2g, tolerance %.2g)", val.MaxAbsDiff, val.Tolerance)
	} else {
		r.detail += ", no golden samples to validate against"
	}
	return r, nil
}

// pinned returns version of model if it can be served.
func pinned(repository, model, version string) (repo.Version, error) {
	vs, err := repo.Scan(repository, model)
	if err != nil {
		return repo.Version{}, err
	}
	for _, v := range vs {
		if v.Version == version {
			return v, v.Err
		}
	}
	return repo.Version{}, fmt.Errorf("pinned version %s (serving.%s.version) is not in the repository", version, model)
}

// newLogger makes the daemon's logger from [log] (checked by config).
func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	levels := map[string]slog.Level{}
	for comp, name := range c.Levels {
		var l slog.Level
		l.UnmarshalText([]byte(name))
		levels[comp] = l
	}
	return logging.New(os.Stderr, c.Format, level, levels)
}
