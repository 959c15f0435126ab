package bench

import (
	"context"
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		line    string
		want    proc
		wantErr bool
	}{
		{"plain", "42 (griddle) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0", proc{ppid: 7, cpu: 3 * time.Second}, false},
		{"comm with spaces and parens", "9 (a (b) c) R 1 9 9 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0", proc{ppid: 1, cpu: 30 * time.Millisecond}, false},
		{"truncated", "9 (x) R 1 2", proc{}, true},
		{"no comm", "9 x R 1", proc{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.line))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseStat(%q) = %+v, %v; want %+v, error %v", tc.line, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	got, err := parseProcStat("cpu  100 5 50 9999 77 3 2 1 40 0")
	if want := 161 * 10 * time.Millisecond; err != nil || got != want {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	if _, err := parseProcStat("intr 1 2 3"); err == nil {
		t.Error("got no error for a line that is not cpu")
	}
}

func TestDescendants(t *testing.T) {
	procs := map[int]proc{1: {ppid: 0}, 10: {ppid: 1}, 11: {ppid: 10}, 12: {ppid: 11}, 20: {ppid: 1}, 21: {ppid: 20}}
	got := descendants(procs, []int{10, 99})
	if len(got) != 3 || !containsAll(got, 10, 11, 12) {
		t.Errorf("descendants of 10 = %v, want 10 11 12", got)
	}
}

func containsAll(s []int, want ...int) bool {
	m := map[int]bool{}
	for _, x := range s {
		m[x] = true
	}
	for _, w := range want {
		if !m[w] {
			return false
		}
	}
	return true
}

func TestSampleCPUSelf(t *testing.T) {
	a, err := sampleCPU([]int{os.Getpid()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	b, err := sampleCPU([]int{os.Getpid()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if u := b.since(a); u.Loadgen <= 0 || u.Others < 0 {
		t.Errorf("got %+v after 50ms of spinning, want load generator CPU > 0 and others >= 0", u)
	}
}

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 1000; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got := summarize(d)
	want := Latencies{N: 1000, P50: 500, P90: 900, P99: 990, P999: 999, Mean: 500.5, Max: 1000}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := summarize(nil); got != (Latencies{}) {
		t.Errorf("summarize(nil) = %+v, want zero", got)
	}
}

func TestMedian(t *testing.T) {
	runs := []RunResult{{Repeat: 1, Latency: Latencies{P99: 9}}, {Repeat: 2, Latency: Latencies{P99: 1}}, {Repeat: 3, Latency: Latencies{P99: 5}}}
	if got := median(runs, func(r RunResult) float64 { return r.Latency.P99 }); got.Repeat != 3 {
		t.Errorf("median is repeat %d, want 3", got.Repeat)
	}
	if got := median(runs[:2], func(r RunResult) float64 { return r.Latency.P99 }); got.Repeat != 1 {
		t.Errorf("median of two is repeat %d, want 1 (the higher p99)", got.Repeat)
	}
}

func validConfig() Config {
	return Config{
		Scenario: ScenarioStatic, Targets: []string{TargetDirect, TargetMesh}, Rates: []int{100},
		Duration: time.Second, Repeat: 1, Out: "out", Profiles: 10, Timeout: time.Second,
		Griddle: "griddle", Source: ".", NginxWorkers: 1,
		P99Target: 25 * time.Millisecond, MaxErrorRate: 0.001, SweepStart: 100, SweepMax: 1000,
		SweepFactor: 2, SweepBudget: time.Minute,
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sweep  bool
		mutate func(*Config)
		want   string // in the error; "" for none
	}{
		{"valid run", false, func(*Config) {}, ""},
		{"valid sweep", true, func(c *Config) { c.Rates = nil }, ""},
		{"bad scenario", false, func(c *Config) { c.Scenario = "x" }, "--scenario"},
		{"no targets", false, func(c *Config) { c.Targets = nil }, "--targets"},
		{"unknown target", false, func(c *Config) { c.Targets = []string{"envoy"} }, `--targets "envoy"`},
		{"target twice", false, func(c *Config) { c.Targets = []string{"mesh", "mesh"} }, "twice"},
		{"no rates", false, func(c *Config) { c.Rates = nil }, "--rates"},
		{"zero rate", false, func(c *Config) { c.Rates = []int{0} }, "--rates 0"},
		{"short duration", false, func(c *Config) { c.Duration = time.Millisecond }, "--duration"},
		{"no out", false, func(c *Config) { c.Out = "" }, "--out"},
		{"no source nor handlers", false, func(c *Config) { c.Source = "" }, "--handlers"},
		{"no griddle for mesh", false, func(c *Config) { c.Griddle = "" }, "griddle binary"},
		{"bad factor", true, func(c *Config) { c.SweepFactor = 1 }, "--factor"},
		{"max below start", true, func(c *Config) { c.SweepMax = 10 }, "--max-rate"},
		{"budget below a run", true, func(c *Config) { c.SweepBudget = time.Millisecond }, "--budget"},
		{"bad error rate", true, func(c *Config) { c.MaxErrorRate = 0 }, "--max-error-rate"},
		{"valid deployed", false, func(c *Config) { c.Targets = []string{TargetDeployed} }, ""},
		{"no griddle for deployed", false, func(c *Config) { c.Targets, c.Griddle = []string{TargetDeployed}, "" }, "deployed target"},
		{"valid floors", false, func(c *Config) { c.Floors, c.FloorInFlight, c.FloorDuration = true, []int{1, 16}, time.Second }, ""},
		{"floors without in-flight", false, func(c *Config) { c.Floors, c.FloorDuration = true, time.Second }, "--floor-in-flight"},
		{"floors at 0 in flight", false, func(c *Config) { c.Floors, c.FloorInFlight, c.FloorDuration = true, []int{0}, time.Second }, "--floor-in-flight 0"},
		{"short floors", false, func(c *Config) { c.Floors, c.FloorInFlight = true, []int{1} }, "--floor-duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate(tc.sweep)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrConfig)):
				t.Errorf("got %v, want an ErrConfig naming %q", err, tc.want)
			}
		})
	}
}

func TestNextRate(t *testing.T) {
	s := &session{cfg: validConfig()}
	for _, tc := range []struct {
		name      string
		good, bad int
		want      int
		wantDone  bool
	}{
		{"climb", 200, 0, 400, false},
		{"climb capped", 800, 0, 1000, false},
		{"at the cap", 1000, 0, 0, true},
		{"first failed: step down", 0, 100, 50, false},
		{"nothing holds", 0, 1, 0, true},
		{"bisect", 400, 800, 600, false},
		{"close enough", 400, 420, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, done := s.nextRate(&sweepState{good: tc.good, bad: tc.bad})
			if got != tc.want || done != tc.wantDone {
				t.Errorf("nextRate(good %d, bad %d) = %d, %v; want %d, %v", tc.good, tc.bad, got, done, tc.want, tc.wantDone)
			}
		})
	}
}

func TestNginxConfGolden(t *testing.T) {
	got := nginxConf(nginxParams{Dir: "/tmp/b/nginx", Listen: "127.0.0.1:18080", Upstream: "127.0.0.1:18081", Workers: 2, Root: true})
	golden := filepath.Join("testdata", "nginx.conf.golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("nginx.conf differs from %s (UPDATE_GOLDEN=1 rewrites it):\n%s", golden, got)
	}
}

func TestPlotSVG(t *testing.T) {
	r := &Report{Scenario: "static", Targets: []string{"direct", "mesh"}, Settings: Settings{P99TargetMS: 25}}
	for i, rate := range []float64{1000, 2000, 5000} {
		r.Runs = append(r.Runs,
			RunResult{Target: "direct", Offered: rate, Kept: true, Latency: Latencies{N: 1, P99: float64(i + 1)}},
			RunResult{Target: "mesh", Offered: rate, Kept: true, Latency: Latencies{N: 1, P99: float64(10 * (i + 1))}},
			RunResult{Target: "mesh", Offered: rate, Kept: false, Latency: Latencies{N: 1, P99: 1e4}})
	}
	svg := plotSVG(r)
	if err := xml.Unmarshal(svg, new(struct{})); err != nil {
		t.Fatalf("not well-formed XML: %v\n%s", err, svg)
	}
	for _, want := range []string{"stroke-dasharray", ">direct<", ">mesh<", "p99 target 25 ms"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("the plot lacks %q", want)
		}
	}
	if got := strings.Count(string(svg), "<polyline"); got != 2 {
		t.Errorf("got %d lines, want 2 (one per target)", got)
	}
	if strings.Contains(string(svg), "10k ms") {
		t.Error("a run not kept was plotted")
	}
}

