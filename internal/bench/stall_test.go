package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestMain runs StallProbe instead of the tests when the test binary is
// started as the probe (TestStallProbeSeesAStop).
func TestMain(m *testing.M) {
	if os.Getenv("GRIDDLE_TEST_STALL_PROBE") == "1" {
		if err := StallProbe(context.Background(), os.Stdout, 20*time.Millisecond); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A probe stopped with SIGSTOP for 80 ms is a machine that stopped: it
// reports a stall at least that long once it runs again.
func TestStallProbeSeesAStop(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GRIDDLE_TEST_STALL_PROBE=1", "GOMAXPROCS=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	w := &stallWatch{}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(200 * time.Millisecond) // the probe is sleeping its 1 ms
	before := time.Now()
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(80 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("the probe ended without reporting the stop")
			}
			s, ok := parseStall(line)
			if !ok {
				continue // a '#' note: no real-time priority here
			}
			w.add(s)
			if got := w.worst(before, time.Now()); got >= 70*time.Millisecond {
				return
			}
		case <-deadline:
			t.Fatalf("no stall of 70 ms or more reported; longest %s", w.worst(before, time.Now()))
		}
	}
}

func TestStallWatchWorst(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := &stallWatch{}
	w.add(stall{at: t0.Add(1 * time.Second), d: 30 * time.Millisecond})
	w.add(stall{at: t0.Add(5 * time.Second), d: 12 * time.Millisecond})
	w.add(stall{at: t0.Add(9990 * time.Millisecond), d: 40 * time.Millisecond}) // runs past 10 s
	cases := []struct {
		from, to time.Duration
		want     time.Duration
	}{
		{0, 900 * time.Millisecond, 0},                                    // before any
		{0, 2 * time.Second, 30 * time.Millisecond},                       // the first inside
		{1010 * time.Millisecond, 3 * time.Second, 30 * time.Millisecond}, // began before, ended inside
		{1031 * time.Millisecond, 6 * time.Second, 12 * time.Millisecond}, // the first over by then
		{10 * time.Second, 11 * time.Second, 40 * time.Millisecond},       // began before from
		{0, 20 * time.Second, 40 * time.Millisecond},                      // the longest of all
	}
	for _, c := range cases {
		if got := w.worst(t0.Add(c.from), t0.Add(c.to)); got != c.want {
			t.Errorf("worst(%s, %s) = %s, want %s", c.from, c.to, got, c.want)
		}
	}
	if n, longest, _ := w.summary(); n != 3 || longest != 40*time.Millisecond {
		t.Errorf("summary = %d, %s; want 3, 40ms", n, longest)
	}
	for _, bad := range []string{"", "12", "a 3", "1 -5", "# note"} {
		if _, ok := parseStall(bad); ok {
			t.Errorf("parseStall(%q) ok", bad)
		}
	}
}

func TestStallExplains(t *testing.T) {
	c := Config{P99Target: 25 * time.Millisecond}
	run := func(p99, stall float64, stalled bool) RunResult {
		return RunResult{Latency: Latencies{P99: p99}, StallMS: stall, Stalled: stalled}
	}
	for _, x := range []struct {
		r    RunResult
		want bool
	}{
		{run(44, 30, true), true},    // a 30 ms stall over a 25 ms target
		{run(1245, 12, true), false}, // overload: far past what the stall explains
		{run(44, 30, false), false},  // not stalled
		{run(2, 15, true), true},     // failed on errors, stalled
		{run(55.1, 30, true), false}, // just past target + stall
	} {
		if got := c.stallExplains(x.r); got != x.want {
			t.Errorf("stallExplains(p99 %g, stall %g, %v) = %v, want %v", x.r.Latency.P99, x.r.StallMS, x.r.Stalled, got, x.want)
		}
	}
}

// keep leaves out of the median only the runs that failed by no more than
// their stall explains.
func TestKeepLeavesOutExplainedStalls(t *testing.T) {
	s := &session{cfg: Config{P99Target: 25 * time.Millisecond, MaxErrorRate: 0.001}}
	run := func(rep int, p99, stall float64) RunResult {
		return RunResult{Target: "mesh", Phase: "sweep", Offered: 100, Repeat: rep, Requests: 1000,
			Latency: Latencies{P99: p99}, StallMS: stall, Stalled: stall >= 10}
	}
	for _, c := range []struct {
		name string
		runs []RunResult
		want int // the kept repeat
	}{
		{"a stall explains a failure", []RunResult{run(1, 40, 30), run(2, 5, 0), run(3, 8, 0)}, 3},
		{"an overload is not a stall", []RunResult{run(1, 61, 0), run(2, 22, 0), run(3, 251, 11)}, 1},
		{"a stalled run that held counts", []RunResult{run(1, 30, 0), run(2, 9, 15), run(3, 40, 0)}, 1},
	} {
		s.report.Runs = c.runs
		if got := s.keep([]int{0, 1, 2}); got.Repeat != c.want {
			t.Errorf("%s: kept repeat %d, want %d", c.name, got.Repeat, c.want)
		}
	}
}
