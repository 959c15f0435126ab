package routing

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// Buckets is the number of buckets sticky keys hash into; a weight of w
// percent owns w*Buckets/100 of them.
const Buckets = 10000

// HeaderPin is the request header through which a tester pins versions:
// "x-griddle-pin: feed=v2, profiles=v3". The edge parses it with ParsePins
// into wire.Routing.Pins; whether to honour it from a given client is the
// edge's decision.
const HeaderPin = wire.HeaderPin

// Table is the compiled rules of all services at one revision. It is
// immutable once built and safe for concurrent use without locks; a new
// revision is a new Table, swapped in whole (e.g. with atomic.Pointer).
type Table struct {
	revision int64
	docs     []Document
	services map[string]*Service // read-only after Compile
	routes   []route             // longest prefix first
}

// route is one compiled HTTPRoute.
type route struct {
	prefix  string
	methods uint16 // method mask; 0: all methods
	service string
}

// Compile validates docs and compiles them into a Table at revision. It
// fails (with every problem joined) if a document is invalid (ErrInvalid,
// message prefixed by the service), if two documents name the same service
// (ErrDuplicateService), or if two services expose the same path prefix
// for a common method (ErrRouteConflict). Compile copies docs; the caller
// may reuse them.
func Compile(docs []Document, revision int64) (*Table, error) {
	t := &Table{
		revision: revision,
		docs:     make([]Document, len(docs)),
		services: make(map[string]*Service, len(docs)),
	}
	var errs []error
	for i := range docs {
		d := docs[i].clone()
		t.docs[i] = d
		if err := d.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("documents[%d] (service %q): %w", i, d.Service, err))
			continue
		}
		if _, dup := t.services[d.Service]; dup {
			errs = append(errs, fmt.Errorf("documents[%d]: %w %q", i, ErrDuplicateService, d.Service))
			continue
		}
		t.services[d.Service] = compileService(&t.docs[i])
		t.services[d.Service].policy = compilePolicy(d.Authorization)
		for _, h := range d.HTTP {
			r := route{prefix: h.PathPrefix, service: d.Service}
			for _, m := range h.Methods {
				r.methods |= methodBit(m)
			}
			for _, o := range t.routes {
				if o.prefix == r.prefix && o.service != r.service && (o.methods == 0 || r.methods == 0 || o.methods&r.methods != 0) {
					errs = append(errs, fmt.Errorf("documents[%d]: %w: pathPrefix %q is exposed by %q and %q",
						i, ErrRouteConflict, r.prefix, o.service, r.service))
				}
			}
			t.routes = append(t.routes, r)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortStableFunc(t.routes, func(a, b route) int { return len(b.prefix) - len(a.prefix) })
	return t, nil
}

// Revision returns the rule revision the table was compiled at.
func (t *Table) Revision() int64 { return t.revision }

// Documents returns the documents the table was compiled from, in the
// order given to Compile. The documents are shared: callers must not
// modify them.
func (t *Table) Documents() []Document { return slices.Clip(t.docs) }

// Service returns the compiled rules of the named service, nil if the table
// has no document for it.
func (t *Table) Service(name string) *Service { return t.services[name] }

// Route returns the service the edge sends a request for path and method
// to: the one whose http route has the longest pathPrefix that path starts
// with, among routes whose methods allow method. ok is false if none does.
func (t *Table) Route(path, method string) (service string, ok bool) {
	if method == "" {
		method = http.MethodGet // as in net/http
	}
	bit := methodBit(method)
	for i := range t.routes {
		r := &t.routes[i]
		if strings.HasPrefix(path, r.prefix) && (r.methods == 0 || r.methods&bit != 0) {
			return r.service, true
		}
	}
	return "", false
}

// Service is the compiled rules of one service. It is immutable and safe
// for concurrent use.
type Service struct {
	name     string
	timeout  time.Duration
	retry    *RetryPolicy
	streams  StreamPolicy
	versions []string // sorted
	rules    []rule
	policy   *Policy // nil: every caller allowed
}

// rule is one compiled VersionRule.
type rule struct {
	experiment string // Name when the rule is sticky, else ""
	salt       string // what keys are hashed with: experiment, else the service name
	sticky     bool
	header     string // canonical header the sticky key comes from, or
	cookie     string // the cookie it comes from
	match      match
	targets    []target // fixed layout order: version name descending
}

// target is a version and the buckets [lo, hi) it owns.
type target struct {
	version string
	hi      int // cumulative: the version owns [previous hi, hi)
}

// match is a compiled Match; zero holds for every request.
type match struct {
	pathPrefix string
	methods    uint16 // 0: all
	header     []pair // canonical names
	cookie     []pair
	query      []pair
}

type pair struct{ name, value string }

