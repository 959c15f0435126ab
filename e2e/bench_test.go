package e2e

import (
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// BenchmarkPath measures the whole request path, edge → sidecar → handler,
// next to the same handler served directly by net/http, in the same run:
//
//	go test -run '^$' -bench Path -benchtime 20000x -count 5 ./e2e
//
// Each sub-benchmark keeps 16 requests in flight (closed loop) and reports
// requests per second and the p50 and p99 latency. The load generator shares
// the machine with what it measures.
func BenchmarkPath(b *testing.B) {
	m := meshtest.Start(b, bin)
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/", "--log-level", "warn")
	mesh := m.Edge("--log-level", "warn")
	direct := m.Direct("hello")

	for _, target := range []struct{ name, addr string }{{"direct", direct.Addr}, {"mesh", mesh.Addr}} {
		b.Run(target.name, func(b *testing.B) {
			benchGet(b, "http://"+target.addr+"/hello/greet?name=bench")
		})
	}
}

func benchGet(b *testing.B, url string) {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer c.CloseIdleConnections()
	var (
		mu  sync.Mutex
		all []time.Duration
	)
	b.SetParallelism(8) // 16 in flight on 2 cores
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 1024)
		for pb.Next() {
			t0 := time.Now()
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			lat = append(lat, time.Since(t0))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}
