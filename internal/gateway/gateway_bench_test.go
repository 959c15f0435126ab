package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

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
	lim, err := admission.New(admission.Config{})
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
