package procs

import (
	"context"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseCPUStat(t *testing.T) {
	got := parseCPUStat([]byte("cpu  10 0 10 500 5 0 0 0 0 0\ncpu0 4 1 5 200 2 1 1 0 0 0\ncpu1 6 0 5 300 3 0 0 0 0 0\nintr 1 2 3\n"))
	want := cpuStat{0: {busy: 12, total: 214}, 1: {busy: 11, total: 314}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("parseCPUStat = %v, want %v (idle and iowait not busy)", got, want)
	}
}

func TestIdlestAndCrowded(t *testing.T) {
	before := cpuStat{0: {100, 1000}, 1: {100, 1000}}
	after := cpuStat{0: {195, 1100}, 1: {110, 1100}}
	if c := idlest(before, after, []int{0, 1}); c != 1 {
		t.Errorf("idlest = %d, want 1 (10%% busy against 95%%)", c)
	}
	if c := idlest(nil, after, []int{3, 5}); c != 3 {
		t.Errorf("idlest without a first sample = %d, want the first CPU, 3", c)
	}
	if !crowded(before, after, 0, []int{0, 1}) {
		t.Error("CPU 0 at 95% beside CPU 1 at 10%: want crowded")
	}
	if crowded(before, after, 1, []int{0, 1}) {
		t.Error("CPU 1 at 10%: want not crowded")
	}
	both := cpuStat{0: {195, 1100}, 1: {180, 1100}}
	if crowded(before, both, 0, []int{0, 1}) {
		t.Error("CPU 0 at 95% beside CPU 1 at 80%: want not crowded (nowhere better to go)")
	}
}

// affinity is the number of CPUs pid's main thread may run on.
func affinity(t *testing.T, pid int) int {
	t.Helper()
	var s unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &s); err != nil {
		t.Fatal(err)
	}
	return s.Count()
}

// TestColocate runs Colocate on this test process and a child of it: idle,
// both are held on one CPU; under a load of two busy threads they are
// spread again; when Colocate ends every CPU is back.
func TestColocate(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	n := all.Count()
	if n < 2 {
		t.Skip("this process may use only one CPU: nothing to colocate")
	}
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	pid := child.Process.Pid

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Colocate(ctx, Config{Every: 20 * time.Millisecond, DownAfter: 200 * time.Millisecond}, nil)
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s (child on %d CPUs, this process on %d)", what, affinity(t, pid), affinity(t, 0))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("idle, held on one CPU", func() bool { return affinity(t, pid) == 1 && affinity(t, 0) == 1 })

	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				runtime.Gosched()
			}
		})
	}
	waitFor("busy, spread over every CPU", func() bool { return affinity(t, pid) == n })
	stop.Store(true)
	wg.Wait()

	waitFor("idle again, held on one CPU", func() bool { return affinity(t, pid) == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Colocate: %v", err)
	}
	if got := affinity(t, pid); got != n {
		t.Fatalf("after Colocate ended the child may use %d CPUs, want %d", got, n)
	}
}
