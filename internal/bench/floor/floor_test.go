package floor_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/internal/bench/floor"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Badger's and ristretto's own background goroutines end shortly after Close.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// TestMeasure runs every floor briefly, one and several in flight, and
// checks that round trips were counted and their costs are plausible.
func TestMeasure(t *testing.T) {
	for _, f := range floor.All() {
		for _, inFlight := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/%d", f.Name, inFlight), func(t *testing.T) {
				r, err := floor.Measure(t.Context(), f, floor.Config{
					InFlight: inFlight, Size: 200, Duration: 150 * time.Millisecond, Warmup: 20 * time.Millisecond,
					Keys: 200, Dir: t.TempDir(),
				})
				if err != nil {
					t.Fatal(err)
				}
				if r.Trips < 10 || r.InFlight != inFlight || r.Name != f.Name {
					t.Errorf("got %d round trips, in flight %d, name %q; want 10 or more, %d, %q", r.Trips, r.InFlight, r.Name, inFlight, f.Name)
				}
				if r.CPUUSPerOp <= 0 || r.NsPerOp <= 0 || r.AllocsPerOp < 0 {
					t.Errorf("got %.2f CPU µs, %.0f ns, %.1f allocs per round trip; want CPU and ns above 0", r.CPUUSPerOp, r.NsPerOp, r.AllocsPerOp)
				}
				// A round trip that takes a millisecond of CPU is not a floor.
				if r.CPUUSPerOp > 1000 {
					t.Errorf("got %.0f CPU µs per round trip, want under 1000", r.CPUUSPerOp)
				}
			})
		}
	}
}

// TestMeasurePaced checks that a paced floor keeps its rate, neither more
// nor much less.
func TestMeasurePaced(t *testing.T) {
	r, err := floor.Measure(t.Context(), floor.Unix(), floor.Config{
		InFlight: 2, Rate: 1000, Duration: 300 * time.Millisecond, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.PerSecond > 1100 || r.PerSecond < 500 || r.Rate != 1000 {
		t.Errorf("got %.0f round trips/s, rate %d; want about 1000", r.PerSecond, r.Rate)
	}
}

func TestTripAfterClose(t *testing.T) {
	for _, f := range floor.All() {
		t.Run(f.Name, func(t *testing.T) {
			rig, err := floor.Open(f, floor.Config{InFlight: 2, Keys: 10, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			for w := range 2 {
				if err := rig.Trip(w); err != nil {
					t.Fatalf("worker %d: %v", w, err)
				}
			}
			if err := rig.Close(); err != nil {
				t.Fatal(err)
			}
			if err := rig.Trip(0); err == nil {
				t.Error("got no error from a round trip after Close")
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]floor.Config{
		"no workers":           {InFlight: 0},
		"negative size":        {InFlight: 1, Size: -1},
		"negative keys":        {InFlight: 1, Keys: -1},
		"negative time":        {InFlight: 1, Duration: -time.Second},
		"negative rate":        {InFlight: 1, Rate: -1},
		"rate below in-flight": {InFlight: 4, Rate: 2},
	} {
		if err := c.Validate(); !errors.Is(err, floor.ErrConfig) {
			t.Errorf("%s: got %v, want ErrConfig", name, err)
		}
	}
	if _, ok := floor.Lookup("mangos-tcp"); !ok {
		t.Error("Lookup(mangos-tcp): not found")
	}
	if _, ok := floor.Lookup("envoy"); ok {
		t.Error("Lookup(envoy): found")
	}
}

// BenchmarkFloor runs every floor at 1 and 16 in flight: b.N round trips
// shared among the workers. Besides ns/op and allocs/op (both ends), it
// reports cpu-µs/op, this process's CPU per round trip.
func BenchmarkFloor(b *testing.B) {
	for _, f := range floor.All() {
		for _, inFlight := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/inflight=%d", f.Name, inFlight), func(b *testing.B) {
				rig, err := floor.Open(f, floor.Config{InFlight: inFlight, Size: 128, Dir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				defer rig.Close()
				b.ReportAllocs()
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				errs := make(chan error, inFlight)
				b.ResetTimer()
				cpu0, _ := floor.ProcessCPU()
				for w := range inFlight {
					wg.Go(func() {
						for left.Add(-1) >= 0 {
							if err := rig.Trip(w); err != nil {
								errs <- err
								return
							}
						}
					})
				}
				wg.Wait()
				cpu1, _ := floor.ProcessCPU()
				b.StopTimer()
				close(errs)
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(cpu1-cpu0)/1e3/float64(b.N), "cpu-µs/op")
			})
		}
	}
}
