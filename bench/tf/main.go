// Command tf is `make bench-tf`: tfmodels against TF_SessionRun called
// straight from C (the limit) and against Python TensorFlow calling the same
// signature (what a user would otherwise run), in one run, with the same
// inputs and thread settings. It prints a Markdown table for BENCHMARKS.md.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

type benchCase struct {
	name, dir     string
	iters, warmup int
}

type stats struct {
	n                   int
	p50, p99, mean, min time.Duration
}

func summarise(d []time.Duration) stats {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	pct := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return stats{n: len(s), p50: pct(0.50), p99: pct(0.99), mean: sum / time.Duration(len(s)), min: s[0]}
}

func (s stats) callsPerSec() float64 { return float64(time.Second) / float64(s.mean) }

func main() {
	models := flag.String("models", "models", "tiny model repository")
	modelsFull := flag.String("models-full", "models-full", "full-size model repository")
	python := flag.String("python", ".venv/bin/python", "Python with tensorflow")
	intra := flag.Int("intra", runtime.NumCPU(), "intra-op threads (both sides)")
	inter := flag.Int("inter", 1, "inter-op threads (both sides)")
	scale := flag.Float64("scale", 1, "multiply iteration counts (quick runs: 0.1)")
	out := flag.String("out", "bench/out/bench-tf.md", "where to write the Markdown table")
	flag.Parse()

	cases := []benchCase{
		{"LeNet-5 (tiny, 32x32x1)", filepath.Join(*models, "lenet5", "1"), 3000, 200},
		{"ResNet-50 (full, 224x224x3)", filepath.Join(*modelsFull, "resnet50", "1"), 60, 5},
	}
	var rows []string
	for _, c := range cases {
		c.iters = max(3, int(float64(c.iters)**scale))
		row, err := runCase(c, *python, *intra, *inter)
		if err != nil {
			log.Fatalf("%s: %v", c.name, err)
		}
		rows = append(rows, row...)
	}
	header := fmt.Sprintf("TensorFlow %s, batch 1, intra-op threads %d, inter-op threads %d, %d CPUs, %s.\n\n",
		tfmodels.Version(), *intra, *inter, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	table := header + "| model | caller | calls | calls/s | p50 | p99 | p50 vs TF_SessionRun | Python p50 / this p50 |\n" +
		"| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + strings.Join(rows, "\n") + "\n"
	fmt.Print(table)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err == nil {
		os.WriteFile(*out, []byte(table), 0o644)
	}
}

func runCase(c benchCase, python string, intra, inter int) ([]string, error) {
	var man struct {
		Signature string `toml:"signature"`
	}
	if _, err := toml.DecodeFile(filepath.Join(c.dir, "edgeinfer.toml"), &man); err != nil {
		return nil, err
	}
	m, err := tfmodels.Load(c.dir, tfmodels.Options{IntraOpThreads: intra, InterOpThreads: inter})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	r, err := m.Runner(man.Signature, nil, nil)
	if err != nil {
		return nil, err
	}
	var inputs []*tfmodels.Tensor
	for _, info := range r.Inputs() {
		t, err := firstSample(filepath.Join(c.dir, "golden", "input_"+info.Key+".npy"))
		if err != nil {
			return nil, err
		}
		defer t.Close()
		inputs = append(inputs, t)
	}

	run := func() (time.Duration, error) {
		t0 := time.Now()
		outs, err := r.Run(inputs...)
		d := time.Since(t0)
		for _, o := range outs {
			o.Close()
		}
		return d, err
	}
	for i := 0; i < c.warmup; i++ {
		if _, err := run(); err != nil {
			return nil, err
		}
	}
	// Alternate the two Go-side callers in rounds so drift hits both alike.
	var goLat, cLat []time.Duration
	const rounds = 3
	for round := 0; round < rounds; round++ {
		n := c.iters / rounds
		b, err := r.BaselineTimings(inputs, n)
		if err != nil {
			return nil, err
		}
		cLat = append(cLat, b...)
		for i := 0; i < n; i++ {
			d, err := run()
			if err != nil {
				return nil, err
			}
			goLat = append(goLat, d)
		}
	}

	cmd := exec.Command(python, "bench/tf/python_bench.py", "--model", c.dir, "--signature", man.Signature,
		"--iters", fmt.Sprint(c.iters), "--warmup", fmt.Sprint(c.warmup),
		"--intra", fmt.Sprint(intra), "--inter", fmt.Sprint(inter))
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("python side: %w", err)
	}
	var py struct {
		LatenciesNS []int64 `json:"latencies_ns"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &py); err != nil {
		return nil, fmt.Errorf("python side output: %w", err)
	}
	pyLat := make([]time.Duration, len(py.LatenciesNS))
	for i, v := range py.LatenciesNS {
		pyLat[i] = time.Duration(v)
	}

	sc, sg, sp := summarise(cLat), summarise(goLat), summarise(pyLat)
	row := func(caller string, s stats, vsC, vsPy string) string {
		return fmt.Sprintf("| %s | %s | %d | %.1f | %s | %s | %s | %s |", c.name, caller, s.n, s.callsPerSec(), fmtDur(s.p50), fmtDur(s.p99), vsC, vsPy)
	}
	return []string{
		row("TF_SessionRun from C (limit)", sc, "-", fmt.Sprintf("%.2fx", float64(sp.p50)/float64(sc.p50))),
		row("tfmodels Runner.Run (Go)", sg, fmt.Sprintf("%+.1f µs", float64(sg.p50-sc.p50)/1e3), fmt.Sprintf("%.2fx", float64(sp.p50)/float64(sg.p50))),
		row("Python tf.saved_model.load signature", sp, fmt.Sprintf("%+.1f µs", float64(sp.p50-sc.p50)/1e3), "1.00x"),
	}, nil
}

// firstSample reads a golden input and keeps its first batch element.
func firstSample(path string) (*tfmodels.Tensor, error) {
	a, err := npy.Read(path)
	if err != nil {
		return nil, err
	}
	if len(a.Shape) == 0 || a.Shape[0] < 1 {
		return nil, fmt.Errorf("%s: no batch dimension", path)
	}
	per := len(a.Data) / int(a.Shape[0])
	a.Data = a.Data[:per]
	a.Shape = append([]int64{1}, a.Shape[1:]...)
	return tfmodels.FromNpy(a)
}

func fmtDur(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	}
	return fmt.Sprintf("%.2f ms", float64(d)/1e6)
}
