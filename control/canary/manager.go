package canary

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// commitTries bounds the retries of a write whose rules or record changed
// underneath it.
const commitTries = 5

// Prefix is where canary records live: <prefix>canaries/.
func Prefix(prefix string) string { return prefix + "canaries/" }

// Key is the key of one service's canary record: <prefix>canaries/<service>.
func Key(prefix, service string) string { return Prefix(prefix) + service }

// Manager reads and writes canary records. Any control plane replica may
// use one; it is safe for concurrent use.
type Manager struct {
	cli   *clientv3.Client
	rules *rulestore.Store
	now   func() time.Time
}

// NewManager returns a Manager of the canaries under rules.Prefix(). It
// does no I/O. A nil now means time.Now.
func NewManager(cli *clientv3.Client, rules *rulestore.Store, now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	return &Manager{cli: cli, rules: rules, now: now}
}

func (m *Manager) key(service string) string { return Key(m.rules.Prefix(), service) }

// decode reads a record, filling in the revisions of a record written with
// its rules (see Canary.RevisionPending).
func decode(value []byte, modRevision int64) (Canary, error) {
	var c Canary
	if err := json.Unmarshal(value, &c); err != nil {
		return Canary{}, fmt.Errorf("canary: decode record: %w", err)
	}
	c.Revision = modRevision
	if c.RevisionPending {
		c.RevisionPending = false
		c.RuleRevision = modRevision
		if n := len(c.History); n > 0 {
			c.History[n-1].RuleRevision = modRevision
		}
	}
	return c, nil
}

// Get returns the canary record of service, or an error wrapping ErrNotFound.
func (m *Manager) Get(ctx context.Context, service string) (Canary, error) {
	resp, err := m.cli.Get(ctx, m.key(service))
	if err != nil {
		return Canary{}, fmt.Errorf("canary: get %s: %w", service, err)
	}
	if len(resp.Kvs) == 0 {
		return Canary{}, fmt.Errorf("%w: no canary for %s", ErrNotFound, service)
	}
	return decode(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// List returns every canary record, sorted by service.
func (m *Manager) List(ctx context.Context) ([]Canary, error) {
	resp, err := m.cli.Get(ctx, Prefix(m.rules.Prefix()), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("canary: list: %w", err)
	}
	out := make([]Canary, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		c, err := decode(kv.Value, kv.ModRevision)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Canary) int { return cmp.Compare(a.Service, b.Service) })
	return out, nil
}

// Start validates spec and stores a new running canary of spec.Service. It
// does not change the rules: the leader's Controller applies the first step
// at its next pass. An empty spec.From is resolved from the service's
// current rules. Errors wrap ErrInvalid, ErrRunning, or rulestore.ErrNotFound
// when the service has no rules.
func (m *Manager) Start(ctx context.Context, spec Spec, author string) (Canary, error) {
	if err := spec.Validate(); err != nil {
		return Canary{}, err
	}
	cur, err := m.rules.Get(ctx, spec.Service)
	if err != nil {
		return Canary{}, err
	}
	if spec.From == "" {
		spec.From = mainVersion(cur.Document)
		if spec.From == "" || spec.From == spec.To {
			return Canary{}, fmt.Errorf("%w: from: the catch-all rule of %s sends nothing to a version other than %q; give --from", ErrInvalid, spec.Service, spec.To)
		}
	}
	if spec.From == spec.To {
		return Canary{}, fmt.Errorf("%w: to: %q is also the version traffic moves from", ErrInvalid, spec.To)
	}
	live, err := m.instances(ctx, spec.Service, spec.To)
	if err != nil {
		return Canary{}, fmt.Errorf("canary: start %s: %w", spec.Service, err)
	}
	if len(live) == 0 {
		return Canary{}, fmt.Errorf("%w: to: no live instance of %s %s is registered; start one before its canary", ErrInvalid, spec.Service, spec.To)
	}
	origin, moves, kept := plan(cur.Document, spec.From)
	if len(moves) == 0 {
		return Canary{}, fmt.Errorf("%w: from: no rule of %s sends traffic to %q", ErrInvalid, spec.Service, spec.From)
	}
	key := m.key(spec.Service)
	prev, err := m.Get(ctx, spec.Service)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return Canary{}, err
	case prev.State == Running:
		return Canary{}, fmt.Errorf("%w: %s is moving to %s (step %d of %d)", ErrRunning, spec.Service, prev.To, prev.Step+1, len(prev.Steps))
	}
	now := m.now().UTC()
	reason := fmt.Sprintf("%s → %s in steps %v every %v; moves %s", spec.From, spec.To, spec.Steps, time.Duration(spec.Interval), describe(cur.Document, moves))
	if len(kept) > 0 {
		reason += fmt.Sprintf("; leaves %s as they are (pins to %s: change them by hand after the canary)", describe(cur.Document, kept), spec.From)
	}
	c := Canary{
		Spec: spec, Step: -1, State: Running, NextAt: now, Author: author, Created: now, Updated: now,
		Origin: origin, Moves: moves, Kept: kept,
		History: []Event{{At: now, Action: "start", Reason: reason}},
	}
	v, err := json.Marshal(c)
	if err != nil {
		return Canary{}, fmt.Errorf("canary: encode: %w", err)
	}
	resp, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", prev.Revision)).
		Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return Canary{}, fmt.Errorf("canary: start %s: %w", spec.Service, err)
	}
	if !resp.Succeeded {
		return Canary{}, fmt.Errorf("%w: %s was started by someone else just now", ErrRunning, spec.Service)
	}
	c.Revision = resp.Header.Revision
	return c, nil
}

