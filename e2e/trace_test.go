package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/trace/otlptest"
)

// TestTraceAcrossTheMesh: a client's W3C trace goes through the edge,
// profiles' sidecar and handler, its call to hello and hello's sidecar and
// handler; each process exports its spans over OTLP/HTTP, and they form
// one chain in the client's trace.
func TestTraceAcrossTheMesh(t *testing.T) {
	rcv := otlptest.Start()
	defer rcv.Close()
	otlp := []string{"--otlp-endpoint", rcv.URL()}
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1", otlp...)
	m.Sidecar("profiles", "v1", append([]string{"--http-prefix", "/profiles/"}, otlp...)...)
	e := m.Edge(append([]string{"--timeout", "3s"}, otlp...)...)
	seed(t, e.Addr, 10)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("GET", "http://"+e.Addr+"/profiles/7/greeting", nil)
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}

	// Parent of each span, by name, in the client's trace.
	chain := []struct{ name, service string }{
		{"edge profiles", "griddle-edge"}, {"dispatch profiles", "griddle-edge"},
		{"sidecar profiles", "profiles"}, {"handler profiles", "profiles"},
		{"outbound hello", "profiles"}, {"dispatch hello", "profiles"},
		{"sidecar hello", "hello"}, {"handler hello", "hello"},
	}
	var byName map[string]otlptest.Span
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		byName = map[string]otlptest.Span{}
		for _, s := range rcv.Spans() {
			if s.TraceID == traceID {
				byName[s.Name] = s
			}
		}
		if len(byName) >= len(chain) {
			break
		}
		if time.Since(start) > 15*time.Second {
			var names []string
			for n := range byName {
				names = append(names, n)
			}
			t.Fatalf("spans of the trace after 15s: %s; want %d", strings.Join(names, ", "), len(chain))
		}
	}
	parent := "00f067aa0ba902b7"
	for _, c := range chain {
		s, ok := byName[c.name]
		if !ok {
			t.Fatalf("no span %q", c.name)
		}
		if s.Parent != parent || s.Service != c.service {
			t.Errorf("%s from %s: parent %s, want %s from %s", c.name, s.Service, s.Parent, parent, c.service)
		}
		parent = s.ID
	}
}
