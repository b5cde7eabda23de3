// Command security is `make bench-security`: what edgeinfer's protections
// cost, each against the limit (the same work without the protection) and,
// where a user would otherwise run something else, against that, in one run.
// It prints Markdown tables for BENCHMARKS.md.
//
//   - start: a model version's plugin process, from exec to loaded, warmed
//     up and validated against its golden samples (what a reload waits for),
//     confined with Landlock and unconfined (the limit), alternating round by
//     round; and a Python process that imports TensorFlow, loads the same
//     SavedModel and calls it once (python_start.py).
//   - vet: what runs before any process loads a version: its op check
//     (tfmodels/graphcheck) and its signature check (internal/signing, on a
//     signed copy), against hashing its files alone (the limit of a
//     signature check) and against loading it in TensorFlow through the C
//     API (what every version costs anyway), for every model of the
//     repositories given.
//   - mqtt: connects and QoS 1 messages from a camera to the daemon on the
//     embedded broker with the example users and ACL
//     (daemon/broker/examples/acl), on the embedded broker open to all (the
//     limit), and on Mosquitto with the same password and ACL files (what a
//     user would otherwise run).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeinfer/edgeinfer/bench/internal/kit"
	"github.com/edgeinfer/edgeinfer/daemon/repo"
	"github.com/edgeinfer/edgeinfer/internal/signing"
	"github.com/edgeinfer/edgeinfer/plugins/sdk"
	"github.com/edgeinfer/edgeinfer/plugins/sdk/confine"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/graphcheck"
	"github.com/edgeinfer/edgeinfer/tfmodels/manifest"
)

type settings struct {
	bin, python     string
	repos           []string // model repositories for vet
	startModels     []string // models of the first repository for start
	rounds, vetRuns int
	messages, burst int
	connects        int
	payload         int
}

func main() {
	var s settings
	var repos, startModels string
	flag.StringVar(&s.bin, "bin", "bin", "folder of edgeinferd's plugins (edgeinfer-classify)")
	flag.StringVar(&s.python, "python", ".venv/bin/python", "Python with tensorflow")
	flag.StringVar(&repos, "models", "models", "model repositories for the vet table, comma-separated; the first holds the start models")
	flag.StringVar(&startModels, "start", "lenet5,resnet50", "classify models whose plugin start is timed")
	flag.IntVar(&s.rounds, "rounds", 10, "starts per model and contestant")
	flag.IntVar(&s.vetRuns, "vet-runs", 5, "timed runs of each vetting step per version (and 3 loads)")
	flag.IntVar(&s.messages, "messages", 2000, "QoS 1 messages sent one at a time per broker")
	flag.IntVar(&s.burst, "burst", 10000, "QoS 1 messages sent at once per broker")
	flag.IntVar(&s.connects, "connects", 200, "connects per broker")
	flag.IntVar(&s.payload, "payload", 4096, "message size in bytes (an image from a camera)")
	parts := flag.String("parts", "start,vet,mqtt", "which tables")
	flag.Parse()
	for _, r := range strings.Split(repos, ",") {
		if r != "" {
			s.repos = append(s.repos, r)
		}
	}
	s.startModels = strings.Split(startModels, ",")
	log.SetFlags(0)
	ctx := context.Background()
	for _, part := range strings.Split(*parts, ",") {
		var err error
		switch part {
		case "start":
			err = benchStart(ctx, s)
		case "vet":
			err = benchVet(s)
		case "mqtt":
			err = benchMQTT(ctx, s)
		default:
			err = fmt.Errorf("-parts: %q is none of start, vet, mqtt", part)
		}
		if err != nil {
			log.Fatalf("%s: %v", part, err)
		}
	}
}

// benchStart times plugin starts, confined and not, and Python's.
func benchStart(ctx context.Context, s settings) error {
	if err := confine.Check(); err != nil {
		return fmt.Errorf("this kernel cannot confine plugins, so there is nothing to compare: %w", err)
	}
	fmt.Printf("## start: exec to loaded, warmed up and validated, %d rounds, contestants alternating (Landlock ABI %d)\n\n", s.rounds, confine.ABI())
	fmt.Println("| model | contestant | handshake p50 | ready p50 | ready p99 | ready vs unconfined |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: |")
	for _, model := range s.startModels {
		v, err := latest(s.repos[0], model)
		if err != nil {
			return err
		}
		plugin := filepath.Join(s.bin, "edgeinfer-"+manifest.Plugin(v.Manifest.Task))
		var hs [2][]time.Duration
		var ready [3][]time.Duration                 // unconfined, confined, Python
		for round := -1; round < s.rounds; round++ { // round -1 warms the page cache
			for c, confined := range []bool{false, true} {
				h, r, err := startPlugin(ctx, plugin, v, confined)
				if err != nil {
					return fmt.Errorf("%s (confined %v): %w", model, confined, err)
				}
				if round >= 0 {
					hs[c], ready[c] = append(hs[c], h), append(ready[c], r)
				}
			}
			r, err := startPython(s.python, v.Dir)
			if err != nil {
				return fmt.Errorf("%s in Python: %w", model, err)
			}
			if round >= 0 {
				ready[2] = append(ready[2], r)
			}
		}
		limit := kit.Summarise(ready[0]).P50
		for c, name := range []string{"edgeinferd plugin, unconfined (limit)", "edgeinferd plugin, confined", "Python: import tensorflow, load, one call"} {
			st := kit.Summarise(ready[c])
			h := "-"
			if c < 2 {
				h = kit.Ms(kit.Summarise(hs[c]).P50)
			}
			fmt.Printf("| %s | %s | %s | %s | %s | %.2fx |\n", model, name, h, kit.Ms(st.P50), kit.Ms(st.P99), float64(st.P50)/float64(limit))
		}
	}
	fmt.Println()
	return nil
}

