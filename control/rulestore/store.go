package rulestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/internal/routing"
)

// Errors returned by Store; match them with errors.Is.
var (
	// ErrConflict means the expected revision is stale: the rules changed
	// (or were created) since the caller read them. Nothing was written.
	// The error is a *ConflictError, which carries the current revision.
	ErrConflict = errors.New("rulestore: revision conflict")
	// ErrNotFound means the service has no rules (or the asked revision is
	// not in its history).
	ErrNotFound = errors.New("rulestore: not found")
	// ErrGuard means a caller-supplied guard (WithGuard) did not hold while
	// the revision did. Nothing was written.
	ErrGuard = errors.New("rulestore: guard failed")
)

// ConflictError is the error of a stale write. It matches ErrConflict.
type ConflictError struct {
	Service  string
	Expected int64 // the revision the caller based its write on (0: none)
	Current  int64 // the revision of the rules now (0: there are none)
}

func (e *ConflictError) Error() string {
	if e.Current == 0 {
		return fmt.Sprintf("rulestore: rules of %s: revision %d is stale: the rules no longer exist", e.Service, e.Expected)
	}
	if e.Expected == 0 {
		return fmt.Sprintf("rulestore: rules of %s already exist at revision %d", e.Service, e.Current)
	}
	return fmt.Sprintf("rulestore: rules of %s: revision %d is stale: the rules are at %d", e.Service, e.Expected, e.Current)
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Meta says who applied a revision, when and why, and how it was written.
type Meta struct {
	AppliedAt time.Time `json:"appliedAt"`
	Author    string    `json:"author,omitempty"`
	Comment   string    `json:"comment,omitempty"`
	// Source is the document as its author wrote it (key order, comments,
	// YAML or JSON); "" when it was not given, and then Canonical(Document)
	// stands for it. Text returns whichever applies.
	Source string `json:"source,omitempty"`
}

// Entry is one revision of a service's rules.
type Entry struct {
	Revision int64             `json:"revision"`
	Document *routing.Document `json:"document"`
	Meta
}

// Text is the entry's document as authored (Source), or its canonical YAML
// when no source was kept.
func (e Entry) Text() (string, error) {
	if e.Source != "" {
		return e.Source, nil
	}
	b, err := Canonical(e.Document)
	return string(b), err
}

// Store reads and writes rules under a prefix. It is safe for concurrent
// use, also by several processes: every write is one etcd transaction.
type Store struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
}

// New returns a Store of the rules under prefix. It does no I/O and does not
// close cli. A nil now means time.Now; it stamps Meta.AppliedAt.
func New(cli *clientv3.Client, prefix string, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{cli: cli, prefix: prefix, now: now}
}

// Prefix is the key prefix the Store works under.
func (s *Store) Prefix() string { return s.prefix }

func checkService(service string) error {
	if !ValidService(service) {
		return fmt.Errorf("%w: service: %q is not a valid service name (1-63 of a-z 0-9 - ., not starting with - or .)", routing.ErrInvalid, service)
	}
	return nil
}

// Get returns the current rules of service, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, service string) (Entry, error) {
	if err := checkService(service); err != nil {
		return Entry{}, err
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(RuleKey(s.prefix, service)),
		clientv3.OpGet(MetaKey(s.prefix, service)),
	).Commit()
	if err != nil {
		return Entry{}, fmt.Errorf("rulestore: get %s: %w", service, err)
	}
	rules := resp.Responses[0].GetResponseRange().Kvs
	if len(rules) == 0 {
		return Entry{}, fmt.Errorf("%w: no rules for %s", ErrNotFound, service)
	}
	e := Entry{Revision: rules[0].ModRevision}
	if err := json.Unmarshal(rules[0].Value, &e.Document); err != nil {
		return Entry{}, fmt.Errorf("rulestore: decode %s: %w", rules[0].Key, err)
	}
	if m := resp.Responses[1].GetResponseRange().Kvs; len(m) == 1 && m[0].ModRevision == e.Revision {
		_ = json.Unmarshal(m[0].Value, &e.Meta) // meta is informative; a bad one is left empty
	}
	return e, nil
}

