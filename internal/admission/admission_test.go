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

// adaptive returns a limiter starting at initial whose limit may move up
// to 1000, on a manual clock, that sheds what it cannot admit at once.
func adaptive(t *testing.T, initial int) (*Limiter, *clock) {
	t.Helper()
	c := &clock{now: time.Unix(0, 0)}
	l, err := New(Config{InitialLimit: initial, MaxLimit: 1000, QueueSize: 1, MaxWait: time.Nanosecond, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return l, c
}

func TestLimitGrowsWhileLatencyHolds(t *testing.T) {
	l, c := adaptive(t, 20)
	drive(t, l, c, 50, 1000, 50*time.Millisecond)
	if got := l.Stats().Limit; got <= 20 {
		t.Errorf("limit = %d after 50 saturated windows at steady latency, want above the initial 20", got)
	}
}

func TestLimitFallsWhenLatencyRises(t *testing.T) {
	l, c := adaptive(t, 200)
	drive(t, l, c, 20, 1000, 50*time.Millisecond)
	before := l.Stats().Limit
	drive(t, l, c, 20, 1000, 400*time.Millisecond)
	if after := l.Stats().Limit; after >= before/2 {
		t.Errorf("limit went from %d to %d when latency rose 8×, want it at least halved", before, after)
	}
}

// TestLimitGrowsUnderBurstyUse: requests that arrive and leave together
// (writes released by one synced commit) use the limit even though few
// are in flight when a window ends.
func TestLimitGrowsUnderBurstyUse(t *testing.T) {
	l, c := adaptive(t, 20)
	for range 50 {
		n := l.Stats().Limit
		toks := fill(t, l, n)
		c.Add(time.Millisecond)
		for _, tok := range toks {
			l.Release(tok, true)
		}
		c.Add(l.cfg.Window)
		tok, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		l.Release(tok, true) // ends the window with one in flight
	}
	if got := l.Stats().Limit; got <= 20 {
		t.Errorf("limit = %d after 50 windows each filled in a burst, want above the initial 20", got)
	}
}

// TestVaryingLatencyIsNoQueueing: a service whose latency varies from
// window to window around a steady mean (one that waits on a disk) is not
// queueing: its limit grows as it would at a steady latency (the limit
// stayed at 99 when the baseline was the best single window).
func TestVaryingLatencyIsNoQueueing(t *testing.T) {
	l, c := adaptive(t, 100)
	for range 50 {
		drive(t, l, c, 1, 1000, 100*time.Millisecond)
		drive(t, l, c, 1, 1000, 200*time.Millisecond)
	}
	if got := l.Stats().Limit; got < 200 {
		t.Errorf("limit = %d after 100 saturated windows alternating between 100 and 200 ms, want it grown from 100 past 200", got)
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

// queueUp starts n requests that wait in l's queue, and returns what each
// ends with, once all of them are queued; each admitted one holds its slot
// until release is closed.
func queueUp(t *testing.T, l *Limiter, n int, release <-chan struct{}) <-chan error {
	t.Helper()
	done := make(chan error, n)
	var ended atomic.Int64
	before := l.Stats().Queued
	for i := range n {
		go func() {
			tok, err := l.Acquire(context.Background())
			ended.Add(1)
			done <- err
			if err == nil {
				<-release
				l.Release(tok, false)
			}
		}()
		// Queued, or already through (a test that fails).
		for l.Stats().Queued == before && ended.Load() <= int64(i) {
			time.Sleep(100 * time.Microsecond)
		}
		before = l.Stats().Queued
	}
	return done
}

func fill(t *testing.T, l *Limiter, n int) []Token {
	t.Helper()
	var toks []Token
	for range n {
		tok, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	return toks
}

func TestSustainedQueueShortensWaits(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	l, err := New(Config{InitialLimit: 8, MinLimit: 8, MaxLimit: 8, QueueSize: 100, MaxWait: time.Hour, OverloadAfter: 100 * time.Millisecond, OverloadWait: time.Millisecond, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	toks := fill(t, l, 8)
	release := make(chan struct{})
	defer close(release)
	queued := queueUp(t, l, 3, release)
	// The queue moves, but slowly: each request that leaves it waited
	// longer than OverloadWait, for longer than OverloadAfter.
	c.Add(10 * time.Millisecond)
	l.Release(toks[0], false)
	c.Add(200 * time.Millisecond)
	l.Release(toks[1], false)
	start := time.Now()
	if _, err := l.Acquire(context.Background()); !errors.Is(err, ErrShed) {
		t.Fatalf("got %v, want ErrShed after OverloadWait", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("waited %v under sustained overload, want about OverloadWait, not MaxWait", d)
	}
	for _, tok := range toks[2:] {
		l.Release(tok, false)
	}
	for range 3 {
		if err := <-queued; err != nil {
			t.Errorf("a request queued during the overload: %v, want a slot", err)
		}
	}
}

// TestStallIsABurst: a queue that does not move (the service, or the
// machine, stalled) is no standing queue: requests that arrive meanwhile
// still wait up to MaxWait, and get their slots when the stall ends.
func TestStallIsABurst(t *testing.T) {
	c := &clock{now: time.Unix(0, 0)}
	l, err := New(Config{InitialLimit: 8, MinLimit: 8, MaxLimit: 8, QueueSize: 100, MaxWait: time.Hour, OverloadAfter: 100 * time.Millisecond, OverloadWait: time.Millisecond, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	toks := fill(t, l, 8)
	release := make(chan struct{})
	defer close(release)
	queued := queueUp(t, l, 3, release)
	c.Add(500 * time.Millisecond) // nothing leaves the queue
	late := queueUp(t, l, 1, release)
	select {
	case err := <-late:
		t.Fatalf("a request that came during the stall ended with %v, want it still waiting", err)
	case <-time.After(50 * time.Millisecond):
	}
	for _, tok := range toks {
		l.Release(tok, true)
	}
	for range 3 {
		if err := <-queued; err != nil {
			t.Errorf("a request queued before the stall: %v, want a slot", err)
		}
	}
	if err := <-late; err != nil {
		t.Errorf("the request that came during the stall: %v, want a slot", err)
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
