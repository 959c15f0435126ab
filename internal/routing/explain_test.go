package routing

import (
	"math"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// TestExplainAgreesWithDecide: for every kind of rule, the version Decide
// picks is one Explain names, always the one when Explain says the
// decision is fixed, and in the proportions Explain gives when it is drawn.
func TestExplainAgreesWithDecide(t *testing.T) {
	tab := compileYAML(t, `service: hello
versions:
  - match: {header: {x-beta: "1"}}
    to: {v3: 100}
  - name: exp
    match: {pathPrefix: /hello/exp}
    sticky: cookie:uid
    to: {v1: 70, v2: 30}
  - to: {v1: 80, v2: 20}
`)
	svc := tab.Service("hello")
	drawn := map[int]map[string]int{1: {}, 2: {}}
	for i := range 4000 {
		path := "/hello/exp"
		if i%2 == 1 {
			path = "/hello/other"
		}
		r := httptest.NewRequest("GET", path, nil)
		if i%7 == 0 {
			r.Header.Set("X-Beta", "1")
		}
		if i%3 != 0 {
			r.Header.Set("Cookie", "uid=u"+strconv.Itoa(i%500))
		}
		var rc *wire.Routing
		if i%11 == 0 {
			rc = &wire.Routing{Pins: map[string]string{"hello": "v2"}}
		}
		e := svc.Explain(r, rc)
		d := svc.Decide(r, &wire.Routing{Pins: rc.GetPins()})
		if len(e.Shares) == 1 {
			if d.Version != e.Shares[0].Version {
				t.Fatalf("request %d: Explain says %s, Decide picked %s", i, e.Shares[0].Version, d.Version)
			}
			continue
		}
		if drawn[e.Rule] == nil || e.StickyKey != "" {
			t.Fatalf("request %d: drawn by rule %d (key %q), want the catch-all or the experiment without a key", i, e.Rule, e.StickyKey)
		}
		if e.Shares[1].Version != "v1" || math.Abs(e.Shares[1].Share-[]float64{1: .7, 2: .8}[e.Rule]) > 1e-9 {
			t.Fatalf("request %d: rule %d shares %v", i, e.Rule, e.Shares)
		}
		drawn[e.Rule][d.Version]++
	}
	for rule, want := range map[int]float64{1: .3, 2: .2} {
		total := drawn[rule]["v1"] + drawn[rule]["v2"]
		if got := float64(drawn[rule]["v2"]) / float64(total); math.Abs(got-want) > 0.06 {
			t.Errorf("drawn by rule %d: v2 got %.2f of %d, Explain says %.2f", rule, got, total, want)
		}
	}
}

func TestReads(t *testing.T) {
	svc := compileYAML(t, `service: hello
versions:
  - match: {header: {x-beta: "1"}, cookie: {tier: gold}, query: {lang: en}}
    sticky: header:x-user
    to: {v2: 100}
  - sticky: cookie:uid
    to: {v1: 100}
`).Service("hello")
	h, c, q := svc.Reads()
	if len(h) != 2 || h[0] != "X-Beta" || h[1] != "X-User" || len(c) != 2 || c[0] != "tier" || c[1] != "uid" || len(q) != 1 || q[0] != "lang" {
		t.Errorf("Reads: %v %v %v", h, c, q)
	}
}

func compileYAML(t *testing.T, doc string) *Table {
	t.Helper()
	d, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := Compile([]Document{*d}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}
