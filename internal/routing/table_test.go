package routing

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// mustParse parses a document or fails the test.
func mustParse(t testing.TB, yaml string) Document {
	t.Helper()
	d, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return *d
}

// mustService compiles one document and returns its service.
func mustService(t testing.TB, yaml string) *Service {
	t.Helper()
	d := mustParse(t, yaml)
	tab, err := Compile([]Document{d}, 1)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tab.Service(d.Service)
}

func TestRoute(t *testing.T) {
	tab, err := Compile([]Document{
		mustParse(t, "service: profiles\nhttp: [{pathPrefix: /api/profiles/, methods: [GET, PUT]}]\nversions: [{to: {v1: 100}}]"),
		mustParse(t, "service: admin\nhttp: [{pathPrefix: /api/profiles/admin/}]\nversions: [{to: {v1: 100}}]"),
		mustParse(t, "service: api\nhttp: [{pathPrefix: /api/}, {pathPrefix: /v0/, methods: [POST]}]\nversions: [{to: {v1: 100}}]"),
		mustParse(t, "service: internal\nversions: [{to: {v1: 100}}]"),
	}, 42)
	if err != nil {
		t.Fatal(err)
	}
	if got := tab.Revision(); got != 42 {
		t.Errorf("Revision() = %d, want 42", got)
	}
	for _, tc := range []struct {
		name, path, method, want string
	}{
		{"longest prefix", "/api/profiles/admin/x", "DELETE", "admin"},
		{"method allowed", "/api/profiles/1", "GET", "profiles"},
		{"method not allowed falls back to shorter prefix", "/api/profiles/1", "DELETE", "api"},
		{"shorter prefix", "/api/other", "PATCH", "api"},
		{"unknown method only where all methods allowed", "/api/profiles/1", "PROPFIND", "api"},
		{"method list", "/v0/x", "POST", "api"},
		{"method list refuses", "/v0/x", "GET", ""},
		{"empty method is GET", "/api/profiles/1", "", "profiles"},
		{"no route", "/other", "GET", ""},
		{"prefix is not a path segment match", "/api", "GET", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tab.Route(tc.path, tc.method)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("Route(%q, %q) = %q, %v; want %q", tc.path, tc.method, got, ok, tc.want)
			}
		})
	}
	if s := tab.Service("nobody"); s != nil {
		t.Errorf("Service(nobody) = %v, want nil", s)
	}
	if got := len(tab.Documents()); got != 4 {
		t.Errorf("len(Documents()) = %d, want 4", got)
	}
}

