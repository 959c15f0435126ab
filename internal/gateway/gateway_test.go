package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/admission"
	"github.com/griddle-mesh/griddle/internal/dispatch"
	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// funcDispatcher answers with a function, and remembers the last envelope
// and policy it was given.
type funcDispatcher struct {
	fn   func(*wire.Request) (*wire.Reply, error)
	mu   sync.Mutex
	last *wire.Request
	pol  dispatch.Policy
}

func (d *funcDispatcher) DoExchange(_ context.Context, req *wire.Request, pol dispatch.Policy) (*wire.Reply, *dispatch.Exchange, error) {
	d.mu.Lock()
	d.last, d.pol = req, pol
	d.mu.Unlock()
	reply, err := d.fn(req)
	return reply, nil, err
}

func newGateway(t *testing.T, d Dispatcher, edit func(*Config)) *Gateway {
	t.Helper()
	cfg := Config{Resolve: func(r *http.Request) (string, bool) {
		return "hello", strings.HasPrefix(r.URL.Path, "/hello/")
	}, Dispatcher: d}
	if edit != nil {
		edit(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestFailuresMapToStatuses checks the HTTP answer of every mesh failure:
// the status, an error id in the header and the body, and no Go error text.
func TestFailuresMapToStatuses(t *testing.T) {
	tests := []struct {
		name       string
		reply      *wire.Reply
		err        error
		wantStatus int
		wantCode   string
	}{
		{"no instance", nil, fmt.Errorf("%w: hello", dispatch.ErrNoInstance), 502, "no_instance"},
		{"deadline", nil, fmt.Errorf("%w: waiting for tcp://x", dispatch.ErrDeadline), 504, "deadline_exceeded"},
		{"unavailable", nil, fmt.Errorf("%w: pipe closed", dispatch.ErrUnavailable), 503, "unavailable"},
		{"unencodable", nil, fmt.Errorf("%w: bad utf-8", dispatch.ErrBadRequest), 400, "bad_request"},
		{"sidecar deadline", &wire.Reply{Code: wire.Code_CODE_DEADLINE_EXCEEDED}, nil, 504, "deadline_exceeded"},
		{"sidecar overloaded", &wire.Reply{Code: wire.Code_CODE_OVERLOADED}, nil, 503, "unavailable"},
		{"handler broke", &wire.Reply{Code: wire.Code_CODE_INTERNAL, Message: "panic: boom"}, nil, 502, "bad_gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGateway(t, &funcDispatcher{fn: func(*wire.Request) (*wire.Reply, error) { return tt.reply, tt.err }}, nil)
			rec := httptest.NewRecorder()
			g.ServeHTTP(rec, httptest.NewRequest("GET", "/hello/x", nil))
			var body errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not a JSON error: %v", rec.Body, err)
			}
			id := rec.Header().Get(wire.HeaderErrorID)
			if rec.Code != tt.wantStatus || body.Code != tt.wantCode || id == "" || body.ID != id {
				t.Errorf("got %d %+v with id header %q, want %d %q with the same id in both", rec.Code, body, id, tt.wantStatus, tt.wantCode)
			}
			if strings.Contains(rec.Body.String(), "dispatch") || strings.Contains(rec.Body.String(), "panic") {
				t.Errorf("body %q leaks internal error text", rec.Body)
			}
			if tt.wantStatus == 503 && rec.Header().Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

func TestNoRouteAndBodyLimits(t *testing.T) {
	d := &funcDispatcher{fn: func(*wire.Request) (*wire.Reply, error) { return &wire.Reply{Status: 200}, nil }}
	g := newGateway(t, d, func(c *Config) { c.MaxBodyBytes = 10 })
	for _, tt := range []struct {
		name string
		req  *http.Request
		want int
	}{
		{"unknown path", httptest.NewRequest("GET", "/nowhere", nil), 404},
		{"declared too large", httptest.NewRequest("POST", "/hello/x", strings.NewReader(strings.Repeat("x", 11))), 413},
		{"fits", httptest.NewRequest("POST", "/hello/x", strings.NewReader("0123456789")), 200},
	} {
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, tt.req)
		if rec.Code != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, rec.Code, tt.want)
		}
	}
}

// TestEdgeStripsMeshHeaders: end users cannot set the mesh's own headers,
// while a handler's outbound calls (trusted) carry them along.
func TestEdgeStripsMeshHeaders(t *testing.T) {
	deadline := time.Now().Add(time.Second).UnixNano()
	for _, trusted := range []bool{false, true} {
		d := &funcDispatcher{fn: func(*wire.Request) (*wire.Reply, error) { return &wire.Reply{Status: 200}, nil }}
		g := newGateway(t, d, func(c *Config) { c.TrustMeshHeaders = trusted })
		r := httptest.NewRequest("GET", "/hello/x", nil)
		r.Header.Set(wire.HeaderDeadline, fmt.Sprint(deadline))
		r.Header.Set(wire.HeaderRequestID, "req-1")
		g.ServeHTTP(httptest.NewRecorder(), r)
		h := http.Header{}
		wire.DecodeHeader(h, d.last.GetHeaders())
		gotDeadline := d.last.GetDeadlineUnixNano() == deadline
		if trusted != gotDeadline || trusted != (d.last.GetId() == "req-1") {
			t.Errorf("trusted=%v: deadline taken %v, id %q", trusted, gotDeadline, d.last.GetId())
		}
		if !trusted && (h.Get(wire.HeaderDeadline) != "" || h.Get(wire.HeaderRequestID) != "") {
			t.Errorf("the edge forwarded mesh headers from a client: %v", h)
		}
	}
}

func TestRulesDecideVersionTimeoutAndRetries(t *testing.T) {
	doc, err := routing.Parse([]byte(`
service: hello
timeout: 300ms
retries: {attempts: 2, perTry: 100ms, on: [5xx, deadline]}
versions:
  - match: {header: {x-beta: "1"}}
    to: {v2: 100}
  - to: {v1: 100}
`))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.Compile([]routing.Document{*doc}, 7)
	if err != nil {
		t.Fatal(err)
	}
	d := &funcDispatcher{fn: func(*wire.Request) (*wire.Reply, error) { return &wire.Reply{Status: 200}, nil }}
	g := newGateway(t, d, func(c *Config) { c.Rules = func() *routing.Table { return table } })

	tests := []struct {
		name, header, pin, want string
	}{
		{"catch-all", "", "", "v1"},
		{"matched header", "1", "", "v2"},
		{"pin beats rules", "1", "hello=v1", "v1"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/hello/x", nil)
		if tt.header != "" {
			r.Header.Set("X-Beta", tt.header)
		}
		if tt.pin != "" {
			r.Header.Set(routing.HeaderPin, tt.pin)
		}
		start := time.Now()
		g.ServeHTTP(httptest.NewRecorder(), r)
		if got := d.last.GetVersion(); got != tt.want {
			t.Errorf("%s: version %q, want %q", tt.name, got, tt.want)
		}
		if left := time.Until(time.Unix(0, d.last.GetDeadlineUnixNano())); left > 300*time.Millisecond || time.Since(start) > 300*time.Millisecond {
			t.Errorf("%s: deadline %v ahead, want the rule's 300ms", tt.name, left)
		}
	}
	if p := d.pol; p.Attempts != 2 || p.PerTry != 100*time.Millisecond || !p.On5xx || !p.OnDeadline || p.NonIdempotent || p.Budget == nil {
		t.Errorf("policy %+v, want the rule's retries with a budget", p)
	}
}

func TestShedAtOnce(t *testing.T) {
	lim, err := admission.New(admission.Config{InitialLimit: 8, MinLimit: 8, MaxLimit: 8, QueueSize: 1, MaxWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	d := &funcDispatcher{fn: func(*wire.Request) (*wire.Reply, error) {
		<-release
		return &wire.Reply{Status: 200}, nil
	}}
	g := newGateway(t, d, func(c *Config) { c.Admission = lim })
	done := make(chan int, 9)
	for range 9 { // 8 slots and one place in the queue
		go func() {
			rec := httptest.NewRecorder()
			g.ServeHTTP(rec, httptest.NewRequest("GET", "/hello/x", nil))
			done <- rec.Code
		}()
	}
	for s := lim.Stats(); s.InFlight < 8 || s.Queued < 1; s = lim.Stats() {
		time.Sleep(time.Millisecond)
	}
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, httptest.NewRequest("GET", "/hello/x", nil))
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || rec.Header().Get(wire.HeaderErrorID) == "" {
		t.Errorf("over the limit: %d %v, want a 503 with Retry-After and an error id", rec.Code, rec.Header())
	}
	close(release)
	for range 9 {
		if code := <-done; code != 200 {
			t.Errorf("an admitted request got %d", code)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	d := &funcDispatcher{}
	for name, cfg := range map[string]Config{
		"no resolve":       {Dispatcher: d},
		"no dispatcher":    {Resolve: func(*http.Request) (string, bool) { return "", false }},
		"negative timeout": {Resolve: func(*http.Request) (string, bool) { return "", false }, Dispatcher: d, Timeout: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// TestForwardedHeaders: the edge tells the handler who the client is; a
// client cannot choose the address, a trusted proxy in front adds to it.
func TestForwardedHeaders(t *testing.T) {
	for _, c := range []struct {
		name, remote string
		trusted      []netip.Prefix
		wantXFF      string
		wantFwd      string
	}{
		{"client", "203.0.113.7:5000", nil, "203.0.113.7", `for=203.0.113.7;proto=http;host="example.com"`},
		{"forged by a client", "203.0.113.7:5000", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "203.0.113.7", `for=203.0.113.7;proto=http;host="example.com"`},
		{"trusted proxy", "10.1.2.3:5000", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "198.51.100.1, 10.1.2.3", `for=198.51.100.1, for=10.1.2.3;proto=http;host="example.com"`},
		{"ipv6 client", "[2001:db8::1]:5000", nil, "2001:db8::1", `for="[2001:db8::1]";proto=http;host="example.com"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &funcDispatcher{fn: func(*wire.Request) (*wire.Reply, error) { return &wire.Reply{Status: 200}, nil }}
			g := newGateway(t, d, func(cfg *Config) { cfg.TrustedProxies = c.trusted })
			r := httptest.NewRequest("GET", "http://example.com/hello/x", nil)
			r.RemoteAddr = c.remote
			r.Header.Set("X-Forwarded-For", "198.51.100.1")
			r.Header.Set("Forwarded", "for=198.51.100.1")
			g.ServeHTTP(httptest.NewRecorder(), r)
			h := http.Header{}
			wire.DecodeHeader(h, d.last.GetHeaders())
			if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != c.wantXFF {
				t.Errorf("X-Forwarded-For: got %q, want %q", got, c.wantXFF)
			}
			if got := h.Get("Forwarded"); got != c.wantFwd {
				t.Errorf("Forwarded: got %q, want %q", got, c.wantFwd)
			}
			if got := h.Get("X-Forwarded-Proto") + " " + h.Get("X-Forwarded-Host"); got != "http example.com" {
				t.Errorf("X-Forwarded-Proto and -Host: got %q", got)
			}
			if d.last.GetRemoteAddr() != c.remote {
				t.Errorf("remote address: got %q, want %q", d.last.GetRemoteAddr(), c.remote)
			}
		})
	}
}

// TestUpgrades: an upgrade goes to the handler as one (its envelope says
// so and keeps the Upgrade and Connection fields), unless the service's
// rules refuse upgrades: then a plain 501, not a 200 from a handler that
// saw an ordinary GET.
func TestUpgrades(t *testing.T) {
	upgrade := func() *http.Request {
		r := httptest.NewRequest("GET", "/hello/ws", nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		return r
	}
	d := &funcDispatcher{fn: func(*wire.Request) (*wire.Reply, error) { return &wire.Reply{Status: 400}, nil }}
	g := newGateway(t, d, nil)
	w := httptest.NewRecorder()
	g.ServeHTTP(w, upgrade())
	if w.Code != 400 || !d.last.GetUpgrade() || !d.last.GetLongLived() || wire.HeaderValue(d.last.GetHeaders(), "Upgrade") != "websocket" {
		t.Errorf("allowed: got %d, envelope %v; want the handler's 400 and an upgrade envelope", w.Code, d.last)
	}

	doc, err := routing.Parse([]byte("service: hello\nstreams: {upgrades: false}\nversions: [{to: {v1: 100}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.Compile([]routing.Document{*doc}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d = &funcDispatcher{fn: func(*wire.Request) (*wire.Reply, error) { return &wire.Reply{Status: 200}, nil }}
	g = newGateway(t, d, func(c *Config) { c.Rules = func() *routing.Table { return table } })
	w = httptest.NewRecorder()
	g.ServeHTTP(w, upgrade())
	if w.Code != http.StatusNotImplemented || d.last != nil {
		t.Errorf("refused by the rules: got %d, dispatched %v; want 501 and nothing sent", w.Code, d.last != nil)
	}
}
