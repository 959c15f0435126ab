// Package sample keeps a bounded sample of the recent requests an edge
// routed: the parts routing rules read (method, path, the headers, cookies
// and query parameters the rules in force look at, pins) and the version
// chosen; never bodies, never other headers. The control plane replays
// the sample against a proposed rule document to say, before it is
// applied, what share of traffic and which sticky keys it would move.
//
// Choosing costs a draw from the runtime's per-thread generator (no
// shared counter, so cores do not contend); one request in Every, drawn
// at random, is copied into a ring of Size slots, overwriting the oldest.
package sample

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// Defaults of Config.
const (
	DefaultEvery = 10
	DefaultSize  = 4096
)

// Config sizes a Sampler. The zero value selects the defaults.
type Config struct {
	// Every keeps one request in Every (0: DefaultEvery; 1: all).
	Every int
	// Size is how many requests are kept (0: DefaultSize).
	Size int
	// Headers and Cookies are names recorded besides those the rules in
	// force read, so that a dry run of rules that would read them (a new
	// experiment's sticky cookie) has them.
	Headers, Cookies []string
}

// Validate reports the first invalid field, named as on the command line.
func (c Config) Validate() error {
	switch {
	case c.Every < 0:
		return fmt.Errorf("sample: --sample-every: %d is negative", c.Every)
	case c.Size < 0:
		return fmt.Errorf("sample: --sample-size: %d is negative", c.Size)
	case c.Size > 1<<20:
		return fmt.Errorf("sample: --sample-size: %d is over the limit of %d", c.Size, 1<<20)
	}
	for i, h := range c.Headers {
		if h == "" || strings.ContainsAny(h, " :\t") {
			return fmt.Errorf("sample: --sample-header[%d]: %q is not a header name", i, h)
		}
	}
	for i, k := range c.Cookies {
		if k == "" || strings.ContainsAny(k, " =;\t") {
			return fmt.Errorf("sample: --sample-cookie[%d]: %q is not a cookie name", i, k)
		}
	}
	return nil
}

// Request is one sampled request: what the rules in force read of it.
type Request struct {
	At      time.Time `json:"at"`
	Service string    `json:"service"`
	Method  string    `json:"method"`
	Path    string    `json:"path"`
	// Header, Cookie and Query hold the values of the names the service's
	// rules read; Reads lists every name looked for ("header:X-Beta",
	// "cookie:uid", "query:q"), present or not, so that a name that was
	// looked for and absent differs from one not recorded.
	Header map[string][]string `json:"header,omitempty"`
	Cookie map[string]string   `json:"cookie,omitempty"`
	Query  map[string]string   `json:"query,omitempty"`
	Reads  []string            `json:"reads,omitempty"`
	Pins   map[string]string   `json:"pins,omitempty"`
	// StickyKey is the key the deciding rule hashed, Version the version
	// the edge sent the request to ("" without rules).
	StickyKey string `json:"stickyKey,omitempty"`
	Version   string `json:"version,omitempty"`
}

// HTTP rebuilds the request as the rules see it, to run rules on.
func (q *Request) HTTP() *http.Request {
	r := &http.Request{Method: q.Method, URL: &url.URL{Path: q.Path}, Header: make(http.Header, len(q.Header)+1)}
	for k, vs := range q.Header {
		r.Header[k] = vs
	}
	if len(q.Cookie) > 0 {
		var sb strings.Builder
		for k, v := range q.Cookie {
			if sb.Len() > 0 {
				sb.WriteString("; ")
			}
			sb.WriteString(k + "=" + v)
		}
		r.Header.Set("Cookie", sb.String())
	}
	if len(q.Query) > 0 {
		v := url.Values{}
		for k, x := range q.Query {
			v.Set(k, x)
		}
		r.URL.RawQuery = v.Encode()
	}
	return r
}

// Routing is the routing context the edge started the request with.
func (q *Request) Routing() *wire.Routing {
	if len(q.Pins) == 0 {
		return nil
	}
	return &wire.Routing{Pins: q.Pins}
}

