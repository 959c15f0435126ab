package bench

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// RunResult is what one open-loop run measured. Latencies are counted from
// the moment the request was due by the fixed arrival rate, not from when
// it was sent, so a load generator that falls behind cannot hide slow
// answers (coordinated omission).
type RunResult struct {
	Target   string  `json:"target"`
	Phase    string  `json:"phase"` // warmup, run, sweep, overload
	Repeat   int     `json:"repeat"`
	Offered  float64 `json:"offered_rps"`
	Achieved float64 `json:"achieved_rps"` // requests sent per second of the run
	Goodput  float64 `json:"goodput_rps"`  // 2xx answers per second of the run
	Seconds  float64 `json:"seconds"`

	Requests  int     `json:"requests"`
	Success   int     `json:"success"`   // 2xx
	Shed      int     `json:"shed"`      // 503
	Non2xx    int     `json:"non_2xx"`   // other statuses
	Transport int     `json:"transport"` // no answer: refused, reset, timed out
	Errors    int     `json:"errors"`    // Shed + Non2xx + Transport
	ErrorRate float64 `json:"error_rate"`

	Latency Latencies `json:"latency"`      // every request
	Served  Latencies `json:"served"`       // 2xx answers
	ShedLat Latencies `json:"shed_latency"` // 503 answers
	RawP99  float64   `json:"raw_p99_ms"`   // p99 from the moment sent, for comparison
	// ByMethod splits Latency by request method where a scenario mixes
	// them (mixed: GET reads, POST writes).
	ByMethod   map[string]Latencies `json:"by_method,omitempty"`
	FirstError string               `json:"first_error,omitempty"`

	CPU RunCPU `json:"cpu"`
	// Profiles are the CPU profiles saved during the run (--cpuprofile-dir).
	Profiles []string `json:"cpu_profiles,omitempty"`

	// Behind: fewer than 97% of the offered requests went out; the load
	// generator could not keep the rate (CPU or its in-flight bound).
	Behind bool `json:"behind"`
	// Noisy: other processes used more CPU than --noisy-cpu during the run.
	Noisy bool `json:"noisy"`
	// StallMS is the longest stall of the machine the stall probe saw
	// during the run; Stalled: at least --stall.
	StallMS float64 `json:"stall_ms"`
	Stalled bool    `json:"stalled"`
	// Kept: this run is the median of its repeats, the one reported.
	Kept bool `json:"kept"`
}

// RunCPU is the CPU used during a run, from /proc accounting.
type RunCPU struct {
	LoadgenSec     float64 `json:"loadgen_sec"`
	TargetSec      float64 `json:"target_sec"`
	OthersSec      float64 `json:"others_sec"`
	TargetUSPerReq float64 `json:"target_us_per_req"`
	LoadgenCores   float64 `json:"loadgen_cores"` // average cores busy
	OthersCores    float64 `json:"others_cores"`
	// Components splits TargetSec among the target's parts, each from
	// its own processes (see the target's description in the report).
	Components []ComponentCPU `json:"components,omitempty"`
}

// ComponentCPU is one component's CPU during a run.
type ComponentCPU struct {
	Name     string  `json:"name"`
	Sec      float64 `json:"sec"`
	USPerReq float64 `json:"us_per_req"`
	Cores    float64 `json:"cores"` // average cores busy
}

// load is one open-loop run's parameters.
type load struct {
	target      string
	rate        int // requests per second
	duration    time.Duration
	timeout     time.Duration
	maxInFlight int
	targeter    vegeta.Targeter
	roots       []int       // the target's processes, for CPU accounting
	components  []component // and its parts
	noisyCores  float64
}