// Promote sends all of the service's traffic to the new version now and
// ends the canary as promoted.
func (m *Manager) Promote(ctx context.Context, service, author string) (Canary, error) {
	return m.finish(ctx, service, author, func(c *Canary) {
		c.State, c.Step, c.Reason = Promoted, len(c.Steps)-1, "promoted by "+author
		c.History = append(c.History, Event{At: c.Updated, Action: "promote", Weight: 100, Reason: c.Reason})
	})
}

// Abort sends all of the service's traffic back to the old version and ends
// the canary as aborted.
func (m *Manager) Abort(ctx context.Context, service, author string) (Canary, error) {
	return m.finish(ctx, service, author, func(c *Canary) {
		c.State, c.Reason = Aborted, "aborted by "+author
		c.History = append(c.History, Event{At: c.Updated, Action: "abort", Weight: 0, Reason: c.Reason})
	})
}

func (m *Manager) finish(ctx context.Context, service, author string, change func(*Canary)) (Canary, error) {
	for range commitTries {
		c, err := m.Get(ctx, service)
		if err != nil {
			return Canary{}, err
		}
		if c.State != Running {
			return c, fmt.Errorf("%w: the canary of %s is %s", ErrNotRunning, service, c.State)
		}
		c.Updated = m.now().UTC()
		change(&c)
		out, err := m.commit(ctx, c, true, author)
		if errors.Is(err, rulestore.ErrConflict) || errors.Is(err, rulestore.ErrGuard) {
			continue
		}
		return out, err
	}
	return Canary{}, fmt.Errorf("%w: %s", ErrBusy, service)
}

