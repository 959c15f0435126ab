package bench

import (
	"math"
	"slices"
	"time"
)

// Latencies summarizes a set of latencies, in milliseconds. The zero value
// (N = 0) means there were none.
type Latencies struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Mean float64 `json:"mean_ms"`
	Max  float64 `json:"max_ms"`
}

// summarize sorts d in place and summarizes it.
func summarize(d []time.Duration) Latencies {
	if len(d) == 0 {
		return Latencies{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return Latencies{
		N:    len(d),
		P50:  ms(quantile(d, 0.50)),
		P90:  ms(quantile(d, 0.90)),
		P99:  ms(quantile(d, 0.99)),
		P999: ms(quantile(d, 0.999)),
		Mean: ms(sum / time.Duration(len(d))),
		Max:  ms(d[len(d)-1]),
	}
}

// quantile is the nearest-rank q-quantile of sorted, non-empty d: the
// smallest value with at least q of the values at or below it.
func quantile(d []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[min(max(i, 0), len(d)-1)]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// median returns the run of runs whose value by is the median (the higher
// one for an even count: of two repeats, the worse, so that a sweep does
// not pass a rate on its luckier run). runs must not be empty.
func median(runs []RunResult, by func(RunResult) float64) RunResult {
	s := slices.Clone(runs)
	slices.SortStableFunc(s, func(a, b RunResult) int {
		switch x, y := by(a), by(b); {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}
