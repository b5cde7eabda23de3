// Command edgeinferd is the edgeinfer daemon.
//
//	edgeinferd [-config config.toml]         run until SIGTERM or SIGINT
//	edgeinferd -check [-config config.toml]  check the config and exit
//	edgeinferd watch [-config config.toml]   print what the daemon publishes
//
// See README.md for the config reference and the MQTT topics.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeinfer/edgeinfer/daemon"
	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	_ "github.com/edgeinfer/edgeinfer/sensors/all" // every sensor kind
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "watch" {
		os.Exit(watch(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("edgeinferd", flag.ExitOnError)
	path := fs.String("config", "config.toml", "the config file")
	check := fs.Bool("check", false, "check the config (and that every pipeline's model and plugin exist), then exit")
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
		return checkModels(cfg)
	}
	log := newLogger(cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := daemon.New(cfg, log).Run(ctx); err != nil {
		log.Error("edgeinferd failed", "err", err)
		return 1
	}
	return 0
}

// checkModels reports, for -check, what each pipeline would serve.
func checkModels(cfg *config.Config) int {
	for _, w := range cfg.Warnings {
		fmt.Println("warning:", w)
	}
	bad := 0
	for name, p := range cfg.Pipelines {
		v, err := repo.Newest(cfg.Models.Repository, p.Model)
		if err == nil {
			bin := cfg.PluginDir + "/edgeinfer-" + v.Manifest.Task
			if _, serr := os.Stat(bin); serr != nil {
				err = fmt.Errorf("no plugin for task %q: %w", v.Manifest.Task, serr)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: pipelines.%s: %v\n", cfg.File(), name, err)
			bad++
			continue
		}
		fmt.Printf("pipeline %s: sensor %s -> model %s version %s (%s)\n", name, p.Sensor, v.Model, v.Version, v.Manifest.Task)
	}
	if bad > 0 {
		return 1
	}
	fmt.Printf("%s: ok\n", cfg.File())
	return 0
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