// List returns the current rules of every service, sorted by service, with
// their Meta.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	sorted := clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(RulesPrefix(s.prefix), clientv3.WithPrefix(), sorted),
		clientv3.OpGet(s.prefix+"rules-meta/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("rulestore: list: %w", err)
	}
	type meta struct {
		value []byte
		rev   int64
	}
	metas := map[string]meta{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		metas[string(kv.Key)] = meta{kv.Value, kv.ModRevision}
	}
	var out []Entry
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		svc, ok := ServiceOfKey(s.prefix, string(kv.Key))
		if !ok {
			continue
		}
		e := Entry{Revision: kv.ModRevision}
		if err := json.Unmarshal(kv.Value, &e.Document); err != nil || e.Document == nil {
			continue // not ours to judge here; Get reports it
		}
		if m, ok := metas[MetaKey(s.prefix, svc)]; ok && m.rev == e.Revision {
			_ = json.Unmarshal(m.value, &e.Meta) // informative, as in Get
		}
		out = append(out, e)
	}
	return out, nil
}

// ApplyOption changes what Apply does.
type ApplyOption func(*applyOptions)

type applyOptions struct {
	comment string
	source  []byte
	guards  []clientv3.Cmp
	ops     []clientv3.Op
}

// WithComment records why the change was made in its history entry.
func WithComment(c string) ApplyOption { return func(o *applyOptions) { o.comment = c } }

// WithSource keeps src, the text doc was parsed from, as the revision's
// Source. The caller vouches that routing.Parse(src) gives doc.
func WithSource(src []byte) ApplyOption { return func(o *applyOptions) { o.source = src } }

// WithGuard adds conditions to Apply's transaction: if one does not hold
// (and the revision does), nothing is written and Apply returns ErrGuard.
// The canary controller uses it to tie a step to its own record and to its
// leadership.
func WithGuard(cmps ...clientv3.Cmp) ApplyOption {
	return func(o *applyOptions) { o.guards = append(o.guards, cmps...) }
}

// WithOps adds writes to Apply's transaction: they happen if and only if the
// rules are written, at the same etcd revision (which is the new rules
// revision).
func WithOps(ops ...clientv3.Op) ApplyOption {
	return func(o *applyOptions) { o.ops = append(o.ops, ops...) }
}

// Apply validates doc and makes it the current rules of doc.Service, if the
// rules are still at expectRevision (0: the service must have no rules yet).
// It returns the new revision.
//
// An invalid doc returns the error of doc.Validate (wrapping
// routing.ErrInvalid, naming the field); a stale expectRevision returns a
// *ConflictError (ErrConflict). In both cases nothing is written.
//
// The rules, their Meta and the history entry of the revision they replace
// are written in one transaction; the new revision's own history entry is
// written right after (and again by the Apply that replaces it), so a crash
// in between loses no history.
func (s *Store) Apply(ctx context.Context, doc *routing.Document, expectRevision int64, author string, opts ...ApplyOption) (int64, error) {
	if doc == nil {
		return 0, fmt.Errorf("%w: no document", routing.ErrInvalid)
	}
	if err := checkService(doc.Service); err != nil {
		return 0, err
	}
	if err := doc.Validate(); err != nil {
		return 0, err
	}
	if expectRevision < 0 {
		return 0, fmt.Errorf("%w: revision: %d is negative", routing.ErrInvalid, expectRevision)
	}
	var o applyOptions
	for _, opt := range opts {
		opt(&o)
	}
	service := doc.Service
	ruleKey, metaKey := RuleKey(s.prefix, service), MetaKey(s.prefix, service)

	docJSON, err := json.Marshal(doc)
	if err != nil {
		return 0, fmt.Errorf("rulestore: encode %s: %w", service, err)
	}
	meta := Meta{AppliedAt: s.now().UTC(), Author: author, Comment: o.comment, Source: string(o.source)}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return 0, fmt.Errorf("rulestore: encode meta: %w", err)
	}

	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(ruleKey), "=", expectRevision)}
	ops := []clientv3.Op{clientv3.OpPut(ruleKey, string(docJSON)), clientv3.OpPut(metaKey, string(metaJSON))}
	if expectRevision > 0 {
		// Settle the history entry of the revision being replaced.
		prev, err := s.Get(ctx, service)
		switch {
		case errors.Is(err, ErrNotFound):
			return 0, &ConflictError{Service: service, Expected: expectRevision}
		case err != nil:
			return 0, err
		case prev.Revision != expectRevision:
			return 0, &ConflictError{Service: service, Expected: expectRevision, Current: prev.Revision}
		}
		v, err := json.Marshal(prev)
		if err != nil {
			return 0, fmt.Errorf("rulestore: encode history: %w", err)
		}
		ops = append(ops, clientv3.OpPut(HistoryKey(s.prefix, service, expectRevision), string(v)))
	}
	cmps = append(cmps, o.guards...)
	ops = append(ops, o.ops...)

	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(ruleKey)).Commit()
	if err != nil {
		return 0, fmt.Errorf("rulestore: apply %s: %w", service, err)
	}
	if !resp.Succeeded {
		var cur int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			cur = kvs[0].ModRevision
		}
		if cur != expectRevision {
			return 0, &ConflictError{Service: service, Expected: expectRevision, Current: cur}
		}
		return 0, fmt.Errorf("%w: rules of %s not written", ErrGuard, service)
	}
	rev := resp.Header.Revision
	// Best effort: if this fails, the next Apply writes the entry, and
	// History shows the current revision from the rules key meanwhile.
	if v, err := json.Marshal(Entry{Revision: rev, Document: doc, Meta: meta}); err == nil {
		_, _ = s.cli.Put(ctx, HistoryKey(s.prefix, service, rev), string(v))
	}
	return rev, nil
}

