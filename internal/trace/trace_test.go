package trace

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/trace/otlptest"
	"github.com/griddle-mesh/griddle/internal/wire"
)

const clientParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestAppendAndPeekTrace(t *testing.T) {
	b, _ := proto.Marshal(&wire.Request{Id: "r1", Service: "hello", Trace: &wire.Trace{Traceparent: clientParent, Tracestate: "k=v"}})
	if got := peekTrace(b); got.GetTraceparent() != clientParent || got.GetTracestate() != "k=v" {
		t.Fatalf("peek: %v", got)
	}
	next := "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
	b = appendTrace(b, &wire.Trace{Traceparent: next})
	var req wire.Request
	if err := proto.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if req.GetTrace().GetTraceparent() != next || req.GetTrace().GetTracestate() != "k=v" || req.GetId() != "r1" {
		t.Fatalf("decoded after append: %v, want the new traceparent and the old tracestate", &req)
	}
	if got := peekTrace(b); got.GetTraceparent() != next || got.GetTracestate() != "k=v" {
		t.Fatalf("peek after append: %v, want what the decoder sees", got)
	}
	if peekTrace([]byte{0xff}) != nil {
		t.Errorf("peek of garbage: want nil")
	}
}

// TestNoEndpointCostsNothing: without an endpoint nothing is made, and the
// calls on the request path neither allocate nor touch the envelope.
func TestNoEndpointCostsNothing(t *testing.T) {
	tr, err := New(Config{})
	if err != nil || tr != nil {
		t.Fatalf("New without endpoint: %v, %v; want nil, nil", tr, err)
	}
	req := &wire.Request{Service: "hello", Trace: &wire.Trace{Traceparent: clientParent}}
	msg := []byte("envelope")
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		c, sp := tr.Request(ctx, false, req)
		m, asp := Attempt(c, msg, "hello", 1, "tcp://x")
		asp.End(200)
		m, hop := tr.Hop(m, "hello", "v1")
		hop.End(nil, nil)
		sp.End(200)
		if string(m) != "envelope" {
			t.Fatal("the envelope changed")
		}
	})
	if allocs != 0 || req.Trace.Traceparent != clientParent {
		t.Errorf("%v allocations per request, traceparent %q: want 0 and the client's kept", allocs, req.Trace.Traceparent)
	}
}

// TestSpansChain: a request that comes with a client's traceparent gets
// the spans edge → dispatch → sidecar → handler in the client's trace, each
// the parent of the next, exported over OTLP/HTTP.
func TestSpansChain(t *testing.T) {
	rcv := otlptest.Start()
	defer rcv.Close()
	if _, err := New(Config{Endpoint: "ftp://x"}); err == nil || !strings.Contains(err.Error(), "--otlp-endpoint") {
		t.Fatalf("bad endpoint: %v", err)
	}
	tr, err := New(Config{Endpoint: rcv.URL(), Service: "griddle-test", BatchTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	req := &wire.Request{Id: "r1", Service: "hello", Method: "GET", Path: "/hello/", Trace: &wire.Trace{Traceparent: clientParent}}
	ctx, sp := tr.Request(context.Background(), false, req)
	msg, _ := proto.Marshal(req)
	msg, asp := Attempt(ctx, msg, "hello", 1, "tcp://127.0.0.1:1")
	msg, hop := tr.Hop(msg, "hello", "v1")
	reply, _ := proto.Marshal(&wire.Reply{Status: 200})
	hop.End(reply, nil)
	asp.End(200)
	sp.End(200)
	var handlerCtx wire.Request
	if err := proto.Unmarshal(msg, &handlerCtx); err != nil {
		t.Fatal(err)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	byName := map[string]otlptest.Span{}
	for _, s := range rcv.Spans() {
		byName[s.Name] = s
	}
	chain := []string{"edge hello", "dispatch hello", "sidecar hello", "handler hello"}
	parent := "00f067aa0ba902b7"
	for _, name := range chain {
		s, ok := byName[name]
		if !ok {
			t.Fatalf("no span %q among %v", name, rcv.Spans())
		}
		if s.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || s.Parent != parent || s.Service != "griddle-test" {
			t.Errorf("%s: trace %s parent %s service %s, want the client's trace, parent %s", name, s.TraceID, s.Parent, s.Service, parent)
		}
		parent = s.ID
	}
	if want := "-" + parent + "-"; !strings.Contains(handlerCtx.GetTrace().GetTraceparent(), want) {
		t.Errorf("the handler got traceparent %q, want the handler span %s as its parent", handlerCtx.GetTrace().GetTraceparent(), parent)
	}
	if byName["edge hello"].Attributes["http.response.status_code"] != "200" {
		t.Errorf("edge span attributes %v", byName["edge hello"].Attributes)
	}
}
