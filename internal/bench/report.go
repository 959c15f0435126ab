package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// writeReport writes results.json and latency.svg into dir.
func writeReport(dir string, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: results.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latency.svg"), plotSVG(r), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// printTable writes the kept runs as a table.
func printTable(w io.Writer, r *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "target\tphase\toffered/s\tachieved/s\tgoodput/s\terrors\tshed\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmean ms\tserved p99\tshed p99\ttarget µs/req\tloadgen cores\tothers cores\tflags\t\n")
	for _, x := range keptRuns(r) {
		var flags []byte
		if x.Behind {
			flags = append(flags, 'B')
		}
		if x.Noisy {
			flags = append(flags, 'N')
		}
		if x.Stalled {
			flags = append(flags, 'S')
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t%s\t\n",
			x.Target, x.Phase, x.Offered, x.Achieved, x.Goodput, x.Errors, x.Shed,
			x.Latency.P50, x.Latency.P90, x.Latency.P99, x.Latency.P999, x.Latency.Mean,
			x.Served.P99, x.ShedLat.P99, x.CPU.TargetUSPerReq, x.CPU.LoadgenCores, x.CPU.OthersCores, flags)
	}
	tw.Flush()
	fmt.Fprintln(w, "flags: B = the load generator fell behind the offered rate, N = noisy (other processes busy), S = stalled (the whole machine stopped for --stall or longer)")
	printComponents(w, r)
	printFloors(w, r)
	if len(r.Sustained) > 0 {
		fmt.Fprintf(w, "sustainable rate (p99 ≤ %g ms, errors < %g%%):", r.Settings.P99TargetMS, 100*r.Settings.MaxErrorRate)
		for _, t := range r.Targets {
			fmt.Fprintf(w, "  %s %.0f/s", t, r.Sustained[t])
		}
		fmt.Fprintln(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// printComponents writes the kept runs' CPU per request by component.
func printComponents(w io.Writer, r *Report) {
	runs := keptRuns(r)
	if !slices.ContainsFunc(runs, func(x RunResult) bool { return len(x.CPU.Components) > 0 }) {
		return
	}
	fmt.Fprintln(w, "\nCPU µs per request by component:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "target\tphase\toffered/s\ttotal\t  components\n")
	for _, x := range runs {
		parts := make([]string, len(x.CPU.Components))
		for i, c := range x.CPU.Components {
			parts[i] = fmt.Sprintf("%s %.0f", c.Name, c.USPerReq)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t  %s\n", x.Target, x.Phase, x.Offered, x.CPU.TargetUSPerReq, strings.Join(parts, ", "))
	}
	tw.Flush()
}

// printFloors writes the floors of the hops.
func printFloors(w io.Writer, r *Report) {
	if len(r.Floors) == 0 {
		return
	}
	fmt.Fprintln(w, "\nfloors (both ends in one process; closed loop, or paced at a rate):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "floor\tin flight\tpaced\tround trips/s\tns/op\tallocs/op\tB/op\tCPU µs/op\tidle µs/s\t  hop\n")
	for _, f := range r.Floors {
		paced, idle := "closed loop", "-"
		if f.Rate > 0 {
			paced, idle = fmt.Sprintf("%d/s", f.Rate), fmt.Sprintf("%.0f", f.IdleUSPerSec)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%.0f\t%.1f\t%.0f\t%.2f\t%s\t  %s\n",
			f.Name, f.InFlight, paced, f.PerSecond, f.NsPerOp, f.AllocsPerOp, f.BytesPerOp, f.CPUUSPerOp, idle, f.Hop)
	}
	tw.Flush()
	fmt.Fprintln(w, "idle µs/s: the floor's process with both ends open and nothing sent; paced, up to idle/rate of CPU µs/op is that")
}

// keptRuns returns the kept runs ordered by phase, offered rate and the
// targets' order.
func keptRuns(r *Report) []RunResult {
	var out []RunResult
	for _, x := range r.Runs {
		if x.Kept {
			out = append(out, x)
		}
	}
	phase := map[string]int{"run": 0, "sweep": 1, "overload": 2}
	slices.SortStableFunc(out, func(a, b RunResult) int {
		if d := phase[a.Phase] - phase[b.Phase]; d != 0 {
			return d
		}
		if a.Offered != b.Offered {
			if a.Offered < b.Offered {
				return -1
			}
			return 1
		}
		return slices.Index(r.Targets, a.Target) - slices.Index(r.Targets, b.Target)
	})
	return out
}

// plotSVG draws p99 latency (log scale) against offered rate, one line per
// target through its kept runs, and the p99 target as a dashed line.
func plotSVG(r *Report) []byte {
	const (
		width, height          = 800, 500
		left, right, top, bott = 70, 130, 40, 50
		pw, ph                 = width - left - right, height - top - bott
	)
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"}
	series := map[string][][2]float64{}
	maxRate, minMS, maxMS := 0.0, math.Inf(1), 0.0
	for _, x := range r.Runs {
		if !x.Kept || x.Latency.N == 0 {
			continue
		}
		p99 := max(x.Latency.P99, 0.01)
		series[x.Target] = append(series[x.Target], [2]float64{x.Offered, p99})
		maxRate = max(maxRate, x.Offered)
		minMS, maxMS = min(minMS, p99), max(maxMS, p99)
	}
	target := r.Settings.P99TargetMS
	if target > 0 {
		minMS, maxMS = min(minMS, target), max(maxMS, target)
	}
	if maxRate == 0 {
		maxRate, minMS, maxMS = 1, 0.1, 100
	}
	lo := math.Floor(math.Log10(minMS))
	hi := math.Ceil(math.Log10(maxMS))
	if hi <= lo {
		hi = lo + 1
	}
	xmax := niceCeil(maxRate * 1.05)
	px := func(rate float64) float64 { return left + rate/xmax*pw }
	py := func(v float64) float64 { return top + (hi-math.Log10(v))/(hi-lo)*ph }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14">p99 latency against offered rate: %s scenario, %d CPUs</text>`+"\n", left, r.Scenario, r.Machine.NumCPU)
	// Axes and grid.
	fmt.Fprintf(&b, `<g stroke="#999" fill="none"><rect x="%d" y="%d" width="%d" height="%d"/></g>`+"\n", left, top, pw, ph)
	for e := lo; e <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if math.Log10(v) > hi+1e-9 {
				break
			}
			y := py(v)
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, left+pw, y, y)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, fmtNum(v))
		}
	}
	for i := 0; i <= 5; i++ {
		v := xmax * float64(i) / 5
		x := px(v)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/>`+"\n", x, x, top, top+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, top+ph+18, fmtNum(v))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">offered rate (requests/s)</text>`+"\n", left+pw/2, height-10)
	fmt.Fprintf(&b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">p99 latency (ms, log scale)</text>`+"\n", top+ph/2)
	if target > 0 {
		y := py(target)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#555" stroke-dasharray="6 4"/>`+"\n", left, left+pw, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" fill="#555">p99 target %s ms</text>`+"\n", left+pw+6, y+4, fmtNum(target))
	}
	for i, name := range r.Targets {
		pts := series[name]
		slices.SortFunc(pts, func(a, b [2]float64) int {
			switch {
			case a[0] < b[0]:
				return -1
			case a[0] > b[0]:
				return 1
			}
			return 0
		})
		c := colors[i%len(colors)]
		var path bytes.Buffer
		for _, p := range pts {
			fmt.Fprintf(&path, "%.1f,%.1f ", px(p[0]), py(p[1]))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, bytes.TrimSpace(path.Bytes()))
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %s/s: p99 %s ms</title></circle>`+"\n", px(p[0]), py(p[1]), c, name, fmtNum(p[0]), fmtNum(p[1]))
		}
		ly := top + 20 + 20*i
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", left+pw+10, left+pw+30, ly, ly, c)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", left+pw+36, ly+4, name)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v >= 1000 && math.Mod(v, 10) == 0:
		return fmt.Sprintf("%gk", v/1000) // 12500: 12.5k, not 1.25e+04
	case v >= 10000:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.4g", v)
	}
	return fmt.Sprintf("%.2g", v)
}
