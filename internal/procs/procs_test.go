package procs

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestController: one P once the mean over DownAfter is below Down; every
// P back when the last three samples average Up or more, or one sample
// reaches burst; samples in between change nothing.
func TestController(t *testing.T) {
	cfg := Config{Max: 4}
	cfg.setDefaults()
	t0 := time.Unix(1000, 0)
	c := newController(cfg, t0)
	now := t0
	step := func(cores float64) int {
		now = now.Add(cfg.Every)
		n, _ := c.observe(now, time.Duration(cores*float64(cfg.Every)))
		return n
	}
	window := int(cfg.DownAfter / cfg.Every)
	// A window whose mean is above Down, for all its quiet samples.
	for i := range window {
		cores := 0.1
		if i == 0 {
			cores = 0.1 + 0.31*float64(window) // one busy sample lifts the mean past 0.4
		}
		if got := step(cores); got != 4 {
			t.Fatalf("sample %d of a busy window: %d Ps, want 4", i, got)
		}
	}
	for i := range window - 1 {
		if got := step(0.35); got != 4 {
			t.Fatalf("sample %d at 0.35 cores: %d Ps, want 4 until DownAfter has passed", i, got)
		}
	}
	if got := step(0.35); got != 1 {
		t.Fatalf("a window's mean at 0.35 cores: %d Ps, want 1", got)
	}
	// On one P: two samples are not enough to judge; three at a mean of
	// 0.53 are.
	if got := step(0.45); got != 1 {
		t.Fatalf("on one P, first sample at 0.45 cores: %d Ps, want 1", got)
	}
	if got := step(0.65); got != 1 {
		t.Fatalf("on one P, second sample at 0.65 cores: %d Ps, want 1", got)
	}
	if got := step(0.45); got != 4 {
		t.Fatalf("on one P, three samples at a mean of 0.53 cores: %d Ps, want 4", got)
	}
	for range window {
		step(0.1)
	}
	if c.procs != 1 {
		t.Fatalf("after a quiet window: %d Ps, want 1", c.procs)
	}
	if got := step(0.75); got != 4 {
		t.Fatalf("one sample at a burst (0.75 cores) on one P: %d Ps, want 4", got)
	}
	if got, _ := c.observe(now, time.Second); got != 4 {
		t.Fatalf("a sample with no time since the last: %d Ps, want 4 (ignored)", got)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{Max: -1}, {Every: -time.Second}, {Up: -1}, {Up: 0.3, Down: 0.4}} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
	if err := (Config{Up: 0.6, Down: 0.4}).Validate(); err != nil {
		t.Errorf("Validate(Up 0.6, Down 0.4) = %v", err)
	}
}

// TestRun runs the real loop on this process: idle, it goes to one P;
// busy on two goroutines, it gets every P back; when its context ends, it
// leaves every P. Its thresholds are low so that a machine busy with
// other tests still gives the busy phase enough CPU to pass Up.
func TestRun(t *testing.T) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		if err := Run(context.Background(), Config{}, nil); !errors.Is(err, ErrOperatorSet) {
			t.Fatalf("Run with GOMAXPROCS set = %v, want ErrOperatorSet", err)
		}
		t.Skip("GOMAXPROCS is set: Run leaves the Ps to it (checked)")
	}
	max := runtime.GOMAXPROCS(0)
	if max < 2 {
		t.Skip("one CPU: nothing to adapt")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Every: 20 * time.Millisecond, DownAfter: 200 * time.Millisecond, Up: 0.2, Down: 0.1}, nil)
	}()
	waitProcs(t, 1, "idle")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					for i := 0; i < 1e5; i++ {
						_ = i * i
					}
				}
			}
		})
	}
	waitProcs(t, max, "busy")
	close(stop)
	wg.Wait()
	waitProcs(t, 1, "idle again")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if got := runtime.GOMAXPROCS(0); got != max {
		t.Fatalf("after Run: %d Ps, want %d", got, max)
	}
}

func waitProcs(t *testing.T, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for runtime.GOMAXPROCS(0) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %d Ps after 30 s, want %d", what, runtime.GOMAXPROCS(0), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