func compileService(d *Document) *Service {
	s := &Service{
		name:     d.Service,
		timeout:  time.Duration(d.Timeout),
		retry:    d.Retries,
		versions: d.VersionNames(),
	}
	if d.Streams != nil {
		s.streams = *d.Streams
	}
	for _, vr := range d.Versions {
		r := rule{salt: d.Service}
		if src, name, ok := parseSticky(vr.Sticky); ok {
			r.sticky = true
			if src == "header" {
				r.header = textproto.CanonicalMIMEHeaderKey(name)
			} else {
				r.cookie = name
			}
			if vr.Name != "" {
				r.experiment = vr.Name
				r.salt = vr.Name
			}
		}
		if m := vr.Match; m != nil {
			r.match.pathPrefix = m.PathPrefix
			for _, x := range m.Methods {
				r.match.methods |= methodBit(x)
			}
			for _, k := range sortedKeys(m.Header) {
				r.match.header = append(r.match.header, pair{textproto.CanonicalMIMEHeaderKey(k), m.Header[k]})
			}
			for _, k := range sortedKeys(m.Cookie) {
				r.match.cookie = append(r.match.cookie, pair{k, m.Cookie[k]})
			}
			for _, k := range sortedKeys(m.Query) {
				r.match.query = append(r.match.query, pair{k, m.Query[k]})
			}
		}
		names := sortedKeys(vr.To)
		slices.Reverse(names)
		hi := 0
		for _, v := range names {
			hi += vr.To[v] * (Buckets / 100)
			r.targets = append(r.targets, target{version: v, hi: hi})
		}
		s.rules = append(s.rules, r)
	}
	return s
}

// Name returns the service's name.
func (s *Service) Name() string { return s.name }

// Timeout returns the bound on a whole request, retries included; 0: none set.
func (s *Service) Timeout() time.Duration { return s.timeout }

// Retry returns the retry policy, nil if none is set. It is shared:
// callers must not modify it.
func (s *Service) Retry() *RetryPolicy { return s.retry }

// LongLived reports whether every request of the service is long-lived,
// and the idle timeout of its long-lived requests (0: the mesh's default).
func (s *Service) LongLived() (bool, time.Duration) {
	return s.streams.LongLived, time.Duration(s.streams.IdleTimeout)
}

// Upgrades reports whether protocol upgrades reach the handler.
func (s *Service) Upgrades() bool { return s.streams.Upgrades == nil || *s.streams.Upgrades }

// Decision is the outcome of Decide.
type Decision struct {
	Version    string // "" only if the service has no rules (then any version)
	Experiment string // the rule's Name when the rule is sticky and named, else ""
	Variant    string // the version chosen by that experiment ("" when Experiment is "")
	Pinned     bool   // decided by a pin
}

// Decide chooses the version that serves r. rc is the request's routing
// context; it may be nil (then nothing is read from or recorded in it).
// r may be nil (then only rules without match conditions hold).
//
// In order:
//  1. A pin: rc.Pins[service] naming a version the document mentions wins.
//  2. Otherwise the first rule whose match holds decides. All its given
//     conditions must hold: r.URL.Path starts with pathPrefix, the method is
//     listed, each header has the value (one of its values equal), each
//     cookie and query parameter has the value.
//  3. A sticky, named rule honours an assignment made upstream:
//     rc.Experiments[name] naming one of its versions.
//  4. A sticky rule takes its key from its header or cookie on r, else from
//     rc.StickyKey, and records the key in rc.StickyKey if that is empty.
//     The key, hashed with the experiment name (or the service name for an
//     unnamed rule), picks a bucket in [0, Buckets); see [Bucket].
//  5. Without a key (or without sticky) a random draw by weight decides.
//
// A sticky, named rule records its choice in rc.Experiments[name] so that
// later hops decide alike. rc's maps are allocated only when written. A
// version with weight 0 never receives traffic except through a pin or an
// upstream assignment.
func (s *Service) Decide(r *http.Request, rc *wire.Routing) Decision {
	if rc != nil {
		if v, ok := rc.Pins[s.name]; ok && s.mentions(v) {
			return Decision{Version: v, Pinned: true}
		}
	}
	for i := range s.rules {
		ru := &s.rules[i]
		if ru.match.holds(r) {
			return ru.decide(r, rc)
		}
	}
	return Decision{}
}

// mentions reports whether the service's document names version v.
func (s *Service) mentions(v string) bool {
	_, ok := slices.BinarySearch(s.versions, v)
	return ok
}

