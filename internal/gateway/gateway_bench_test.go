package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/griddle-mesh/griddle/internal/admission"
	"github.com/griddle-mesh/griddle/internal/dispatch"
	"github.com/griddle-mesh/griddle/internal/metrics"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// replyDispatcher answers every envelope with the same reply.
type replyDispatcher struct{ reply *wire.Reply }

func (d replyDispatcher) DoExchange(_ context.Context, req *wire.Request, _ dispatch.Policy) (*wire.Reply, *dispatch.Exchange, error) {
	req.Attempt = 1
	return d.reply, nil, nil
}

// discardWriter is a ResponseWriter that keeps only its header map, cleared
// for every request.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkGateway measures the edge's own work per request, without
// network or server: read the request, admission, envelope, routing
// decision, metrics, and the reply written back. The dispatcher is a stub.
func BenchmarkGateway(b *testing.B) {
	lim, err := admission.NewFair(admission.Config{})
	if err != nil {
		b.Fatal(err)
	}
	reply := &wire.Reply{Status: 200, Body: []byte("hello, x"), Headers: []*wire.Header{
		{Name: "Content-Type", Values: []string{"text/plain; charset=utf-8"}},
		{Name: "X-Seen-Deadline", Values: []string{"1795000000000000000"}},
		{Name: "Date", Values: []string{"Thu, 26 Nov 2026 02:00:00 GMT"}},
		{Name: "X-Griddle-Version", Values: []string{"v1"}},
	}}
	g, err := New(Config{
		Resolve:    func(*http.Request) (string, bool) { return "hello", true },
		Dispatcher: replyDispatcher{reply},
		Admission:  lim,
		Metrics:    metrics.NewGateway(prometheus.NewRegistry(), "edge"),
	})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "http://edge/hello/greet?name=x", http.NoBody)
	r.Header.Set("User-Agent", "Go-http-client/1.1")
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		g.ServeHTTP(w, r)
	}
}

// BenchmarkShed measures what refusing a request for load costs the edge
// once the service's limit and queue are full: the 503 with Retry-After,
// written back without reading the body or building an envelope.
func BenchmarkShed(b *testing.B) {
	lim, err := admission.NewFair(admission.Config{InitialLimit: 1, MinLimit: 1, MaxLimit: 1, QueueSize: 1, MaxWait: time.Hour, OverloadWait: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	held, err := lim.Acquire(context.Background(), "hello")
	if err != nil {
		b.Fatal(err)
	}
	defer lim.Release(held, false)
	// Fill the queue too: a waiter that gets no slot while the benchmark runs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if tk, err := lim.Acquire(ctx, "hello"); err == nil {
			lim.Release(tk, false)
		}
	}()
	for lim.Stats()["hello"].Queued < 1 {
		time.Sleep(time.Millisecond)
	}
	g, err := New(Config{
		Resolve:    func(*http.Request) (string, bool) { return "hello", true },
		Dispatcher: replyDispatcher{&wire.Reply{Status: 200}},
		Admission:  lim,
		Metrics:    metrics.NewGateway(prometheus.NewRegistry(), "edge"),
	})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "http://edge/hello/greet?name=x", http.NoBody)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		g.ServeHTTP(w, r)
	}
}
