package dispatch

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/discovery"
)

// TestLatencyOutlierEjected: of three instances one answers 150 ms slower
// than the others. It is ejected as an outlier, so that later requests go
// to the fast ones but for its trials; once it is fast again a trial ends
// its ejection and it gets its share back.
func TestLatencyOutlierEjected(t *testing.T) {
	fast1, fast2, slow := startServer(t, "fast1", 16), startServer(t, "fast2", 16), startServer(t, "slow", 16)
	slow.delay.Store(int64(150 * time.Millisecond))
	eps := &endpoints{}
	eps.set("profiles", fast1.instance("profiles", "v1"), fast2.instance("profiles", "v1"), slow.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps, EjectFor: 2 * time.Second})

	// run sends requests from 8 callers for dur and counts who served them.
	run := func(dur time.Duration) map[string]int {
		var mu sync.Mutex
		served := map[string]int{}
		var wg sync.WaitGroup
		end := time.Now().Add(dur)
		for range 8 {
			wg.Go(func() {
				for time.Now().Before(end) {
					r, err := d.Do(context.Background(), request("GET", "x"))
					if err != nil {
						t.Errorf("Do: %v", err)
						return
					}
					mu.Lock()
					served[r.ServedBy]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return served
	}

	run(time.Second) // the slow one shows it is slow
	if st := statsOf(d, slow.addr); st.EjectedUntil.IsZero() {
		t.Fatalf("the slow instance is not ejected after a second: %+v", st)
	}
	served := run(time.Second)
	t.Logf("while ejected: %v", served)
	// Trials every 500 ms: at most about two, against hundreds for the others.
	if n := served["slow"]; n > 4 || served["fast1"]+served["fast2"] < 100 {
		t.Errorf("while ejected the slow instance served %d of %v", n, served)
	}
	for _, s := range []*server{fast1, fast2} {
		if st := statsOf(d, s.addr); !st.EjectedUntil.IsZero() {
			t.Errorf("fast instance %s ejected", s.name)
		}
	}

	slow.delay.Store(0)
	time.Sleep(trialEvery + 100*time.Millisecond)
	served = run(time.Second)
	t.Logf("after it is fast again: %v", served)
	if served["slow"] < served["fast1"]/4 {
		t.Errorf("the recovered instance served %d of %v, want its share", served["slow"], served)
	}
}

// TestSlowGroupNotEjected: when all instances are equally slow, none is
// an outlier; two instances close to each other neither.
func TestSlowGroupNotEjected(t *testing.T) {
	a, b := startServer(t, "a", 16), startServer(t, "b", 16)
	a.delay.Store(int64(60 * time.Millisecond))
	b.delay.Store(int64(80 * time.Millisecond))
	eps := &endpoints{}
	eps.set("profiles", a.instance("profiles", "v1"), b.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if _, err := d.Do(context.Background(), request("GET", "x")); err != nil {
					t.Errorf("Do: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	d.ejectOutliers()
	for _, s := range []*server{a, b} {
		if st := statsOf(d, s.addr); !st.EjectedUntil.IsZero() {
			t.Errorf("%s ejected although its peer is about as slow: %+v", s.name, st)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []int64
		want int64
	}{{[]int64{5}, 5}, {[]int64{9, 1}, 5}, {[]int64{3, 1, 2}, 2}, {[]int64{4, 1, 3, 2}, 2}} {
		if got := median(append([]int64(nil), c.in...)); got != c.want {
			t.Errorf("median(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}

func statsOf(d *Dispatcher, addr string) InstanceStats {
	for _, st := range d.Stats() {
		if st.Address == addr {
			return st
		}
	}
	return InstanceStats{}
}

// TestHungProbeGoesElsewhere: once the ejection of an instance that
// answers nothing ends, one request probes it; the probe waits only as
// long as makes an instance hung, then is answered by the other instance.
func TestHungProbeGoesElsewhere(t *testing.T) {
	hung, ok := startServer(t, "hung", 16), startServer(t, "ok", 16)
	hung.hold.Store(true)
	eps := &endpoints{}
	eps.set("profiles", hung.instance("profiles", "v1"), ok.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps, EjectFor: 200 * time.Millisecond})
	failed, n := 0, 0
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := d.Do(ctx, request("GET", "x"))
		cancel()
		if err != nil {
			failed++
			t.Logf("request %d: %v", n, err)
		} else if r.ServedBy != "ok" {
			t.Fatalf("served by %s", r.ServedBy)
		}
		time.Sleep(10 * time.Millisecond)
	}
	probes := hung.served.Load()
	t.Logf("%d requests, %d failed, %d reached the hung instance", n, failed, probes)
	if failed > 1 {
		t.Errorf("%d requests failed, want at most the first, which may have waited on the hung instance", failed)
	}
	if probes < 2 {
		t.Errorf("the hung instance was probed %d times after its ejections ended, want several", probes)
	}
}

// TestAllHungNotAllEjected: when every instance holds requests without
// answering (the caller itself stalled, or all of them), at most half are
// ejected: ejecting them all would help no request.
func TestAllHungNotAllEjected(t *testing.T) {
	var servers []*server
	eps := &endpoints{}
	var insts []discovery.Instance
	for _, name := range []string{"a", "b", "c"} {
		s := startServer(t, name, 16)
		s.hold.Store(true)
		servers = append(servers, s)
		insts = append(insts, s.instance("profiles", "v1"))
	}
	eps.set("profiles", insts...)
	d := newDispatcher(t, Config{Endpoints: eps})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			_, _ = d.Do(ctx, request("GET", "x"))
		})
	}
	time.Sleep(noAnswerHung + 200*time.Millisecond)
	if p, _, err := d.pick("profiles", "", nil, true); err == nil {
		p.inflight.Add(-1)
	}
	wg.Wait() // their deadlines pass
	ejected := 0
	for _, s := range servers {
		if st := statsOf(d, s.addr); !st.EjectedUntil.IsZero() {
			ejected++
		}
	}
	if ejected > 1 {
		t.Errorf("%d of 3 instances ejected when none answers, want at most one", ejected)
	}
}
