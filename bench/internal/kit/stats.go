// Package kit is what the benchmark commands under bench/ share: latency
// summaries (median, p99) and child processes, Mosquitto among them.
package kit

import (
	"fmt"
	"slices"
	"time"
)

// Stats summarises latencies.
type Stats struct {
	N                   int
	P50, P99, Mean, Min time.Duration
}

// Summarise gives d's count, median, 99th percentile, mean and minimum; d
// must not be empty.
func Summarise(d []time.Duration) Stats {
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	return Stats{N: len(s), P50: at(s, 0.50), P99: at(s, 0.99), Mean: sum / time.Duration(len(s)), Min: s[0]}
}

// Percentile is the p-th quantile (0..1) of d, which must not be empty: the
// value at rank p*len(d) of the sorted values.
func Percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return at(s, p)
}

func at(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// Median is the median of v, which must not be empty (the upper one of an
// even count).
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// Us formats d in microseconds with one decimal.
func Us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1000) }

// Ms formats d in milliseconds with two decimals.
func Ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
