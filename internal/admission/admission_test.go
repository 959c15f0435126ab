package admission

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a manual clock for the limiter.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// drive runs windows of n concurrent requests each taking rtt.
func drive(t *testing.T, l *Limiter, c *clock, windows, n int, rtt time.Duration) {
	t.Helper()
	for range windows {
		toks := make([]Token, 0, n)
		for range n {
			tok, err := l.Acquire(context.Background())
			if err != nil {
				break
			}
			toks = append(toks, tok)
		}
		c.Add(max(rtt, l.cfg.Window))
		for _, tok := range toks {
			l.Release(tok, true)
		}
	}
}

func TestLimitGrowsWhileLatencyHolds(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	l, err := New(Config{InitialLimit: 20, MaxLimit: 1000, QueueSize: 1, MaxWait: time.Nanosecond, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	drive(t, l, c, 50, 1000, 50*time.Millisecond)
	if got := l.Stats().Limit; got <= 20 {
		t.Errorf("limit = %d after 50 saturated windows at steady latency, want above the initial 20", got)
	}
}

func TestLimitFallsWhenLatencyRises(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	l, err := New(Config{InitialLimit: 200, MaxLimit: 1000, QueueSize: 1, MaxWait: time.Nanosecond, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	drive(t, l, c, 20, 1000, 50*time.Millisecond)
	before := l.Stats().Limit
	drive(t, l, c, 20, 1000, 400*time.Millisecond)
	if after := l.Stats().Limit; after >= before/2 {
		t.Errorf("limit went from %d to %d when latency rose 8×, want it at least halved", before, after)
	}
}

func TestShedsAtOnceWhenQueueIsFull(t *testing.T) {
	l, err := New(Config{InitialLimit: 8, MinLimit: 8, QueueSize: 2, MaxWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var toks []Token
	for range 8 {
		tok, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	var waiting sync.WaitGroup
	granted := make(chan error, 2)
	for range 2 { // fill the queue
		waiting.Go(func() {
			tok, err := l.Acquire(context.Background())
			if err == nil {
				l.Release(tok, true)
			}
			granted <- err
		})
	}
	for l.Stats().Queued < 2 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	_, err = l.Acquire(context.Background())
	if !errors.Is(err, ErrShed) {
		t.Fatalf("Acquire with a full queue = %v, want ErrShed", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond { // far below MaxWait: it did not wait
		t.Errorf("shedding took %v, want it at once, not after MaxWait", d)
	}
	for _, tok := range toks {
		l.Release(tok, true)
	}
	waiting.Wait()
	for range 2 {
		if err := <-granted; err != nil {
			t.Errorf("queued request: %v, want a slot once others released theirs", err)
		}
	}
	if s := l.Stats(); s.InFlight != 0 || s.Queued != 0 {
		t.Errorf("after all releases: %+v, want nothing in flight or queued", s)
	}
}

func TestQueuedRequestShedAfterMaxWait(t *testing.T) {
	l, err := New(Config{InitialLimit: 8, MinLimit: 8, QueueSize: 4, MaxWait: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for range 8 {
		if _, err := l.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, err := l.Acquire(context.Background()); !errors.Is(err, ErrShed) {
		t.Fatalf("got %v, want ErrShed after MaxWait", err)
	}
	if d := time.Since(start); d < 5*time.Millisecond {
		t.Errorf("shed after %v, want after waiting MaxWait", d)
	}
}

func TestSustainedQueueShortensWaits(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	l, err := New(Config{InitialLimit: 8, MinLimit: 8, QueueSize: 100, MaxWait: time.Hour, OverloadAfter: 100 * time.Millisecond, OverloadWait: time.Millisecond, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	var toks []Token
	for range 8 {
		tok, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	burst := make(chan error)
	go func() { // a burst: waits up to MaxWait, keeps the queue non-empty
		tok, err := l.Acquire(context.Background())
		if err == nil {
			l.Release(tok, false)
		}
		burst <- err
	}()
	for l.Stats().Queued == 0 {
		time.Sleep(time.Millisecond)
	}
	c.Add(200 * time.Millisecond) // the queue has now been non-empty for longer than OverloadAfter
	start := time.Now()
	if _, err := l.Acquire(context.Background()); !errors.Is(err, ErrShed) {
		t.Fatalf("got %v, want ErrShed after OverloadWait", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("waited %v under sustained overload, want about OverloadWait, not MaxWait", d)
	}
	for _, tok := range toks {
		l.Release(tok, false)
	}
	if err := <-burst; err != nil {
		t.Errorf("the request queued during the burst: %v, want a slot", err)
	}
}

func TestNeverMoreInFlightThanTheLimit(t *testing.T) {
	l, err := New(Config{InitialLimit: 16, MinLimit: 16, MaxLimit: 16, QueueSize: 1000, MaxWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var inflight, peak atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			tok, err := l.Acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			n := inflight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(time.Millisecond)
			inflight.Add(-1)
			l.Release(tok, true)
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 16 {
		t.Errorf("peak in flight = %d, want at most the limit 16", p)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]Config{
		"negative limit": {InitialLimit: -1},
		"min above max":  {MinLimit: 10, MaxLimit: 5},
		"low tolerance":  {Tolerance: 0.5},
		"negative wait":  {MaxWait: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	l, _ := New(Config{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tok, err := l.Acquire(context.Background())
			if err == nil {
				l.Release(tok, true)
			}
		}
	})
}
