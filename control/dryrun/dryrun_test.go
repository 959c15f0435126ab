package dryrun

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/sample"
)

func svc(t *testing.T, doc string) *routing.Service {
	t.Helper()
	d, err := routing.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := routing.Compile([]routing.Document{*d}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return tab.Service(d.Service)
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9 {
		t.Errorf("%s: %v, want %v", what, got, want)
	}
}

func TestCompare(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var reqs []*sample.Request
	for i := range 100 {
		q := &sample.Request{At: at.Add(time.Duration(i) * time.Second), Service: "hello", Method: "GET", Path: "/hello/",
			Reads: []string{"cookie:uid"}}
		if i < 50 {
			q.Cookie = map[string]string{"uid": "u" + string(rune('a'+i%25))}
		}
		reqs = append(reqs, q)
	}
	reqs = append(reqs, &sample.Request{Service: "other", Path: "/other/"})

	t.Run("drawn", func(t *testing.T) {
		cur := svc(t, "service: hello\nversions: [{to: {v1: 90, v2: 10}}]\n")
		next := svc(t, "service: hello\nversions: [{to: {v1: 50, v2: 50}}]\n")
		rep := Compare("hello", cur, next, reqs)
		if rep.Requests != 100 || !rep.Since.Equal(at) || !rep.Until.Equal(at.Add(99*time.Second)) {
			t.Fatalf("replayed %d from %v to %v", rep.Requests, rep.Since, rep.Until)
		}
		near(t, "before v2", rep.Before["v2"], .1)
		near(t, "after v2", rep.After["v2"], .5)
		near(t, "moved", rep.Moved, .4)
		if len(rep.Moves) != 1 || rep.Moves[0].From != "v1" || rep.Moves[0].To != "v2" || rep.Moves[0].Keys != 0 || rep.StickyKeys != 0 {
			t.Fatalf("moves %+v, %d keys", rep.Moves, rep.StickyKeys)
		}
	})
	t.Run("sticky", func(t *testing.T) {
		cur := svc(t, "service: hello\nversions: [{name: e, sticky: cookie:uid, to: {v1: 90, v2: 10}}]\n")
		next := svc(t, "service: hello\nversions: [{name: e, sticky: cookie:uid, to: {v1: 50, v2: 50}}]\n")
		rep := Compare("hello", cur, next, reqs)
		if rep.StickyKeys != 25 {
			t.Fatalf("%d sticky keys, want 25", rep.StickyKeys)
		}
		moved := 0
		for i := range 25 {
			k := "u" + string(rune('a'+i))
			b, a := routing.Bucket("e", k) < 1000, routing.Bucket("e", k) < 5000
			if a != b {
				moved++
			}
		}
		if rep.MovedKeys != moved || len(rep.Moves) != 1 || rep.Moves[0].Keys != moved {
			t.Fatalf("moved keys %d (%+v), want %d by the buckets", rep.MovedKeys, rep.Moves, moved)
		}
		// The 50 requests without a key are drawn: 40% of them move.
		near(t, "moved", rep.Moved, (float64(2*moved)+50*.4)/100)
	})
	t.Run("unsampled", func(t *testing.T) {
		next := svc(t, "service: hello\nversions: [{match: {header: {x-beta: \"1\"}}, to: {v2: 100}}, {to: {v1: 100}}]\n")
		rep := Compare("hello", nil, next, reqs)
		if len(rep.Unsampled) != 1 || rep.Unsampled[0] != "header:X-Beta" {
			t.Fatalf("unsampled %v", rep.Unsampled)
		}
		if !strings.Contains(rep.Text(), "not in the sample") {
			t.Errorf("text does not say what is not sampled:\n%s", rep.Text())
		}
	})
	t.Run("empty", func(t *testing.T) {
		rep := Compare("nothing", nil, nil, reqs)
		if rep.Requests != 0 || !strings.Contains(rep.Text(), "no sampled requests") {
			t.Fatalf("%+v\n%s", rep, rep.Text())
		}
	})
}
