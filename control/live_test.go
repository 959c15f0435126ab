package control_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/griddle-mesh/griddle/control"
	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/internal/discovery"
)

// TestLiveFigures runs a replica against a fake edge and a fake sidecar
// (real registries over real HTTP) and reads the page's figures.
func TestLiveFigures(t *testing.T) {
	cli := etcdClient(t)
	edgeReg, sideReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	edgeReqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: canary.EdgeRequestsMetric}, []string{"service", "version", "experiment", "variant", "code"})
	edgeDur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: canary.EdgeDurationMetric, Buckets: []float64{.001, .01, .1}}, []string{"service", "version"})
	sideReqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: canary.RequestsMetric}, []string{"service", "version", "code"})
	edgeReg.MustRegister(edgeReqs, edgeDur)
	sideReg.MustRegister(sideReqs)
	edge := httptest.NewServer(promhttp.HandlerFor(edgeReg, promhttp.HandlerOpts{}))
	defer edge.Close()
	side := httptest.NewServer(promhttp.HandlerFor(sideReg, promhttp.HandlerOpts{}))
	defer side.Close()
	put := func(key string, v any) {
		b, _ := json.Marshal(v)
		if _, err := cli.Put(context.Background(), key, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	put(discovery.EdgeKey(prefix, "e1"), discovery.Edge{ID: "e1", Address: "127.0.0.1:1", Admin: strings.TrimPrefix(edge.URL, "http://")})
	put(discovery.InstanceKey(prefix, discovery.Instance{ID: "a", Service: "feed", Version: "v2"}),
		discovery.Instance{ID: "a", Service: "feed", Version: "v2", Address: "tcp://127.0.0.1:1", Admin: strings.TrimPrefix(side.URL, "http://")})

	s, err := control.New(control.Config{Etcd: cli, Prefix: prefix, Token: token, Logger: quiet(), SampleEvery: 50 * time.Millisecond, SessionTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	defer func() { cancel(); <-done }()

	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for range 9 {
				edgeReqs.WithLabelValues("feed", "v2", "", "", "200").Inc()
				edgeDur.WithLabelValues("feed", "v2").Observe(0.005)
			}
			edgeReqs.WithLabelValues("feed", "v2", "", "", "502").Inc()
			edgeDur.WithLabelValues("feed", "v2").Observe(0.0005)
			sideReqs.WithLabelValues("feed", "v2", "200").Add(9)
		}
	}()
	defer func() { close(stop); <-fed }()

	url := "http://" + ln.Addr().String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var f control.LiveFigures
		resp, err := http.Get(url + "/v1/live")
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&f)
			resp.Body.Close()
		}
		v := f.Services["feed"]["v2"]
		if f.Window > 0 && v.Edge.Rate > 0 && v.Sidecar.Rate > 0 {
			if v.Edge.Success < 0.85 || v.Edge.Success > 0.95 || v.Sidecar.Success != 1 || v.Edge.P99 < time.Millisecond || v.Edge.P99 > 10*time.Millisecond {
				t.Fatalf("figures %+v: want the edge at 90%% success with p99 in 1-10ms, the sidecar at 100%%", v)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no live figures in 10s: %+v", f)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get(url + "/services/feed")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		page.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.Contains(page.String(), `data-version="v2"`) || !strings.Contains(page.String(), "from 2 sidecars and edges") {
		t.Fatalf("the service page lacks the live row of v2:\n%s", page.String())
	}
}