// attack runs l and returns what it measured. It returns early, with what
// it has, when ctx is done.
func attack(ctx context.Context, l load) (RunResult, error) {
	n := l.maxInFlight
	// A transport of our own, so that its connections are closed after the
	// run instead of piling up at the targets across runs.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        n,
		MaxIdleConnsPerHost: n,
		MaxConnsPerHost:     n,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	a := vegeta.NewAttacker(
		vegeta.Client(&http.Client{Transport: tr}),
		vegeta.Workers(uint64(min(n, 64))),
		vegeta.MaxWorkers(uint64(n)),
		vegeta.KeepAlive(true),
		vegeta.Timeout(l.timeout),
		vegeta.MaxBody(0),
		vegeta.Redirects(vegeta.NoFollow),
	)
	before, err := sampleCPU(l.roots, l.components)
	if err != nil {
		return RunResult{}, err
	}

	// The stopper goroutine is owned by attack: stopped by done, waited
	// for before attack returns.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
			a.Stop()
		case <-done:
		}
	})
	defer wg.Wait()
	defer close(done)

	period := time.Second / time.Duration(l.rate)
	t0 := time.Now()
	results := a.Attack(l.targeter, vegeta.ConstantPacer{Freq: l.rate, Per: time.Second}, l.duration, l.target)

	var all, served, shed, raw []time.Duration
	byMethod := map[string][]time.Duration{}
	r := RunResult{Target: l.target, Offered: float64(l.rate)}
	for res := range results {
		// vegeta's ConstantPacer sends hit Seq (from 0) one period after
		// hit Seq-1 and the first one period after the start: it is due
		// at t0 + (Seq+1) periods.
		lat := res.Timestamp.Add(res.Latency).Sub(t0.Add(time.Duration(res.Seq+1) * period))
		lat = max(lat, res.Latency)
		all = append(all, lat)
		raw = append(raw, res.Latency)
		byMethod[res.Method] = append(byMethod[res.Method], lat)
		r.Requests++
		switch {
		case res.Code >= 200 && res.Code < 300:
			r.Success++
			served = append(served, lat)
			continue
		case res.Code == http.StatusServiceUnavailable:
			r.Shed++
			shed = append(shed, lat)
		case res.Code == 0:
			r.Transport++
		default:
			r.Non2xx++
		}
		if r.FirstError == "" {
			r.FirstError = res.Error
		}
	}
	wall := time.Since(t0)
	after, err := sampleCPU(l.roots, l.components)
	if err != nil {
		return RunResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return RunResult{}, err
	}

	secs := l.duration.Seconds()
	r.Seconds = secs
	r.Achieved = float64(r.Requests) / secs
	r.Goodput = float64(r.Success) / secs
	r.Errors = r.Shed + r.Non2xx + r.Transport
	if r.Requests > 0 {
		r.ErrorRate = float64(r.Errors) / float64(r.Requests)
	}
	r.Latency = summarize(all)
	r.Served = summarize(served)
	r.ShedLat = summarize(shed)
	r.RawP99 = summarize(raw).P99
	if len(byMethod) > 1 {
		r.ByMethod = make(map[string]Latencies, len(byMethod))
		for m, lats := range byMethod {
			r.ByMethod[m] = summarize(lats)
		}
	}
	r.Behind = float64(r.Requests) < 0.97*float64(l.rate)*secs

	use := after.since(before)
	r.CPU = RunCPU{
		LoadgenSec:   use.Loadgen.Seconds(),
		TargetSec:    use.Target.Seconds(),
		OthersSec:    use.Others.Seconds(),
		LoadgenCores: use.Loadgen.Seconds() / wall.Seconds(),
		OthersCores:  use.Others.Seconds() / wall.Seconds(),
	}
	if r.Requests > 0 {
		r.CPU.TargetUSPerReq = use.Target.Seconds() * 1e6 / float64(r.Requests)
	}
	for i, c := range l.components {
		cc := ComponentCPU{Name: c.name, Sec: use.Parts[i].Seconds(), Cores: use.Parts[i].Seconds() / wall.Seconds()}
		if r.Requests > 0 {
			cc.USPerReq = cc.Sec * 1e6 / float64(r.Requests)
		}
		r.CPU.Components = append(r.CPU.Components, cc)
	}
	r.Noisy = l.noisyCores > 0 && r.CPU.OthersCores > l.noisyCores
	return r, nil
}
