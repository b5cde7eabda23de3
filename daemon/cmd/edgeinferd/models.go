package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeinfer/edgeinfer/daemon/config"
	"github.com/edgeinfer/edgeinfer/daemon/payload"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

// modelRow is one version of one model in `edgeinferd models`.
type modelRow struct {
	Model     string `json:"model"`
	Version   string `json:"version"`
	Task      string `json:"task,omitempty"`
	Signature string `json:"signature,omitempty"`
	Input     string `json:"input,omitempty"`  // HxWxC, "any" when the model takes any size
	Labels    int    `json:"labels,omitempty"` // labels in its manifest
	Golden    int    `json:"golden"`           // golden samples the version is validated on
	Problem   string `json:"problem,omitempty"`
	// State is what the running daemon says of the version (its retained
	// <prefix>/models/<model>); "" when no daemon answered.
	State  string `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// models lists the model repository, each model's versions newest first:
// every version's task, signature,
// input and golden samples, what is wrong with it if anything, and, when a
// daemon is running on the config's broker, the state it gives the version.
func models(args []string) int {
	fs := flag.NewFlagSet("edgeinferd models", flag.ExitOnError)
	path := fs.String("config", "config.toml", "the daemon's config file (repository, broker and prefix are read from it)")
	asJSON := fs.Bool("json", false, "print a JSON array")
	wait := fs.Duration("wait", 2*time.Second, "how long to wait for the running daemon's model states (0: do not ask)")
	fs.Parse(args)
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rows, err := scanRepository(cfg.Models.Repository)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	states := map[string]payload.ModelState{}
	if *wait > 0 {
		states = modelStates(cfg, *wait)
	}
	for i, r := range rows {
		if st, ok := states[r.Model]; ok {
			if vs, ok := st.Versions[r.Version]; ok {
				rows[i].State, rows[i].Reason = vs.State, vs.Reason
			} else {
				rows[i].State = "not loaded"
			}
		}
	}
	if *asJSON {
		b, _ := json.MarshalIndent(rows, "", "  ")
		fmt.Println(string(b))
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tVERSION\tTASK\tSIGNATURE\tINPUT\tLABELS\tGOLDEN\tSTATE")
	for _, r := range rows {
		state := r.State
		if state == "" {
			state = "-"
		}
		if r.Reason != "" {
			state += ": " + r.Reason
		}
		if r.Problem != "" {
			state += " (" + r.Problem + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Model, r.Version, dash(r.Task), dash(r.Signature), dash(r.Input), r.Labels, r.Golden, state)
	}
	tw.Flush()
	if len(states) == 0 && *wait > 0 {
		fmt.Println("(no running edgeinferd answered on the config's broker: STATE is what the repository alone says)")
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// scanRepository reads every model folder of the repository.
func scanRepository(repository string) ([]modelRow, error) {
	entries, err := os.ReadDir(repository)
	if err != nil {
		return nil, fmt.Errorf("models.repository: %w", err)
	}
	var rows []modelRow
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		vs, err := repo.Scan(repository, e.Name())
		if err != nil {
			rows = append(rows, modelRow{Model: e.Name(), Version: "-", Problem: err.Error()})
			continue
		}
		for _, v := range vs {
			r := modelRow{Model: v.Model, Version: v.Version}
			if v.Err != nil {
				r.Problem = v.Err.Error()
				rows = append(rows, r)
				continue
			}
			m := v.Manifest
			r.Task, r.Signature, r.Labels = m.Task, m.Signature, len(m.Labels)
			if g, err := npy.Read(filepath.Join(v.Dir, "golden", "input_"+m.Input.Key+".npy")); err == nil && len(g.Shape) > 0 {
				r.Golden = int(g.Shape[0])
			}
			r.Input = "any"
			if m.Input.Height > 0 {
				r.Input = fmt.Sprintf("%dx%dx%d", m.Input.Height, m.Input.Width, m.Input.Channels)
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// modelStates collects the retained model states the running daemon
// publishes, waiting at most wait for the broker.
func modelStates(cfg *config.Config, wait time.Duration) map[string]payload.ModelState {
	broker := cfg.MQTT.Broker
	if broker == "embedded" {
		broker = "tcp://" + cfg.MQTT.Listen
	}
	var mu sync.Mutex
	states := map[string]payload.ModelState{}
	password, err := cfg.MQTT.ReadPassword()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return states
	}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("edgeinferd-models-%d", os.Getpid())).
		SetConnectTimeout(wait).SetUsername(cfg.MQTT.Username).SetPassword(password)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		return states
	}
	defer c.Disconnect(100)
	got := make(chan struct{}, 1)
	c.Subscribe(cfg.MQTT.Prefix+"/models/+", 1, func(_ paho.Client, m paho.Message) {
		var st payload.ModelState
		if json.Unmarshal(m.Payload(), &st) == nil && st.Model != "" {
			mu.Lock()
			states[st.Model] = st
			mu.Unlock()
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}).WaitTimeout(wait)
	// Retained messages come at once: wait for the first, then a moment more.
	select {
	case <-got:
		time.Sleep(200 * time.Millisecond)
	case <-time.After(wait):
	}
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(states)
}
