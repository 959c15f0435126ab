package routing

import (
	"net/http"
	"slices"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// Share is one version and the share of requests like one examined that
// it receives.
type Share struct {
	Version string  `json:"version"`
	Share   float64 `json:"share"` // in (0, 1]
}

// Explanation is what Decide does with one request, without drawing.
type Explanation struct {
	// Rule is the index in the document's versions of the rule that
	// decides; -1 when a pin or an upstream assignment decides, or the
	// service has no rules.
	Rule       int    `json:"rule"`
	Experiment string `json:"experiment,omitempty"`
	// StickyKey is the key the rule hashed ("" when none: then Shares are
	// the rule's weights, a draw per request).
	StickyKey string `json:"stickyKey,omitempty"`
	// Shares are the versions the request goes to and with what chance:
	// one version with share 1 when the decision is fixed (a pin, a sticky
	// key, a rule with one target).
	Shares []Share `json:"shares"`
}

// Explain says what Decide would do with r and rc, with the chance of each
// version where Decide would draw. It reads rc and r as Decide does and
// modifies neither; rc may be nil. Shares is empty when the service has no rules.
func (s *Service) Explain(r *http.Request, rc *wire.Routing) Explanation {
	pins, assigned, upstreamKey := rc.GetPins(), rc.GetExperiments(), rc.GetStickyKey()
	if v, ok := pins[s.name]; ok && s.mentions(v) {
		return Explanation{Rule: -1, Shares: []Share{{v, 1}}}
	}
	for i := range s.rules {
		ru := &s.rules[i]
		if !ru.match.holds(r) {
			continue
		}
		e := Explanation{Rule: i, Experiment: ru.experiment}
		if ru.sticky && ru.experiment != "" {
			if v, ok := assigned[ru.experiment]; ok && ru.has(v) {
				e.Rule, e.Shares = -1, []Share{{v, 1}}
				return e
			}
		}
		if ru.sticky {
			e.StickyKey = ru.key(r)
			if e.StickyKey == "" {
				e.StickyKey = upstreamKey
			}
		}
		if e.StickyKey != "" {
			e.Shares = []Share{{ru.pick(bucket(ru.salt, e.StickyKey)), 1}}
			return e
		}
		lo := 0
		for _, t := range ru.targets {
			if t.hi > lo {
				e.Shares = append(e.Shares, Share{t.version, float64(t.hi-lo) / Buckets})
			}
			lo = t.hi
		}
		return e
	}
	return Explanation{Rule: -1}
}

// Reads lists what the service's rules look at in a request, beside its
// method and path: header names (canonical), cookie names and query
// parameter names, each sorted and without repeats.
func (s *Service) Reads() (headers, cookies, query []string) {
	for i := range s.rules {
		ru := &s.rules[i]
		if ru.header != "" {
			headers = append(headers, ru.header)
		}
		if ru.cookie != "" {
			cookies = append(cookies, ru.cookie)
		}
		for _, p := range ru.match.header {
			headers = append(headers, p.name)
		}
		for _, p := range ru.match.cookie {
			cookies = append(cookies, p.name)
		}
		for _, p := range ru.match.query {
			query = append(query, p.name)
		}
	}
	slices.Sort(headers)
	slices.Sort(cookies)
	slices.Sort(query)
	return slices.Compact(headers), slices.Compact(cookies), slices.Compact(query)
}
