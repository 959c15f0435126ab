package routing

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestBudgetCapsRetries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ratio    float64
		floor    int
		requests int
		step     time.Duration // clock advance per request
		want     int           // exact: deposits + starting floor + floor over elapsed time
	}{
		{"10% no time", 0.1, 10, 10000, 0, 1000 + 10},
		{"10% over 10 s", 0.1, 10, 10000, time.Millisecond, 1000 + 10 + 100},
		{"floor only", 0, 5, 1000, 10 * time.Millisecond, 5 + 50},
		{"nothing", 0, 0, 1000, time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1000, 0)}
			b := newBudget(tc.ratio, tc.floor, clock.now)
			granted := 0
			for range tc.requests {
				clock.t = clock.t.Add(tc.step)
				b.Request()
				if b.TryRetry() { // every request fails and wants a retry
					granted++
				}
			}
			elapsed := time.Duration(tc.requests) * tc.step
			limit := tc.ratio*float64(tc.requests) + float64(tc.floor)*(1+elapsed.Seconds())
			if float64(granted) > limit+0.001 {
				t.Errorf("granted %d retries, want at most %.1f", granted, limit)
			}
			if granted < tc.want-1 {
				t.Errorf("granted %d retries, want about %d", granted, tc.want)
			}
		})
	}
}

func TestBudgetCapacity(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	b := newBudget(0.1, 10, clock.now)
	for range 100000 {
		b.Request()
	}
	clock.t = clock.t.Add(time.Hour)
	granted := 0
	for b.TryRetry() {
		granted++
	}
	if want := 10*10 + 100; granted != want { // 10 s of floor + ratio*1000
		t.Errorf("a full budget granted %d retries, want %d", granted, want)
	}
}

func TestBudgetConcurrent(t *testing.T) {
	b := NewBudget(0.1, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 8 {
		wg.Go(func() {
			n := 0
			for range 1000 {
				b.Request()
				if b.TryRetry() {
					n++
				}
			}
			mu.Lock()
			granted += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if granted != 800 {
		t.Errorf("granted %d retries for 8000 requests at 10%%, want 800", granted)
	}
}

func TestRetryPolicyNewBudget(t *testing.T) {
	b := (&RetryPolicy{Attempts: 2, Budget: "50%", MinPerSecond: 1}).NewBudget()
	if b.deposit != 500_000 || b.floor != 1 {
		t.Errorf("got deposit %d, floor %d; want 500000, 1", b.deposit, b.floor)
	}
	b = (&RetryPolicy{Attempts: 2}).NewBudget()
	if b.deposit != 100_000 || b.floor != DefaultMinPerSecond {
		t.Errorf("defaults: got deposit %d, floor %d; want 100000, %d", b.deposit, b.floor, DefaultMinPerSecond)
	}
}

func BenchmarkBudget(b *testing.B) {
	bu := NewBudget(0.1, 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bu.Request()
			bu.TryRetry()
		}
	})
}
