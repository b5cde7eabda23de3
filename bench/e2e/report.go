package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgeinfer/edgeinfer/bench/internal/kit"
)

// key names a contestant in a mode.
type key struct{ who, mode string }

// runs is what one contestant did in one mode over all rounds.
type runs struct {
	lat     []time.Duration
	fps     []float64 // one per round
	timings map[string][]float64
	top1    []string // per frame, in publish order, round after round
}

// report is one benchCase's results.
type report struct {
	c     benchCase
	model string // the model version served, for the header
	runs  map[key]*runs
}

func (r report) add(k key, p phase) {
	rs := r.runs[k]
	if rs == nil {
		rs = &runs{timings: map[string][]float64{}}
		r.runs[k] = rs
	}
	rs.lat = append(rs.lat, p.lat...)
	rs.fps = append(rs.fps, float64(len(p.lat))/p.elapsed.Seconds())
	rs.top1 = append(rs.top1, p.top1...)
	for _, t := range p.timings {
		for name, ms := range t {
			rs.timings[name] = append(rs.timings[name], ms)
		}
	}
}

// rows is the order of the speed table.
var rows = []key{{limitName, modeOne}, {daemonName, modeOne}, {pythonName, modeOne}, {daemonName, modeBurst}, {pythonName, modeBurst}}

// accuracy is the share of results whose top-1 is the frame's label; ok is
// false when the frames have no labels.
func (r report) accuracy(k key) (acc float64, ok bool) {
	correct := 0
	for j, label := range r.runs[k].top1 {
		f := r.c.frames[(j%r.c.n)%len(r.c.frames)]
		if f.label == "" {
			return 0, false
		}
		if label == f.label {
			correct++
		}
	}
	return float64(correct) / float64(len(r.runs[k].top1)), true
}

// agreement is a pair of contestants in one mode (the limit has one mode
// only) and the share of frames they gave the same top-1.
type agreement struct {
	a, b key
	frac float64
}

func (r report) agreements() []agreement {
	pairs := [][2]key{
		{{daemonName, modeOne}, {pythonName, modeOne}},
		{{daemonName, modeBurst}, {pythonName, modeBurst}},
		{{limitName, modeOne}, {daemonName, modeOne}},
		{{limitName, modeOne}, {pythonName, modeOne}},
	}
	var out []agreement
	for _, p := range pairs {
		a, b := r.runs[p[0]].top1, r.runs[p[1]].top1
		same := 0
		for i := range a {
			if a[i] == b[i] {
				same++
			}
		}
		out = append(out, agreement{p[0], p[1], float64(same) / float64(len(a))})
	}
	return out
}

// check fails unless every contestant is accurate and all agree.
func (r report) check() error {
	var bad []string
	for _, k := range rows {
		if acc, ok := r.accuracy(k); ok && acc < 0.95 {
			bad = append(bad, fmt.Sprintf("%s, %s: top-1 accuracy %.3f < 0.95", k.who, k.mode, acc))
		}
	}
	for _, a := range r.agreements() {
		if a.frac < 0.99 {
			bad = append(bad, fmt.Sprintf("%s and %s (%s) agree on %.3f of the frames < 0.99", a.a.who, a.b.who, a.b.mode, a.frac))
		}
	}
	if bad != nil {
		return fmt.Errorf("%s: wrong answers, no speed is reported:\n  %s", r.c.name, strings.Join(bad, "\n  "))
	}
	return nil
}

func printSpeed(w io.Writer, reports []report) {
	fmt.Fprintln(w, "| frames | contestant | mode | frames timed | latency p50 | latency p99 | frames/s (median of rounds) | frames/s vs Python | frames/s vs limit |")
	fmt.Fprintln(w, "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range reports {
		limitFPS := kit.Median(r.runs[key{limitName, modeOne}].fps)
		for _, k := range rows {
			rs := r.runs[k]
			fps := kit.Median(rs.fps)
			fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %s | %.1f | %.2fx | %.2fx |\n", r.c.name, who(k.who), k.mode, len(rs.lat),
				kit.Ms(kit.Percentile(rs.lat, 0.50)), kit.Ms(kit.Percentile(rs.lat, 0.99)), fps, fps/kit.Median(r.runs[key{pythonName, k.mode}].fps), fps/limitFPS)
		}
	}
	fmt.Fprintln(w)
}

func who(name string) string {
	switch name {
	case limitName:
		return "limit: TensorFlow through tfmodels, no MQTT"
	case daemonName:
		return "edgeinferd (mqtt sensor, classify plugin)"
	}
	return "Python (paho-mqtt + tf.saved_model.load)"
}

// printBreakdown prints where the time of a frame goes: the medians of each
// contestant's own timings next to the end-to-end median.
func printBreakdown(w io.Writer, reports []report) {
	parts := []string{"decode", "queue", "transfer", "preprocess", "inference", "postprocess", "total"}
	fmt.Fprintln(w, "Where the time goes (medians, ms). `total` is the contestant's own timing of a frame "+
		"(edgeinferd's timings_ms: from the pipeline queue to the result; its sensor's PNG decode comes before and is not timed); "+
		"`outside` = end to end - total: MQTT both ways and the broker, for edgeinferd also the decode; in a burst also the wait in the broker.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| frames | contestant | mode | "+strings.Join(parts, " | ")+" | end to end | outside |")
	fmt.Fprintln(w, "| --- | --- | --- |"+strings.Repeat(" ---: |", len(parts)+2))
	for _, r := range reports {
		for _, k := range rows {
			rs := r.runs[k]
			fmt.Fprintf(w, "| %s | %s | %s |", r.c.name, k.who, k.mode)
			for _, p := range parts {
				if v, ok := rs.timings[p]; ok {
					fmt.Fprintf(w, " %.3f |", kit.Median(v))
				} else {
					fmt.Fprint(w, " - |")
				}
			}
			e2e := float64(kit.Percentile(rs.lat, 0.5)) / 1e6
			outside := "-"
			if k.who != limitName {
				outside = fmt.Sprintf("%.3f", e2e-kit.Median(rs.timings["total"]))
			}
			fmt.Fprintf(w, " %.3f | %s |\n", e2e, outside)
		}
	}
	fmt.Fprintln(w)
}

func printCorrectness(w io.Writer, reports []report) {
	fmt.Fprintln(w, "Correctness (every result of every round; the run fails below 0.95 accuracy or 0.99 agreement):")
	fmt.Fprintln(w)
	for _, r := range reports {
		var acc, agree []string
		for _, k := range rows {
			if a, ok := r.accuracy(k); ok {
				acc = append(acc, fmt.Sprintf("%s %s %.3f", k.who, k.mode, a))
			}
		}
		for _, a := range r.agreements() {
			agree = append(agree, fmt.Sprintf("%s/%s %s %.4f", a.a.who, a.b.who, a.b.mode, a.frac))
		}
		if acc != nil {
			fmt.Fprintf(w, "- %s: top-1 accuracy vs labels.csv: %s\n", r.c.name, strings.Join(acc, ", "))
		}
		fmt.Fprintf(w, "- %s: same top-1: %s\n", r.c.name, strings.Join(agree, ", "))
	}
}