func TestCountCPUs(t *testing.T) {
	for list, want := range map[string]int{"0-3": 4, "0": 1, "0-3,8,10-11": 7} {
		if got := countCPUs(list); got != want {
			t.Errorf("countCPUs(%q) = %d, want %d", list, got, want)
		}
	}
}

func TestAttack(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) % 4 {
		case 0:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 1:
			w.WriteHeader(http.StatusNotFound)
		default:
			_, _ = w.Write([]byte("ok"))
		}
	}))
	defer srv.Close()
	before := runtime.NumGoroutine()

	r, err := attack(t.Context(), load{
		target: "test", rate: 400, duration: 500 * time.Millisecond, timeout: time.Second,
		maxInFlight: 16, targeter: targeter(ScenarioProfile, srv.URL, 10), roots: []int{os.Getpid()},
	})
	if err != nil {
		t.Fatal(err)
	}
	// At most 200 (400/s for 0.5s); fewer on a busy machine, which Behind
	// must then say.
	if r.Requests < 1 || r.Requests > 201 || r.Behind != (r.Requests < 194) {
		t.Errorf("got %d requests, behind %v; want 1 to 200, behind below 194", r.Requests, r.Behind)
	}
	if r.Success+r.Shed+r.Non2xx+r.Transport != r.Requests || r.Shed == 0 || r.Non2xx == 0 || r.Transport != 0 {
		t.Errorf("got success %d, shed %d, non-2xx %d, transport %d of %d; want every class but transport", r.Success, r.Shed, r.Non2xx, r.Transport, r.Requests)
	}
	if r.Errors != r.Shed+r.Non2xx || r.Served.N != r.Success || r.ShedLat.N != r.Shed || r.Latency.N != r.Requests {
		t.Errorf("inconsistent counts: %+v", r)
	}
	if r.Latency.P99 <= 0 || r.Latency.P50 > r.Latency.P99 {
		t.Errorf("latency %+v: want 0 < p50 <= p99", r.Latency)
	}
	if r.ByMethod != nil {
		t.Errorf("by method %v for a scenario of GETs only; want none", r.ByMethod)
	}
	srv.CloseClientConnections()
	waitGoroutines(t, before)
}