// startPlugin starts v's plugin as the daemon does, and returns the time to
// the handshake and the time until the version is loaded (with its warm-up)
// and validated.
func startPlugin(ctx context.Context, bin string, v repo.Version, confined bool) (handshake, ready time.Duration, err error) {
	t0 := time.Now()
	p, err := sdk.Start(sdk.Options{Path: bin, Stderr: os.Stderr, Confine: confined, Access: sdk.AccessFor(v.Dir, nil)})
	if err != nil {
		return 0, 0, err
	}
	defer p.Stop()
	handshake = time.Since(t0)
	if _, err := p.Load(ctx, sdk.LoadRequest{Model: v.Model, Version: v.Version, ModelDir: v.Dir}); err != nil {
		return 0, 0, err
	}
	val, err := p.Validate(ctx)
	if err != nil {
		return 0, 0, err
	}
	if val.Samples == 0 {
		return 0, 0, fmt.Errorf("%s: no golden samples validated", v.Dir)
	}
	return handshake, time.Since(t0), nil
}

// startPython runs python_start.py on dir and returns the time from exec
// to its "ready" line.
func startPython(python, dir string) (time.Duration, error) {
	t0 := time.Now()
	cmd := exec.Command(python, "bench/security/python_start.py", dir)
	// The kernels the plugins run (sdk.KernelsEnv), unless the caller chose.
	cmd.Env = append([]string{sdk.KernelsEnv + "=0"}, os.Environ()...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(string(out), "ready") {
		return 0, fmt.Errorf("python_start.py printed %q", out)
	}
	return d, nil
}

// latest is model's newest version in repository, which must be servable.
func latest(repository, model string) (repo.Version, error) {
	vs, err := repo.Scan(repository, model)
	if err != nil {
		return repo.Version{}, err
	}
	if len(vs) == 0 {
		return repo.Version{}, fmt.Errorf("%s/%s: no versions (make models)", repository, model)
	}
	v := vs[len(vs)-1]
	return v, v.Err
}

// benchVet times each vetting step of every model's newest version.
func benchVet(s settings) error {
	key, err := signing.GenerateKey("bench")
	if err != nil {
		return err
	}
	keys := signing.Keys{key.Public().ID: key.Public()}
	tmp, err := os.MkdirTemp("", "edgeinfer-bench-vet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fmt.Printf("## vet: before a version loads, medians of %d runs taking turns (loads: of 3), files in the page cache\n\n", s.vetRuns)
	fmt.Println("| model | files | op check | signature check | sha256 of the files (limit) | signature vs limit | TensorFlow load | vetting / load |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	var sumCheck, sumVerify, sumHash, sumLoad time.Duration
	var sumBytes int64
	for _, repository := range s.repos {
		entries, err := os.ReadDir(repository)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			v, err := latest(repository, e.Name())
			if err != nil {
				return err
			}
			signed := filepath.Join(tmp, e.Name())
			if err := os.CopyFS(signed, os.DirFS(v.Dir)); err != nil {
				return err
			}
			if _, err := signing.Sign(signed, key); err != nil {
				return err
			}
			size, err := treeSize(v.Dir)
			if err != nil {
				return err
			}
			opCheck := func() error {
				b, err := os.ReadFile(filepath.Join(v.Dir, repo.SavedModelFile))
				if err != nil {
					return err
				}
				r, err := graphcheck.Check(b, nil)
				if err != nil {
					return err
				}
				return r.Err(v.Dir, v.Model)
			}
			verify := func() error { _, err := signing.Verify(signed, keys); return err }
			medians, err := timeRuns(s.vetRuns, opCheck, verify, func() error { return hashFiles(v.Dir) })
			if err != nil {
				return err
			}
			check, verified, hash := medians[0], medians[1], medians[2]
			loads, err := timeRuns(3, func() error {
				m, err := tfmodels.Load(v.Dir, tfmodels.Options{})
				if err != nil {
					return err
				}
				return m.Close()
			})
			if err != nil {
				return err
			}
			load := loads[0]
			fmt.Printf("| %s | %.1f MB | %s | %s | %s | %.2fx | %s | %.1f%% |\n", e.Name(), float64(size)/1e6, kit.Ms(check), kit.Ms(verified), kit.Ms(hash),
				float64(verified)/float64(hash), kit.Ms(load), 100*float64(check+verified)/float64(load))
			sumCheck, sumVerify, sumHash, sumLoad, sumBytes = sumCheck+check, sumVerify+verified, sumHash+hash, sumLoad+load, sumBytes+size
		}
	}
	fmt.Printf("| **all** | %.1f MB | %s | %s | %s | %.2fx | %s | %.1f%% |\n\n", float64(sumBytes)/1e6, kit.Ms(sumCheck), kit.Ms(sumVerify), kit.Ms(sumHash),
		float64(sumVerify)/float64(sumHash), kit.Ms(sumLoad), 100*float64(sumCheck+sumVerify)/float64(sumLoad))
	return nil
}

// timeRuns runs each of fs n times, taking turns, and returns their
// median times.
func timeRuns(n int, fs ...func() error) ([]time.Duration, error) {
	d := make([][]time.Duration, len(fs))
	for range n {
		for i, f := range fs {
			t0 := time.Now()
			if err := f(); err != nil {
				return nil, err
			}
			d[i] = append(d[i], time.Since(t0))
		}
	}
	medians := make([]time.Duration, len(fs))
	for i := range d {
		medians[i] = kit.Summarise(d[i]).P50
	}
	return medians, nil
}

// hashFiles reads and hashes every file under dir, as the signature check
// does: the least a check of a version's contents can do.
func hashFiles(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(sha256.New(), f)
		return err
	})
}

func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}