// History returns up to limit revisions of service's rules, newest first,
// the current one included (limit <= 0: all). It returns an error wrapping
// ErrNotFound if the service has never had rules.
func (s *Store) History(ctx context.Context, service string, limit int) ([]Entry, error) {
	cur, err := s.Get(ctx, service)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.cli.Get(ctx, HistoryPrefix(s.prefix, service), opts...)
	if err != nil {
		return nil, fmt.Errorf("rulestore: history of %s: %w", service, err)
	}
	var out []Entry
	if cur.Revision > 0 && (len(resp.Kvs) == 0 || !strings.HasSuffix(string(resp.Kvs[0].Key), fmt.Sprintf("%020d", cur.Revision))) {
		out = append(out, cur) // its own entry is not written yet
	}
	for _, kv := range resp.Kvs {
		var e Entry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("rulestore: decode %s: %w", kv.Key, err)
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no rules for %s", ErrNotFound, service)
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Revision returns the history entry of one revision of service's rules, or
// an error wrapping ErrNotFound.
func (s *Store) Revision(ctx context.Context, service string, revision int64) (Entry, error) {
	if err := checkService(service); err != nil {
		return Entry{}, err
	}
	resp, err := s.cli.Get(ctx, HistoryKey(s.prefix, service, revision))
	if err != nil {
		return Entry{}, fmt.Errorf("rulestore: get %s revision %d: %w", service, revision, err)
	}
	if len(resp.Kvs) == 0 {
		cur, err := s.Get(ctx, service)
		if err == nil && cur.Revision == revision {
			return cur, nil
		}
		return Entry{}, fmt.Errorf("%w: %s has no revision %d", ErrNotFound, service, revision)
	}
	var e Entry
	if err := json.Unmarshal(resp.Kvs[0].Value, &e); err != nil {
		return Entry{}, fmt.Errorf("rulestore: decode %s: %w", resp.Kvs[0].Key, err)
	}
	return e, nil
}

// Rollback applies the document of revision toRevision again (with its
// source), as a new revision, if the rules are still at expectRevision.
// opts are added to Apply's (guards, for instance). Errors are those of
// Revision and Apply.
func (s *Store) Rollback(ctx context.Context, service string, toRevision, expectRevision int64, author string, opts ...ApplyOption) (int64, error) {
	e, err := s.Revision(ctx, service, toRevision)
	if err != nil {
		return 0, err
	}
	opts = append([]ApplyOption{WithComment(fmt.Sprintf("rollback to revision %d", toRevision)), WithSource([]byte(e.Source))}, opts...)
	return s.Apply(ctx, e.Document, expectRevision, author, opts...)
}