// TestAttackByMethod checks that a scenario mixing methods reports each
// one's latency: here the writes are slow, as a synced commit is.
func TestAttackByMethod(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			time.Sleep(20 * time.Millisecond)
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	r, err := attack(t.Context(), load{
		target: "test", rate: 400, duration: 500 * time.Millisecond, timeout: time.Second,
		maxInFlight: 32, targeter: writeTargeter(ScenarioMixed, srv.URL, 10), roots: []int{os.Getpid()},
	})
	if err != nil {
		t.Fatal(err)
	}
	get, post := r.ByMethod[http.MethodGet], r.ByMethod[http.MethodPost]
	if len(r.ByMethod) != 2 || get.N+post.N != r.Requests || post.N == 0 {
		t.Fatalf("by method %+v of %d requests; want GET and POST adding up", r.ByMethod, r.Requests)
	}
	if post.P50 < 20 || get.P50 >= 20 {
		t.Errorf("p50 GET %.1f ms, POST %.1f ms; want POST at least the handler's 20 ms, GET below", get.P50, post.P50)
	}
}

func TestAttackStopsWithContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := attack(ctx, load{target: "test", rate: 100, duration: time.Minute, timeout: time.Second,
		maxInFlight: 8, targeter: targeter(ScenarioStatic, srv.URL, 1)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("attack returned %s after its context ended", d)
	}
	srv.CloseClientConnections()
	waitGoroutines(t, before)
}

// waitGoroutines fails t unless the goroutine count comes back to at most
// want within a few seconds.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, want at most %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFmtNum(t *testing.T) {
	for v, want := range map[float64]string{16000: "16k", 12500: "12.5k", 17250: "17.25k", 12345.6: "12346", 1719.3: "1719", 2.344: "2.344", 0.5: "0.5"} {
		if got := fmtNum(v); got != want {
			t.Errorf("fmtNum(%v) = %q, want %q", v, got, want)
		}
	}
}
