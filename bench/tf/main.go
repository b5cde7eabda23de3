// Command tf is `make bench-tf`: tfmodels against TF_SessionRun called
// straight from C (the limit) and against Python TensorFlow calling the same
// signature (what a user would otherwise run), in one run, with the same
// inputs and thread settings. It prints a Markdown table for BENCHMARKS.md.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/edgeinfer/edgeinfer/bench/internal/kit"
	"github.com/edgeinfer/edgeinfer/tfmodels"
	"github.com/edgeinfer/edgeinfer/tfmodels/npy"
)

type benchCase struct {
	name, dir     string
	iters, warmup int
}

func callsPerSec(s kit.Stats) float64 { return float64(time.Second) / float64(s.Mean) }

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
		{"ResNet-50 (full, 224x224x3)", filepath.Join(*modelsFull, "resnet50", "1"), 120, 5},
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
	py, err := startPython(python, c, man.Signature, intra, inter)
	if err != nil {
		return nil, err
	}
	defer py.close()

	// Rounds alternate the callers so drift on the machine hits all alike.
	// Inside a round the C and Go calls alternate one by one, so each Go call
	// has a C call next to it under the same conditions: the median of the
	// paired differences is what tfmodels adds, free of the drift between rounds.
	var goLat, cLat, pyLat, added []time.Duration
	const rounds = 20
	for round := 0; round < rounds; round++ {
		n := max(1, c.iters/rounds)
		for i := 0; i < n; i++ {
			b, err := r.BaselineTimings(inputs, 1)
			if err != nil {
				return nil, err
			}
			d, err := run()
			if err != nil {
				return nil, err
			}
			cLat, goLat, added = append(cLat, b[0]), append(goLat, d), append(added, d-b[0])
		}
		p, err := py.round(n)
		if err != nil {
			return nil, err
		}
		pyLat = append(pyLat, p...)
	}

	sc, sg, sp, sa := kit.Summarise(cLat), kit.Summarise(goLat), kit.Summarise(pyLat), kit.Summarise(added)
	row := func(caller string, s kit.Stats, vsC, vsPy string) string {
		return fmt.Sprintf("| %s | %s | %d | %.1f | %s | %s | %s | %s |", c.name, caller, s.N, callsPerSec(s), fmtDur(s.P50), fmtDur(s.P99), vsC, vsPy)
	}
	return []string{
		row("TF_SessionRun from C (limit)", sc, "-", fmt.Sprintf("%.2fx", float64(sp.P50)/float64(sc.P50))),
		row("tfmodels Runner.Run (Go)", sg, fmt.Sprintf("%+.1f µs (paired: %+.1f µs)", float64(sg.P50-sc.P50)/1e3, float64(sa.P50)/1e3), fmt.Sprintf("%.2fx", float64(sp.P50)/float64(sg.P50))),
		row("Python tf.saved_model.load signature", sp, fmt.Sprintf("%+.1f µs", float64(sp.P50-sc.P50)/1e3), "1.00x"),
	}, nil
}

// pyCaller is the long-lived Python process of python_bench.py.
type pyCaller struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startPython(python string, c benchCase, signature string, intra, inter int) (*pyCaller, error) {
	cmd := exec.Command(python, "bench/tf/python_bench.py", "--model", c.dir, "--signature", signature,
		"--warmup", fmt.Sprint(c.warmup), "--intra", fmt.Sprint(intra), "--inter", fmt.Sprint(inter))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("python side: %w", err)
	}
	p := &pyCaller{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	p.out.Buffer(make([]byte, 1<<20), 1<<24)
	if !p.out.Scan() || p.out.Text() != "ready" {
		p.close()
		return nil, fmt.Errorf("python side did not start: %q %v", p.out.Text(), p.out.Err())
	}
	return p, nil
}

func (p *pyCaller) round(n int) ([]time.Duration, error) {
	if _, err := fmt.Fprintln(p.in, n); err != nil {
		return nil, fmt.Errorf("python side: %w", err)
	}
	if !p.out.Scan() {
		return nil, fmt.Errorf("python side exited: %v", p.out.Err())
	}
	var res struct {
		LatenciesNS []int64 `json:"latencies_ns"`
	}
	if err := json.Unmarshal(p.out.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("python side output: %w", err)
	}
	d := make([]time.Duration, len(res.LatenciesNS))
	for i, v := range res.LatenciesNS {
		d[i] = time.Duration(v)
	}
	return d, nil
}

func (p *pyCaller) close() {
	p.in.Close()
	p.cmd.Wait()
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
