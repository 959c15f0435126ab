package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/plugins"
	"github.com/griddle-mesh/griddle/plugins/plugintest"
)

const (
	traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tracestate  = "griddle=1"
	routing     = "sticky=u42;exp=ranking-test:b"
)

func TestProfilesCRUD(t *testing.T) {
	s := plugintest.Start(t, ".")
	for _, c := range []struct {
		name, method, path, body string
		wantCode                 int
		wantBody                 string
	}{
		{"get seeded", "GET", "/profiles/7", "", 200, `{"id":7,"name":"user-7"}`},
		{"get missing", "GET", "/profiles/100000", "", 404, `{"error":"no such profile"}`},
		{"get bad id", "GET", "/profiles/x", "", 400, `{"error":"id: want a positive integer"}`},
		{"put", "PUT", "/profiles/7", `{"name":"ada","bio":"math"}`, 200, `{"id":7,"name":"ada","bio":"math"}`},
		{"get after put", "GET", "/profiles/7", "", 200, `{"id":7,"name":"ada","bio":"math"}`},
		{"put bad json", "PUT", "/profiles/7", `{"name":`, 400, `{"error":"body: want a JSON object {\"name\", \"bio\"}"}`},
		{"put unknown field", "PUT", "/profiles/7", `{"nom":"x"}`, 400, `{"error":"body: want a JSON object {\"name\", \"bio\"}"}`},
		{"put trailing data", "PUT", "/profiles/7", `{"name":"x"} {}`, 400, `{"error":"body: want a single JSON object"}`},
		{"put empty name", "PUT", "/profiles/7", `{"name":""}`, 400, `{"error":"name: want 1 to 200 bytes"}`},
		{"put too large", "PUT", "/profiles/7", `{"name":"` + strings.Repeat("a", maxBody) + `"}`, 413, `{"error":"body too large"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body, _ := do(t, s.Client(), c.method, s.URL()+c.path, c.body, nil)
			if code != c.wantCode || body != c.wantBody {
				t.Errorf("got %d %s, want %d %s", code, body, c.wantCode, c.wantBody)
			}
		})
	}
}

// TestGreetingPropagates checks that the outbound call through plugins.Mesh
// carries the deadline, trace context, routing context and request id of
// the incoming request.
func TestGreetingPropagates(t *testing.T) {
	var (
		mu   sync.Mutex
		seen http.Header
		host string
	)
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen, host = r.Header.Clone(), r.Host
		mu.Unlock()
		w.Header().Set("X-Seen-Deadline", r.Header.Get(plugins.HeaderDeadline))
		io.WriteString(w, "hello, "+r.URL.Query().Get("name"))
	})
	s := plugintest.Start(t, ".", plugintest.WithService("hello", hello))

	deadline := plugins.FormatDeadline(time.Now().Add(5 * time.Second))
	code, body, _ := do(t, s.Client(), "GET", s.URL()+"/profiles/42/greeting", "", http.Header{
		plugins.HeaderDeadline:    {deadline},
		plugins.HeaderRequestID:   {"req-1"},
		plugins.HeaderTraceparent: {traceparent},
		plugins.HeaderTracestate:  {tracestate},
		plugins.HeaderRouting:     {routing},
	})
	if code != http.StatusOK {
		t.Fatalf("got %d %s, want 200", code, body)
	}
	var g greeting
	if err := json.Unmarshal([]byte(body), &g); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	want := greeting{Greeting: "hello, user-42", HelloSawDeadline: deadline, MyDeadline: deadline}
	if g != want {
		t.Errorf("got %+v, want %+v", g, want)
	}

	mu.Lock()
	defer mu.Unlock()
	if host != "hello" {
		t.Errorf("Host: got %q, want hello", host)
	}
	for _, c := range []struct{ header, want string }{
		{plugins.HeaderDeadline, deadline},
		{plugins.HeaderParentID, "req-1"},
		{plugins.HeaderTraceparent, traceparent},
		{plugins.HeaderTracestate, tracestate},
		{plugins.HeaderRouting, routing},
	} {
		if got := seen.Get(c.header); got != c.want {
			t.Errorf("%s: got %q, want %q", c.header, got, c.want)
		}
	}
}

func TestGreetingMeshFailure(t *testing.T) {
	s := plugintest.Start(t, ".") // no hello service: the mesh answers 502
	code, body, h := do(t, s.Client(), "GET", s.URL()+"/profiles/1/greeting", "", nil)
	if code != http.StatusBadGateway || body != `{"error":"hello service failed"}` {
		t.Errorf("got %d %s, want 502 {\"error\":\"hello service failed\"}", code, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
}

// TestGreetingRealHello runs profiles against the real hello handler.
func TestGreetingRealHello(t *testing.T) {
	hello := plugintest.Start(t, "../hello")
	u, err := url.Parse(hello.URL())
	if err != nil {
		t.Fatal(err)
	}
	s := plugintest.Start(t, ".", plugintest.WithService("hello", httputil.NewSingleHostReverseProxy(u)))

	deadline := plugins.FormatDeadline(time.Now().Add(5 * time.Second))
	code, body, _ := do(t, s.Client(), "GET", s.URL()+"/profiles/3/greeting", "", http.Header{plugins.HeaderDeadline: {deadline}})
	if code != http.StatusOK {
		t.Fatalf("got %d %s, want 200", code, body)
	}
	var g greeting
	if err := json.Unmarshal([]byte(body), &g); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	want := greeting{Greeting: "hello, user-3", HelloSawDeadline: deadline, MyDeadline: deadline}
	if g != want {
		t.Errorf("got %+v, want %+v", g, want)
	}
}

func do(t *testing.T, c *http.Client, method, url, body string, h http.Header) (int, string, http.Header) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSuffix(string(b), "\n"), resp.Header
}