func TestCompileErrors(t *testing.T) {
	a := mustParse(t, "service: a\nhttp: [{pathPrefix: /x/, methods: [GET]}]\nversions: [{to: {v1: 100}}]")
	for _, tc := range []struct {
		name string
		docs []Document
		want error
		text string
	}{
		{"duplicate service", []Document{a, a}, ErrDuplicateService, `documents[1]: routing: duplicate service "a"`},
		{"route conflict", []Document{a, mustParse(t, "service: b\nhttp: [{pathPrefix: /x/}]\nversions: [{to: {v1: 100}}]")},
			ErrRouteConflict, `documents[1]: routing: conflicting http routes: pathPrefix "/x/" is exposed by "a" and "b"`},
		{"invalid document", []Document{{Service: "c"}}, ErrInvalid, `documents[0] (service "c"): versions: at least one rule required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := Compile(tc.docs, 1)
			if tab != nil || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, %v; want nil, %v", tab, err, tc.want)
			}
			if err.Error() != tc.text {
				t.Errorf("got %q, want %q", err.Error(), tc.text)
			}
		})
	}
	// Disjoint methods on one prefix are no conflict.
	b := mustParse(t, "service: b\nhttp: [{pathPrefix: /x/, methods: [POST]}]\nversions: [{to: {v1: 100}}]")
	tab, err := Compile([]Document{a, b}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tab.Route("/x/1", "POST"); got != "b" {
		t.Errorf("Route POST = %q, want b", got)
	}
}

func TestCompileCopies(t *testing.T) {
	d := mustParse(t, "service: a\nversions: [{to: {v1: 100}}]")
	tab, err := Compile([]Document{d}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d.Versions[0].To["v1"] = 0
	if got := tab.Documents()[0].Versions[0].To["v1"]; got != 100 {
		t.Errorf("after the caller changed its document, table holds weight %d, want 100", got)
	}
}

func TestMatchConditions(t *testing.T) {
	s := mustService(t, `
service: s
versions:
  - match: {pathPrefix: /beta/}
    to: {path: 100}
  - match: {methods: [DELETE, PATCH]}
    to: {method: 100}
  - match: {header: {x-beta: "1"}}
    to: {header: 100}
  - match: {cookie: {tier: gold}}
    to: {cookie: 100}
  - match: {query: {"exp a": "b c"}}
    to: {query: 100}
  - match: {pathPrefix: /both/, query: {q: "1"}}
    to: {both: 100}
  - to: {default: 100}
`)
	req := func(method, target string, headers ...string) *http.Request {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Add(headers[i], headers[i+1])
		}
		return r
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
		want string
	}{
		{"path prefix", req("GET", "/beta/x"), "path"},
		{"path prefix not held", req("GET", "/betax"), "default"},
		{"method", req("PATCH", "/x"), "method"},
		{"method not listed", req("PUT", "/x"), "default"},
		{"header, name case-insensitive", req("GET", "/x", "X-BETA", "1"), "header"},
		{"header, one of several values", req("GET", "/x", "x-beta", "0", "x-beta", "1"), "header"},
		{"header value differs", req("GET", "/x", "x-beta", "2"), "default"},
		{"cookie", req("GET", "/x", "Cookie", "a=b; tier=gold"), "cookie"},
		{"cookie quoted", req("GET", "/x", "Cookie", `tier="gold"`), "cookie"},
		{"cookie in a second header line", req("GET", "/x", "Cookie", "a=b", "Cookie", "tier=gold"), "cookie"},
		{"cookie value differs", req("GET", "/x", "Cookie", "tier=silver"), "default"},
		{"cookie name is a suffix", req("GET", "/x", "Cookie", "xtier=gold"), "default"},
		{"query, escaped", req("GET", "/x?z=1&exp+a=b%20c"), "query"},
		{"query value differs", req("GET", "/x?exp%20a=b"), "default"},
		{"all conditions", req("GET", "/both/?q=1"), "both"},
		{"one condition of two", req("GET", "/both/?q=2"), "default"},
		{"nil request takes the catch-all", nil, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.Decide(tc.r, nil).Version; got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWeightedDraw(t *testing.T) {
	s := mustService(t, "service: s\nversions: [{to: {v1: 90, v2: 10, v3: 0}}]")
	r := httptest.NewRequest("GET", "/", nil)
	rc := &wire.Routing{}
	const n = 10000
	counts := map[string]int{}
	for range n {
		counts[s.Decide(r, rc).Version]++
	}
	if got := float64(counts["v2"]) * 100 / n; got < 8 || got > 12 {
		t.Errorf("v2 got %.1f%% of %d requests, want 10 ± 2", got, n)
	}
	if got := counts["v3"]; got != 0 {
		t.Errorf("v3 (weight 0) got %d requests, want 0", got)
	}
	if rc.StickyKey != "" || rc.Experiments != nil {
		t.Errorf("a non-sticky rule wrote the routing context: %v", rc)
	}
}

func TestStickyDeterministic(t *testing.T) {
	s := mustService(t, "service: s\nversions: [{name: exp, sticky: header:x-user, to: {a: 34, b: 33, c: 33}}]")
	counts := map[string]int{}
	for i := range 3000 {
		key := fmt.Sprintf("user-%d", i)
		var first string
		for j := range 3 {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-User", key)
			got := s.Decide(r, &wire.Routing{}).Version
			if j == 0 {
				first = got
				counts[got]++
			} else if got != first {
				t.Fatalf("key %q: got %q, earlier %q", key, got, first)
			}
		}
	}
	for v, c := range counts {
		if c < 900 || c > 1100 {
			t.Errorf("version %s got %d of 3000 keys, want about 1000", v, c)
		}
	}
}

// TestRampMonotonic ramps a canary and checks that no key ever leaves the
// new version, and that the old version's keys only move to the new one.
func TestRampMonotonic(t *testing.T) {
	const keys = 10000
	for _, rule := range []string{"name: canary, sticky: cookie:uid", "sticky: cookie:uid"} {
		t.Run(rule, func(t *testing.T) {
			prev := make([]string, keys)
			for _, w := range []int{0, 5, 25, 50, 100} {
				s := mustService(t, fmt.Sprintf("service: s\nversions: [{%s, to: {v1: %d, v2: %d}}]", rule, 100-w, w))
				onNew := 0
				for k := range keys {
					r := httptest.NewRequest("GET", "/", nil)
					r.Header.Set("Cookie", fmt.Sprintf("uid=%d", k))
					got := s.Decide(r, nil).Version
					if prev[k] == "v2" && got != "v2" {
						t.Fatalf("at weight %d key %d left v2 for %s", w, k, got)
					}
					prev[k] = got
					if got == "v2" {
						onNew++
					}
				}
				if share := onNew * 100 / keys; share < w-2 || share > w+2 {
					t.Errorf("at weight %d, %d%% of keys on v2, want %d ± 2", w, share, w)
				}
			}
		})
	}
}

func TestPins(t *testing.T) {
	s := mustService(t, "service: feed\nversions:\n- match: {pathPrefix: /x}\n  to: {v3: 100}\n- to: {v1: 100, v2: 0}")
	r := httptest.NewRequest("GET", "/", nil)
	for _, tc := range []struct {
		name   string
		header string
		want   Decision
	}{
		{"pinned to a version of weight 0", "feed=v2", Decision{Version: "v2", Pinned: true}},
		{"pinned to a version of another rule", "profiles=v9, feed = v3", Decision{Version: "v3", Pinned: true}},
		{"pin of an unknown version ignored", "feed=v7", Decision{Version: "v1"}},
		{"pin of another service ignored", "profiles=v2", Decision{Version: "v1"}},
		{"no pins", "", Decision{Version: "v1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &wire.Routing{Pins: ParsePins(tc.header)}
			if got := s.Decide(r, rc); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParsePins(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{"feed=v2, profiles=v3", map[string]string{"feed": "v2", "profiles": "v3"}},
		{" feed = v2 ,,bad, =v1, x=, Up=v1, feed=v9", map[string]string{"feed": "v2"}},
		{"", nil},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := ParsePins(tc.in)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("ParsePins(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestExperimentsAlongTheChain(t *testing.T) {
	s := mustService(t, "service: s\nversions: [{name: exp, sticky: cookie:uid, to: {a: 50, b: 50}}]")

	t.Run("upstream assignment holds", func(t *testing.T) {
		for _, v := range []string{"a", "b"} {
			rc := &wire.Routing{Experiments: map[string]string{"exp": v}, StickyKey: "k"}
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Cookie", "uid=someone")
			want := Decision{Version: v, Experiment: "exp", Variant: v}
			if got := s.Decide(r, rc); got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		}
	})
	t.Run("assignment to an unknown version ignored", func(t *testing.T) {
		rc := &wire.Routing{Experiments: map[string]string{"exp": "zzz"}}
		if got := s.Decide(nil, rc).Version; got != "a" && got != "b" {
			t.Errorf("got %q, want a or b", got)
		}
		if v := rc.Experiments["exp"]; v == "zzz" {
			t.Errorf("assignment not replaced: %q", v)
		}
	})
	t.Run("edge records, next hop follows", func(t *testing.T) {
		for i := range 200 {
			edge := httptest.NewRequest("GET", "/", nil)
			edge.Header.Set("Cookie", fmt.Sprintf("uid=u%d", i))
			rc := &wire.Routing{}
			first := s.Decide(edge, rc)
			if rc.StickyKey != fmt.Sprintf("u%d", i) || rc.Experiments["exp"] != first.Version {
				t.Fatalf("routing context %v after %+v", rc, first)
			}
			// The next hop's outbound request carries no cookie.
			hop := httptest.NewRequest("GET", "/other", nil)
			delete(rc.Experiments, "exp") // even without the assignment, the key decides alike
			if got := s.Decide(hop, rc); got != first {
				t.Fatalf("hop 2: got %+v, want %+v", got, first)
			}
		}
	})
	t.Run("no key: drawn, then recorded", func(t *testing.T) {
		rc := &wire.Routing{}
		d := s.Decide(httptest.NewRequest("GET", "/", nil), rc)
		if rc.Experiments["exp"] != d.Version || rc.StickyKey != "" {
			t.Errorf("routing context %v after %+v", rc, d)
		}
	})
}

func TestDecideAllocs(t *testing.T) {
	weighted := mustService(t, "service: s\nversions:\n- match: {header: {x-beta: \"1\"}, query: {q: \"1\"}}\n  to: {v2: 100}\n- to: {v1: 90, v2: 10}")
	sticky := mustService(t, "service: s\nversions: [{name: exp, sticky: cookie:uid, to: {v1: 90, v2: 10}}]")
	r := httptest.NewRequest("GET", "/x?a=b&q=2", nil)
	r.Header.Set("Cookie", "a=b; uid=alice")
	r.Header.Set("X-Beta", "1")
	for _, tc := range []struct {
		name string
		s    *Service
		max  float64
	}{
		{"weighted", weighted, 1},
		{"sticky", sticky, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &wire.Routing{Pins: map[string]string{"other": "v1"}, Experiments: map[string]string{"other": "x"}}
			got := testing.AllocsPerRun(1000, func() { tc.s.Decide(r, rc) })
			if got > tc.max {
				t.Errorf("got %v allocations per Decide, want at most %v", got, tc.max)
			}
		})
	}
}

// TestDecideConcurrent shares one Table among goroutines (run with -race).
func TestDecideConcurrent(t *testing.T) {
	s := mustService(t, "service: s\nversions: [{name: exp, sticky: cookie:uid, to: {v1: 50, v2: 50}}]")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				r := httptest.NewRequest("GET", "/", nil)
				r.Header.Set("Cookie", fmt.Sprintf("uid=%d-%d", g, i))
				if v := s.Decide(r, &wire.Routing{}).Version; !strings.HasPrefix(v, "v") {
					t.Errorf("got %q", v)
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkDecide(b *testing.B) {
	for _, bc := range []struct {
		name, doc string
	}{
		{"weighted", "service: s\nversions:\n- match: {header: {x-beta: \"1\"}}\n  to: {v2: 100}\n- to: {v1: 90, v2: 10}"},
		{"sticky-cookie", "service: s\nversions: [{name: exp, sticky: cookie:uid, to: {v1: 90, v2: 10}}]"},
		{"sticky-header", "service: s\nversions: [{name: exp, sticky: header:x-user, to: {v1: 90, v2: 10}}]"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := mustService(b, bc.doc)
			r := httptest.NewRequest("GET", "/api/x?a=1", nil)
			r.Header.Set("Cookie", "session=abc; uid=alice")
			r.Header.Set("X-User", "alice")
			rc := &wire.Routing{}
			b.ReportAllocs()
			for b.Loop() {
				rc.StickyKey = ""
				delete(rc.Experiments, "exp") // decide afresh, not by the assignment just made
				s.Decide(r, rc)
			}
		})
	}
}

func BenchmarkRoute(b *testing.B) {
	var docs []Document
	for i := range 50 {
		docs = append(docs, mustParse(b, fmt.Sprintf("service: s%d\nhttp: [{pathPrefix: /api/s%d/, methods: [GET]}]\nversions: [{to: {v1: 100}}]", i, i)))
	}
	tab, err := Compile(docs, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		tab.Route("/api/s25/items/1", "GET")
	}
}