// Sampler records requests. Its methods are safe for concurrent use.
type Sampler struct {
	headers, cookies []string // recorded whatever the rules (canonical header names)
	every            uint64
	next             atomic.Uint64 // slots written
	ring             []atomic.Pointer[Request]
	now              func() time.Time
}

// New validates cfg and returns a Sampler.
func New(cfg Config) (*Sampler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Every == 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultSize
	}
	s := &Sampler{every: uint64(cfg.Every), ring: make([]atomic.Pointer[Request], cfg.Size), now: time.Now, cookies: slices.Clone(cfg.Cookies)}
	for _, h := range cfg.Headers {
		s.headers = append(s.headers, textproto.CanonicalMIMEHeaderKey(h))
	}
	return s, nil
}

// Due reports whether to record the request at hand: true for one in
// Every, at random. A nil Sampler records nothing.
func (s *Sampler) Due() bool {
	return s != nil && (s.every == 1 || rand.Uint64N(s.every) == 0)
}

// Record keeps what the rules svc (nil: the service has none) read of r,
// sent to service with the routing context rc (after the decision) at
// version.
func (s *Sampler) Record(r *http.Request, service string, svc *routing.Service, rc *wire.Routing, version string) {
	q := &Request{At: s.now(), Service: service, Method: r.Method, Path: r.URL.Path,
		Pins: rc.GetPins(), StickyKey: rc.GetStickyKey(), Version: version}
	var headers, cookies, query []string
	if svc != nil {
		headers, cookies, query = svc.Reads()
	}
	if len(s.headers)+len(s.cookies) > 0 {
		headers = merge(headers, s.headers)
		cookies = merge(cookies, s.cookies)
	}
	for _, h := range headers {
		q.Reads = append(q.Reads, "header:"+h)
		if vs := r.Header[h]; len(vs) > 0 {
			if q.Header == nil {
				q.Header = map[string][]string{}
			}
			q.Header[h] = append([]string(nil), vs...)
		}
	}
	for _, c := range cookies {
		q.Reads = append(q.Reads, "cookie:"+c)
		if ck, err := r.Cookie(c); err == nil {
			if q.Cookie == nil {
				q.Cookie = map[string]string{}
			}
			q.Cookie[c] = ck.Value
		}
	}
	if len(query) > 0 {
		vals := r.URL.Query()
		for _, k := range query {
			q.Reads = append(q.Reads, "query:"+k)
			if vals.Has(k) {
				if q.Query == nil {
					q.Query = map[string]string{}
				}
				q.Query[k] = vals.Get(k)
			}
		}
	}
	i := s.next.Add(1) - 1
	s.ring[i%uint64(len(s.ring))].Store(q)
}

// merge returns the sorted union of a and b.
func merge(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// Snapshot returns the recorded requests of service ("": all), oldest
// first. The requests are shared: callers must not modify them.
func (s *Sampler) Snapshot(service string) []*Request {
	n := s.next.Load()
	size := uint64(len(s.ring))
	start := uint64(0)
	if n > size {
		start = n - size
	}
	out := make([]*Request, 0, min(n, size))
	for i := start; i < n; i++ {
		q := s.ring[i%size].Load()
		if q != nil && (service == "" || q.Service == service) {
			out = append(out, q)
		}
	}
	return out
}

// Stats are the sampler's counts.
type Stats struct {
	Every    int    `json:"every"`
	Size     int    `json:"size"`
	Recorded uint64 `json:"recorded"` // requests recorded (the ring keeps the last Size)
}

// Stats returns the sampler's counts.
func (s *Sampler) Stats() Stats {
	return Stats{Every: int(s.every), Size: len(s.ring), Recorded: s.next.Load()}
}

// Dump is what Handler serves.
type Dump struct {
	Stats    Stats      `json:"stats"`
	Requests []*Request `json:"requests"`
}

// Handler serves the sample as a Dump in JSON; ?service= keeps only that
// service's requests.
func (s *Sampler) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Dump{Stats: s.Stats(), Requests: s.Snapshot(r.URL.Query().Get("service"))})
	})
}
