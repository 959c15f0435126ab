// Package dryrun replays a sample of recent requests (package
// internal/sample) against the rules in force and a proposed document, and
// reports what share of the traffic and how many distinct sticky keys the
// proposal would move, and between which versions. It is pure: the
// control plane gathers the sample from the edges and calls Compare.
package dryrun

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/sample"
)

// Report is the outcome of a dry run.
type Report struct {
	Service string `json:"service"`
	// Requests is how many sampled requests of the service were replayed,
	// from Since to Until.
	Requests int       `json:"requests"`
	Since    time.Time `json:"since,omitzero"`
	Until    time.Time `json:"until,omitzero"`
	// Before and After are the share of those requests each version gets
	// under the rules in force and under the proposal (draws by weight
	// count as their expected shares).
	Before map[string]float64 `json:"before"`
	After  map[string]float64 `json:"after"`
	// Moved is the share of the requests that would go to another version;
	// Moves says from which to which.
	Moved float64 `json:"moved"`
	Moves []Move  `json:"moves,omitempty"`
	// StickyKeys is how many distinct sticky keys the sample holds (under
	// either rule set); MovedKeys how many of them would change version.
	StickyKeys int `json:"stickyKeys"`
	MovedKeys  int `json:"movedKeys"`
	// Unsampled names what the proposal reads that the sample did not
	// record ("header:X-Beta"): requests are replayed as if it were absent.
	Unsampled []string `json:"unsampled,omitempty"`
}

// Move is the traffic and the sticky keys that would go from one version to another.
type Move struct {
	From  string  `json:"from"`
	To    string  `json:"to"`
	Share float64 `json:"share"` // of the sampled requests
	Keys  int     `json:"keys"`  // distinct sticky keys
}

// Compare replays reqs (the sampled requests of one service) against cur
// (the rules in force; nil: none) and next (the proposal). A request whose
// version is drawn by weight under a rule set counts with the expected
// share of each version; a request moves by the least it must (a version
// that loses share gives it to those that gain, in proportion).
func Compare(service string, cur, next *routing.Service, reqs []*sample.Request) Report {
	rep := Report{Service: service, Before: map[string]float64{}, After: map[string]float64{}}
	moves := map[[2]string]*Move{}
	move := func(from, to string) *Move {
		m := moves[[2]string{from, to}]
		if m == nil {
			m = &Move{From: from, To: to}
			moves[[2]string{from, to}] = m
		}
		return m
	}
	type keyFate struct{ before, after string }
	keys := map[string]keyFate{}
	recorded := map[string]bool{}
	for _, q := range reqs {
		if q.Service != service {
			continue
		}
		rep.Requests++
		if rep.Since.IsZero() || q.At.Before(rep.Since) {
			rep.Since = q.At
		}
		if q.At.After(rep.Until) {
			rep.Until = q.At
		}
		for _, n := range q.Reads {
			recorded[n] = true
		}
		r, rc := q.HTTP(), q.Routing()
		var b, a routing.Explanation
		if cur != nil {
			b = cur.Explain(r, rc)
		}
		if len(b.Shares) == 0 { // no rules: the edge sent it where it did
			b.Shares = []routing.Share{{Version: q.Version, Share: 1}}
		}
		if next != nil {
			a = next.Explain(r, rc)
		}
		if len(a.Shares) == 0 {
			a.Shares = b.Shares
		}
		before, after := shares(b.Shares), shares(a.Shares)
		for v, x := range before {
			rep.Before[v] += x
		}
		for v, x := range after {
			rep.After[v] += x
		}
		var lose, gain []routing.Share
		var total float64
		for v, x := range before {
			if d := x - after[v]; d > 1e-12 {
				lose = append(lose, routing.Share{Version: v, Share: d})
				total += d
			}
		}
		for v, x := range after {
			if d := x - before[v]; d > 1e-12 {
				gain = append(gain, routing.Share{Version: v, Share: d})
			}
		}
		for _, l := range lose {
			for _, g := range gain {
				move(l.Version, g.Version).Share += l.Share * g.Share / total
			}
		}
		rep.Moved += total
		if key := cmp.Or(a.StickyKey, b.StickyKey); key != "" {
			f := keys[key]
			if len(b.Shares) == 1 && f.before == "" {
				f.before = b.Shares[0].Version
			}
			if len(a.Shares) == 1 && f.after == "" {
				f.after = a.Shares[0].Version
			}
			keys[key] = f
		}
	}
	rep.StickyKeys = len(keys)
	for _, f := range keys {
		if f.before != "" && f.after != "" && f.before != f.after {
			rep.MovedKeys++
			move(f.before, f.after).Keys++
		}
	}
	if n := float64(rep.Requests); n > 0 {
		for v := range rep.Before {
			rep.Before[v] /= n
		}
		for v := range rep.After {
			rep.After[v] /= n
		}
		rep.Moved /= n
		for _, m := range moves {
			m.Share /= n
		}
	}
	for _, m := range moves {
		rep.Moves = append(rep.Moves, *m)
	}
	slices.SortFunc(rep.Moves, func(x, y Move) int { return cmp.Or(cmp.Compare(x.From, y.From), cmp.Compare(x.To, y.To)) })
	if next != nil && rep.Requests > 0 {
		h, c, qs := next.Reads()
		for _, n := range names(h, c, qs) {
			if !recorded[n] {
				rep.Unsampled = append(rep.Unsampled, n)
			}
		}
	}
	return rep
}

