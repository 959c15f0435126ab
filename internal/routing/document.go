package routing

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Document is the routing rules of one service, as operators write them
// (YAML or JSON). Field names here are the names users see in errors.
//
//	service: profiles
//	http:
//	  - pathPrefix: /api/profiles/
//	    methods: [GET, PUT]
//	timeout: 250ms
//	retries: {attempts: 3, perTry: 80ms, on: [unavailable, deadline], budget: 10%}
//	versions:
//	  - match: {header: {x-beta: "1"}}
//	    to: {v2: 100}
//	  - name: ranking-test
//	    sticky: cookie:uid
//	    to: {v1: 50, v2: 50}
//	  - to: {v1: 95, v2: 5}
type Document struct {
	Service string `json:"service"`
	// HTTP is what the edge exposes; empty for internal services.
	HTTP []HTTPRoute `json:"http,omitempty"`
	// Timeout bounds the whole request, retries included (0: the edge's default).
	Timeout Duration `json:"timeout,omitempty"`
	// Retries is the retry policy (nil: only requests that never reached a handler are retried).
	Retries *RetryPolicy `json:"retries,omitempty"`
	// Streams says how long-lived answers and upgrades are carried (nil:
	// the defaults of StreamPolicy).
	Streams *StreamPolicy `json:"streams,omitempty"`
	// Versions are tried in order; the first whose match holds decides.
	// A document needs at least one rule, and the last rule must match everything.
	Versions []VersionRule `json:"versions"`
	// Authorization says which services may call this one (nil: all; see
	// Authorization).
	Authorization *Authorization `json:"authorization,omitempty"`
}

// HTTPRoute exposes a service at the edge.
type HTTPRoute struct {
	PathPrefix string   `json:"pathPrefix"`
	Methods    []string `json:"methods,omitempty"` // empty: all methods
}

// RetryPolicy says which failed attempts are tried again.
type RetryPolicy struct {
	// Attempts is the most tries of one request, the first included (1-10).
	Attempts int `json:"attempts"`
	// PerTry bounds each try (0: only the request's timeout).
	PerTry Duration `json:"perTry,omitempty"`
	// On lists what is retried besides requests that never reached a
	// handler (those always are): "deadline" (a try ran past PerTry),
	// "5xx" (the handler answered 5xx), "unavailable" (the instance broke
	// with the request inside).
	On []string `json:"on,omitempty"`
	// NonIdempotent allows retrying methods other than GET, HEAD, OPTIONS,
	// TRACE, PUT and DELETE for the reasons in On.
	NonIdempotent bool `json:"nonIdempotent,omitempty"`
	// GRPCMethods are the gRPC methods ("/package.Service/Method") that
	// may be retried for the reasons in On, as idempotent requests are: a
	// gRPC call is a POST, retried otherwise only when it never reached a
	// handler. As gRPC's own retries, only before the answer began (a
	// trailers-only UNAVAILABLE counts as "unavailable"), and only for a
	// call whose request was whole.
	GRPCMethods []string `json:"grpcMethods,omitempty"`
	// Budget caps retries at this share of live requests, e.g. "10%" (default 10%).
	Budget string `json:"budget,omitempty"`
	// MinPerSecond is the floor of retries allowed per second whatever the budget (default 10).
	MinPerSecond int `json:"minPerSecond,omitempty"`
}

// StreamPolicy says how a service's long-lived requests are carried.
// Answers that are event streams (text/event-stream) and connections
// taken over by an upgrade are long-lived whatever it says.
type StreamPolicy struct {
	// LongLived frees every request of the service from Timeout: it lasts
	// while something moves, ended after IdleTimeout without a byte either
	// way (long polls, streams of unknown length).
	LongLived bool `json:"longLived,omitempty"`
	// IdleTimeout ends a long-lived request after this long with nothing
	// moving (0: one minute).
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
	// Upgrades allows protocol upgrades (WebSocket) through to the
	// handler (nil: allowed); false answers them 501.
	Upgrades *bool `json:"upgrades,omitempty"`
}

// VersionRule sends matching requests to versions by weight.
type VersionRule struct {
	// Name names the rule; with Sticky it is the experiment's name, reported in metrics.
	Name string `json:"name,omitempty"`
	// Match selects requests (nil: all).
	Match *Match `json:"match,omitempty"`
	// Sticky is where the key that keeps a user on one version comes from:
	// "header:<name>" or "cookie:<name>". Empty: each request is drawn anew.
	Sticky string `json:"sticky,omitempty"`
	// To maps versions to weights that sum to 100.
	To map[string]int `json:"to"`
}

// Match holds when every given condition holds.
type Match struct {
	PathPrefix string            `json:"pathPrefix,omitempty"`
	Methods    []string          `json:"methods,omitempty"`
	Header     map[string]string `json:"header,omitempty"` // exact values; header names are case-insensitive
	Cookie     map[string]string `json:"cookie,omitempty"`
	Query      map[string]string `json:"query,omitempty"`
}

// Duration is a time.Duration written as in Go ("250ms", "1m").
type Duration time.Duration

// MarshalJSON writes d as a string such as "250ms".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a string such as "250ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"250ms\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as \"250ms\", got %q", s)
	}
	*d = Duration(v)
	return nil
}

// clone returns a deep copy of d.
func (d *Document) clone() Document {
	c := *d
	c.HTTP = slices.Clone(d.HTTP)
	for i := range c.HTTP {
		c.HTTP[i].Methods = slices.Clone(c.HTTP[i].Methods)
	}
	if d.Retries != nil {
		r := *d.Retries
		r.On = slices.Clone(r.On)
		r.GRPCMethods = slices.Clone(r.GRPCMethods)
		c.Retries = &r
	}
	c.Authorization = d.Authorization.clone()
	if d.Streams != nil {
		st := *d.Streams
		if st.Upgrades != nil {
			u := *st.Upgrades
			st.Upgrades = &u
		}
		c.Streams = &st
	}
	c.Versions = slices.Clone(d.Versions)
	for i := range c.Versions {
		v := &c.Versions[i]
		v.To = maps.Clone(v.To)
		if v.Match != nil {
			m := *v.Match
			m.Methods = slices.Clone(m.Methods)
			m.Header = maps.Clone(m.Header)
			m.Cookie = maps.Clone(m.Cookie)
			m.Query = maps.Clone(m.Query)
			v.Match = &m
		}
	}
	return c
}