func (ru *rule) decide(r *http.Request, rc *wire.Routing) Decision {
	if !ru.sticky {
		return Decision{Version: ru.pick(rand.IntN(Buckets))}
	}
	if ru.experiment != "" && rc != nil {
		if v, ok := rc.Experiments[ru.experiment]; ok && ru.has(v) {
			return Decision{Version: v, Experiment: ru.experiment, Variant: v}
		}
	}
	key := ru.key(r)
	if key == "" && rc != nil {
		key = rc.StickyKey
	}
	var v string
	if key != "" {
		if rc != nil && rc.StickyKey == "" {
			rc.StickyKey = key
		}
		v = ru.pick(bucket(ru.salt, key))
	} else {
		v = ru.pick(rand.IntN(Buckets))
	}
	if ru.experiment == "" {
		return Decision{Version: v}
	}
	if rc != nil && rc.Experiments[ru.experiment] != v {
		if rc.Experiments == nil {
			rc.Experiments = make(map[string]string, 1)
		}
		rc.Experiments[ru.experiment] = v
	}
	return Decision{Version: v, Experiment: ru.experiment, Variant: v}
}

// pick returns the version owning bucket b. Versions are laid out over
// the buckets in descending name order, each owning a run of buckets as
// long as its weight (v2 at 5 and v1 at 95 own [0, 500) and [500, 10000)).
// The order does not depend on the weights, so when one version's weight
// rises while no other's does, the run of that version only grows: no key
// leaves it. A version of weight 0 owns no bucket.
func (ru *rule) pick(b int) string {
	for i := range ru.targets {
		if b < ru.targets[i].hi {
			return ru.targets[i].version
		}
	}
	return ru.targets[len(ru.targets)-1].version // unreachable: weights sum to 100
}

func (ru *rule) has(v string) bool {
	for i := range ru.targets {
		if ru.targets[i].version == v {
			return true
		}
	}
	return false
}

// key returns the rule's sticky key from r, "" if absent.
func (ru *rule) key(r *http.Request) string {
	if r == nil {
		return ""
	}
	if ru.header != "" {
		if vs := r.Header[ru.header]; len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	v, _ := cookieValue(r.Header, ru.cookie)
	return v
}

// Bucket returns the bucket in [0, Buckets) that key falls in for the
// experiment (or, for an unnamed sticky rule, the service) salt: FNV-1a 64
// of salt, a zero byte and key, mixed with the MurmurHash3 finalizer,
// modulo Buckets. It is part of the routing contract: changing it moves
// users between versions.
func Bucket(salt, key string) int { return bucket(salt, key) }

func bucket(salt, key string) int {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(salt); i++ {
		h = (h ^ uint64(salt[i])) * prime
	}
	h *= prime // the zero byte: h ^ 0 == h
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return int(h % Buckets)
}

// holds reports whether every condition of m holds for r.
func (m *match) holds(r *http.Request) bool {
	if m.pathPrefix == "" && m.methods == 0 && m.header == nil && m.cookie == nil && m.query == nil {
		return true
	}
	if r == nil {
		return false
	}
	if m.pathPrefix != "" && (r.URL == nil || !strings.HasPrefix(r.URL.Path, m.pathPrefix)) {
		return false
	}
	if m.methods != 0 && m.methods&methodBit(methodOf(r)) == 0 {
		return false
	}
	for _, p := range m.header {
		if !slices.Contains(r.Header[p.name], p.value) {
			return false
		}
	}
	for _, p := range m.cookie {
		if v, ok := cookieValue(r.Header, p.name); !ok || v != p.value {
			return false
		}
	}
	for _, p := range m.query {
		if r.URL == nil {
			return false
		}
		if v, ok := queryValue(r.URL.RawQuery, p.name); !ok || v != p.value {
			return false
		}
	}
	return true
}

// methodOf returns r's method; "" means GET for an http.Request.
func methodOf(r *http.Request) string {
	if r.Method == "" {
		return http.MethodGet
	}
	return r.Method
}

// cookieValue returns the value of the first cookie called name in h's
// Cookie headers, without allocating (http.Request.Cookie parses them all).
func cookieValue(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

// queryValue returns the first value of parameter name in the raw query,
// unescaping only parts that need it.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(part, "=")
		if strings.ContainsAny(k, "%+") {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				continue
			}
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				continue
			}
			v = u
		}
		return v, true
	}
	return "", false
}

// ParsePins reads the tester header ("feed=v2, profiles=v3") into a map
// from service to version for wire.Routing.Pins. Malformed entries are
// skipped; the first pin of a service wins; nil if there is none.
func ParsePins(header string) map[string]string {
	var pins map[string]string
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ",")
		svc, v, ok := strings.Cut(part, "=")
		svc, v = strings.TrimSpace(svc), strings.TrimSpace(v)
		if !ok || nameProblem(svc) != "" || nameProblem(v) != "" {
			continue
		}
		if pins == nil {
			pins = make(map[string]string)
		}
		if _, seen := pins[svc]; !seen {
			pins[svc] = v
		}
	}
	return pins
}