// shares sums a decision's shares by version.
func shares(s []routing.Share) map[string]float64 {
	m := make(map[string]float64, len(s))
	for _, x := range s {
		m[x.Version] += x.Share
	}
	return m
}

func names(headers, cookies, query []string) []string {
	var out []string
	for _, h := range headers {
		out = append(out, "header:"+h)
	}
	for _, c := range cookies {
		out = append(out, "cookie:"+c)
	}
	for _, q := range query {
		out = append(out, "query:"+q)
	}
	return out
}

// Text writes the report for a terminal.
func (r Report) Text() string {
	var b strings.Builder
	if r.Requests == 0 {
		fmt.Fprintf(&b, "dry run of %s: no sampled requests of %s at the edges yet; nothing to compare\n", r.Service, r.Service)
		return b.String()
	}
	fmt.Fprintf(&b, "dry run of %s against %d sampled requests (%s to %s), %d distinct sticky keys:\n",
		r.Service, r.Requests, r.Since.UTC().Format(time.TimeOnly), r.Until.UTC().Format(time.TimeOnly), r.StickyKeys)
	versions := slices.Sorted(func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, m := range []map[string]float64{r.Before, r.After} {
			for v := range m {
				if !seen[v] {
					seen[v] = true
					if !yield(v) {
						return
					}
				}
			}
		}
	})
	fmt.Fprintf(&b, "  %-12s %8s %8s\n", "version", "now", "proposed")
	for _, v := range versions {
		name := v
		if name == "" {
			name = "(any)"
		}
		fmt.Fprintf(&b, "  %-12s %7.1f%% %7.1f%%\n", name, 100*r.Before[v], 100*r.After[v])
	}
	fmt.Fprintf(&b, "would move %.1f%% of requests and %d of %d sticky keys", 100*r.Moved, r.MovedKeys, r.StickyKeys)
	if len(r.Moves) == 0 {
		b.WriteString("\n")
	} else {
		b.WriteString(":\n")
	}
	for _, m := range r.Moves {
		fmt.Fprintf(&b, "  %s → %s: %.1f%% of requests, %d sticky keys\n", m.From, m.To, 100*m.Share, m.Keys)
	}
	if len(r.Unsampled) > 0 {
		fmt.Fprintf(&b, "not in the sample (replayed as absent): %s\n", strings.Join(r.Unsampled, ", "))
	}
	return b.String()
}