// commit writes c (whose Revision is the record's revision it was read at)
// and, if withRules, the weights c stands for, in one transaction guarded
// by the record's revision and guards. A stale record returns an error
// wrapping rulestore.ErrGuard; rules that changed since they were read,
// rulestore.ErrConflict.
func (m *Manager) commit(ctx context.Context, c Canary, withRules bool, author string, guards ...clientv3.Cmp) (Canary, error) {
	key := m.key(c.Service)
	guards = append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", c.Revision)}, guards...)
	if !withRules {
		v, err := json.Marshal(c)
		if err != nil {
			return Canary{}, fmt.Errorf("canary: encode: %w", err)
		}
		resp, err := m.cli.Txn(ctx).If(guards...).Then(clientv3.OpPut(key, string(v))).Commit()
		if err != nil {
			return Canary{}, fmt.Errorf("canary: write %s: %w", c.Service, err)
		}
		if !resp.Succeeded {
			return Canary{}, fmt.Errorf("%w: canary record of %s changed", rulestore.ErrGuard, c.Service)
		}
		c.Revision = resp.Header.Revision
		return c, nil
	}
	cur, err := m.rules.Get(ctx, c.Service)
	if err != nil {
		return Canary{}, err
	}
	doc, err := withWeights(cur.Document, c)
	if err != nil {
		return Canary{}, err
	}
	c.RevisionPending = true
	v, err := json.Marshal(c)
	if err != nil {
		return Canary{}, fmt.Errorf("canary: encode: %w", err)
	}
	opts := []rulestore.ApplyOption{
		rulestore.WithComment(fmt.Sprintf("canary %s → %s: %d%%", c.From, c.To, c.Weight())),
		rulestore.WithGuard(guards...),
		rulestore.WithOps(clientv3.OpPut(key, string(v))),
	}
	// Keep the operator's text (comments, order) with only the weights changed.
	if src, ok := rulestore.Rewrite(cur.Source, doc); ok {
		opts = append(opts, rulestore.WithSource([]byte(src)))
	}
	rev, err := m.rules.Apply(ctx, doc, cur.Revision, author, opts...)
	if err != nil {
		return Canary{}, err
	}
	return decode(v, rev)
}

// mainVersion is the version with the largest weight in doc's last rule
// (ties: the first by name); "" if there is none.
func mainVersion(doc *routing.Document) string {
	if doc == nil || len(doc.Versions) == 0 {
		return ""
	}
	to := doc.Versions[len(doc.Versions)-1].To
	best := ""
	for _, v := range slices.Sorted(maps.Keys(to)) {
		if best == "" || to[v] > to[best] {
			best = v
		}
	}
	return best
}

// withWeights returns a copy of doc whose steered rules have the targets
// of c's state. doc is not modified.
func withWeights(doc *routing.Document, c Canary) (*routing.Document, error) {
	if doc == nil || len(doc.Versions) == 0 {
		return nil, fmt.Errorf("%w: the rules of %s have no version rule to steer", ErrInvalid, c.Service)
	}
	d := *doc
	d.Versions = slices.Clone(doc.Versions)
	if len(c.Origin) == 0 { // a record from before Origin: the last rule only
		d.Versions[len(d.Versions)-1].To = c.Weights()
		return &d, nil
	}
	if len(c.Origin) != len(d.Versions) {
		return nil, fmt.Errorf("%w: the rules of %s have %d version rules, %d when the canary started", ErrInvalid, c.Service, len(d.Versions), len(c.Origin))
	}
	for _, i := range c.Moves {
		d.Versions[i].To = Move(c.Origin[i], c.From, c.To, c.Weight())
	}
	return &d, nil
}

// plan returns the targets of every rule of doc, the rules a canary from
// from steers and those it leaves: pins, which match on a header, cookie or
// query and send everything to from.
func plan(doc *routing.Document, from string) (origin []map[string]int, moves, kept []int) {
	for i, r := range doc.Versions {
		origin = append(origin, maps.Clone(r.To))
		if r.To[from] == 0 {
			continue
		}
		pin := r.Match != nil && (len(r.Match.Header) > 0 || len(r.Match.Cookie) > 0 || len(r.Match.Query) > 0) && r.To[from] == 100
		if pin {
			kept = append(kept, i)
		} else {
			moves = append(moves, i)
		}
	}
	return origin, moves, kept
}

// describe names rules for people: versions[1] (tone-test), versions[2] (catch-all).
func describe(doc *routing.Document, idx []int) string {
	var parts []string
	for _, i := range idx {
		r := doc.Versions[i]
		name := fmt.Sprintf("versions[%d]", i)
		switch {
		case r.Name != "":
			name += " (" + r.Name + ")"
		case r.Match == nil:
			name += " (catch-all)"
		}
		parts = append(parts, name)
	}
	return strings.Join(parts, ", ")
}
