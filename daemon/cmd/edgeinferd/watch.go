package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
)

// watch subscribes to everything the daemon publishes and prints one
// readable line per message.
func watch(args []string) int {
	fs := flag.NewFlagSet("edgeinferd watch", flag.ExitOnError)
	path := fs.String("config", "config.toml", "the daemon's config file (broker and prefix are read from it)")
	broker := fs.String("broker", "", "broker URL (default: from the config)")
	prefix := fs.String("prefix", "", "topic prefix (default: from the config)")
	raw := fs.Bool("json", false, "print payloads as they are")
	fs.Parse(args)
	var user, password string // the daemon's login, when the config is read
	if *broker == "" || *prefix == "" {
		cfg, err := config.Load(*path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if user = cfg.MQTT.Username; user != "" {
			if password, err = cfg.MQTT.ReadPassword(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
		}
		if *broker == "" {
			*broker = cfg.MQTT.Broker
			if *broker == "embedded" {
				*broker = "tcp://" + cfg.MQTT.Listen
			}
		}
		if *prefix == "" {
			*prefix = cfg.MQTT.Prefix
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	opts := paho.NewClientOptions().AddBroker(*broker).SetClientID(fmt.Sprintf("edgeinferd-watch-%d", os.Getpid())).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second).SetUsername(user).SetPassword(password)
	opts.SetOnConnectHandler(func(c paho.Client) {
		fmt.Printf("watching %s/# on %s\n", *prefix, *broker)
		c.Subscribe(*prefix+"/#", 1, func(_ paho.Client, m paho.Message) {
			topic := strings.TrimPrefix(m.Topic(), *prefix+"/")
			if *raw {
				fmt.Printf("%s %s\n", topic, m.Payload())
				return
			}
			fmt.Println(describe(topic, m.Payload()))
		})
	})
	c := paho.NewClient(opts)
	c.Connect()
	<-ctx.Done()
	c.Disconnect(250)
	return 0
}

// describe renders one message for a person.
func describe(topic string, body []byte) string {
	now := time.Now().Format("15:04:05.000")
	switch {
	case strings.HasSuffix(topic, "/result"):
		var r payload.Result
		if json.Unmarshal(body, &r) != nil {
			break
		}
		return fmt.Sprintf("%s %-12s #%-5d %-40s -> %s  [%.1f ms, model %s v%s]", now, r.Pipeline, r.Seq, r.Source,
			summarize(r.Output), r.Timings.Total, r.Model.Name, r.Model.Version)
	case topic == "events":
		var e payload.Event
		if json.Unmarshal(body, &e) != nil {
			break
		}
		return fmt.Sprintf("%s EVENT %s: %s", now, e.Type, e.Message)
	case strings.HasPrefix(topic, "models/"):
		var st payload.ModelState
		if json.Unmarshal(body, &st) != nil {
			break
		}
		line := fmt.Sprintf("%s MODEL %s serving v%s", now, st.Model, st.Serving)
		if st.Serving == "" {
			line = fmt.Sprintf("%s MODEL %s serving nothing", now, st.Model)
		}
		for _, v := range slices.Sorted(maps.Keys(st.Versions)) {
			vs := st.Versions[v]
			line += fmt.Sprintf("; v%s %s", v, vs.State)
			if vs.Reason != "" {
				line += " (" + vs.Reason + ")"
			}
		}
		if st.Reason != "" {
			line += ": " + st.Reason
		}
		return line
	case topic == "stats":
		var st payload.Stats
		if json.Unmarshal(body, &st) != nil {
			break
		}
		var parts []string
		for name, p := range st.Pipelines {
			parts = append(parts, fmt.Sprintf("%s %d results p50 %.1f ms p99 %.1f ms", name, p.Results, p.P50MS, p.P99MS))
		}
		return fmt.Sprintf("%s STATS %s", now, strings.Join(parts, "; "))
	}
	return fmt.Sprintf("%s %s %s", now, topic, body)
}

// summarize prints a task's output compactly: labels with scores for a
// classifier, labels with scores and boxes for a detector, the JSON
// otherwise.
func summarize(out json.RawMessage) string {
	var c struct {
		Top []struct {
			Label string  `json:"label"`
			Score float64 `json:"score"`
		} `json:"top"`
		Detections *[]struct {
			Label string  `json:"label"`
			Score float64 `json:"score"`
			Box   struct {
				X1, Y1, X2, Y2 float64
			} `json:"box"`
		} `json:"detections"`
	}
	if json.Unmarshal(out, &c) != nil {
		return string(out)
	}
	var parts []string
	switch {
	case len(c.Top) > 0:
		for _, t := range c.Top {
			parts = append(parts, fmt.Sprintf("%s %.2f", t.Label, t.Score))
		}
	case c.Detections != nil:
		for _, d := range *c.Detections {
			parts = append(parts, fmt.Sprintf("%s %.2f [%.0f,%.0f %.0f,%.0f]", d.Label, d.Score, d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2))
		}
		if len(parts) == 0 {
			return "no objects"
		}
	default:
		return string(out)
	}
	return strings.Join(parts, ", ")
}
