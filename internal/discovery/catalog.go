package discovery

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/griddle-mesh/griddle/internal/backoff"
	"github.com/griddle-mesh/griddle/internal/routing"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Timing of the Catalog's talks with etcd.
const (
	listTimeout    = 5 * time.Second        // one Get of the whole prefix
	probeInterval  = time.Second            // liveness probe period
	probeTimeout   = time.Second            // liveness probe deadline
	watchBackoffLo = 100 * time.Millisecond // first wait before re-listing after a failure
	watchBackoffHi = 5 * time.Second        // longest wait between re-lists
	stableAfter    = 10 * time.Second       // a watch that lived this long resets the back-off
)

// Status describes a Catalog's view of etcd.
type Status struct {
	// Synced is true once the first list succeeded; it never turns false.
	Synced bool
	// Connected is true while etcd answers: the last list or liveness probe
	// succeeded. While false the Catalog serves its last known state.
	Connected bool
	// Revision is the etcd revision the Catalog's state reflects.
	Revision int64
	// LastError is the text of the most recent failure talking to etcd
	// ("" if none yet). It is kept after recovery.
	LastError string
	// DisconnectedSince is when the current outage began; zero while
	// Connected, and before the first contact with etcd.
	DisconnectedSince time.Time
	// Held counts instances kept although etcd no longer lists them: they
	// were registered before an outage, and their lease ran out while
	// etcd was away or just back. Each is kept until it registers again,
	// a lease period of the new session has passed, or a direct probe of
	// its address fails.
	Held int
}

// Catalog is a local, eventually consistent copy of the instances and
// exposures under a prefix, kept by Get + Watch. Reads never touch etcd and
// never block: they see an immutable snapshot. If etcd becomes unreachable
// the Catalog keeps serving the last known state (static stability) and
// says so in Status.
//
// Run must be called (once) to fill and maintain it; all other methods are
// safe for concurrent use at any time, before or after Run.
type Catalog struct {
	cli    *clientv3.Client
	prefix string
	logger *slog.Logger

	snap    atomic.Pointer[snapshot]
	synced  chan struct{} // closed by the first successful list
	running atomic.Bool

	mu     sync.Mutex // guards status, outage, outageRev and recovered
	status Status
	outage bool // an outage has been logged and not yet its end
	// outageRev is the revision the catalog had when the last outage
	// began: instances written at or before it were known before it.
	outageRev int64
	// recovered is when etcd answered again after the last outage.
	recovered time.Time

	// Owned by the goroutine running Run.
	instances  map[string]map[string]Instance // service → key → instance
	exposures  map[string]Exposure            // key → exposure
	edges      map[string]Edge                // key → edge
	rules      map[string]ruleEntry           // key → valid rule document
	rulesDirty bool                           // rules changed since the last publish
	modRevs    map[string]int64               // instance key → revision that wrote it
	held       map[string]heldInstance        // instance key → why and until when it is kept
}

// ruleEntry is a valid rule document and the etcd revision that wrote it.
type ruleEntry struct {
	doc routing.Document
	rev int64
}

// snapshot is an immutable view of the catalog; readers share its slices.
type snapshot struct {
	instances map[string][]Instance // service → instances sorted by version, id
	services  []string              // services with instances, sorted
	exposures []Exposure            // sorted by service
	edges     []Edge                // sorted by id
	rules     *routing.Table        // never nil
	changed   chan struct{}         // closed when this snapshot is replaced
}

// NewCatalog returns an empty Catalog of the entries under prefix (e.g.
// DefaultPrefix). It does no I/O; call Run. A nil logger means slog.Default().
// The Catalog does not close cli.
func NewCatalog(cli *clientv3.Client, prefix string, logger *slog.Logger) *Catalog {
	if logger == nil {
		logger = slog.Default()
	}
	c := &Catalog{
		cli:       cli,
		prefix:    prefix,
		logger:    logger,
		synced:    make(chan struct{}),
		instances: map[string]map[string]Instance{},
		exposures: map[string]Exposure{},
		edges:     map[string]Edge{},
		rules:     map[string]ruleEntry{},
		modRevs:   map[string]int64{},
		held:      map[string]heldInstance{},
	}
	noRules, _ := routing.Compile(nil, 0) // cannot fail: there is nothing to compile
	c.snap.Store(&snapshot{instances: map[string][]Instance{}, rules: noRules, changed: make(chan struct{})})
	return c
}

// Instances returns the instances of service, all versions, sorted by
// version then ID; nil if none. The slice is shared: callers must not modify
// it. It does not allocate.
func (c *Catalog) Instances(service string) []Instance {
	return c.snap.Load().instances[service]
}

// Services returns the names of the services that have at least one
// instance, sorted. The slice is shared: callers must not modify it.
func (c *Catalog) Services() []string { return c.snap.Load().services }

// Exposures returns all exposures sorted by service. The slice is shared:
// callers must not modify it.
func (c *Catalog) Exposures() []Exposure { return c.snap.Load().exposures }

// Rules returns the routing rules of all services, compiled; never nil. Its
// Revision is the highest etcd revision among the documents (0: none).
func (c *Catalog) Rules() *routing.Table { return c.snap.Load().rules }

// Edges returns the registered edges, sorted by id; the slice is shared.
func (c *Catalog) Edges() []Edge { return c.snap.Load().edges }

// Changed returns a channel that is closed at the next change of what
// Instances, Services or Exposures return. Call it again after each close to
// wait for the change after that. To miss nothing, call Changed before
// reading the state it guards. A re-list (after compaction or an outage)
// closes it even if nothing differs.
func (c *Catalog) Changed() <-chan struct{} { return c.snap.Load().changed }

// Status returns the Catalog's view of etcd.
func (c *Catalog) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// WaitSynced returns nil once the first list of the prefix has succeeded, or
// an error wrapping ErrDiscoveryNotSynced and ctx.Err() if ctx ends first.
func (c *Catalog) WaitSynced(ctx context.Context) error {
	select {
	case <-c.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrDiscoveryNotSynced, ctx.Err())
	}
}

// Run lists the prefix, then watches it from the next revision, until ctx
// ends; it then returns nil. On compaction it re-lists at once; on any other
// failure it re-lists with back-off, keeping the last known state meanwhile.
// A liveness probe (a linearizable Get every second, one-second deadline)
// keeps Status().Connected current even when the watch is idle, so an outage
// shows within about two seconds. Run returns an error only if cli is closed
// (wrapping the client's error) or if another Run is in progress
// (ErrDiscoveryRunning).
func (c *Catalog) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrDiscoveryRunning
	}
	defer c.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { c.probe(ctx) })

	b := backoff.New(watchBackoffLo, watchBackoffHi)
	for {
		start := time.Now()
		err := c.listAndWatch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if c.cli.Ctx().Err() != nil {
			return fmt.Errorf("discovery: catalog: %w", err)
		}
		c.recordError(err)
		if errors.Is(err, rpctypes.ErrCompacted) {
			c.logger.Info("discovery: watch compacted; re-listing", "prefix", c.prefix, "err", err)
			continue
		}
		if time.Since(start) > stableAfter {
			b.Reset()
		}
		if !b.Wait(ctx) {
			return nil
		}
	}
}

// listAndWatch does one Get of the prefix and then watches it until the
// watch fails or ctx ends. List failures count as disconnection.
func (c *Catalog) listAndWatch(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	resp, err := c.cli.Get(lctx, c.prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		err = fmt.Errorf("list %s: %w", c.prefix, err)
		if ctx.Err() == nil {
			c.disconnected(err)
		}
		return err
	}
	rev := resp.Header.Revision
	c.reset(resp.Kvs)
	c.connected(rev)
	close1(c.synced)

	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	wch := c.cli.Watch(wctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	tick := time.NewTicker(holdCheckEvery)
	defer tick.Stop()
	for {
		var wresp clientv3.WatchResponse
		select {
		case <-tick.C:
			c.checkHeld(ctx)
			continue
		case w, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("watch %s: channel closed", c.prefix)
			}
			wresp = w
		}
		if err := wresp.Err(); err != nil {
			// A compaction arrives as CompactRevision != 0, and Err is then
			// rpctypes.ErrCompacted.
			return fmt.Errorf("watch %s from revision %d: %w", c.prefix, rev+1, err)
		}
		if len(wresp.Events) > 0 {
			c.apply(wresp.Events)
		}
		if r := wresp.Header.Revision; r > rev {
			rev = r
			c.setRevision(rev)
		}
	}
}

// close1 closes ch unless it is already closed. Only Run's goroutine calls it.
func close1(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// probe checks every probeInterval that etcd answers a linearizable read,
// until ctx ends.
func (c *Catalog) probe(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := c.cli.Get(pctx, c.prefix, clientv3.WithCountOnly())
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.disconnected(fmt.Errorf("probe: %w", err))
		default:
			c.reachable()
		}
	}
}

// disconnected records err and, at the start of an outage, logs it once.
func (c *Catalog) disconnected(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.LastError = err.Error()
	c.status.Connected = false
	if c.outage {
		c.logger.Debug("discovery: etcd still unreachable", "prefix", c.prefix, "err", err)
		return
	}
	c.outage = true
	c.outageRev = c.status.Revision
	c.status.DisconnectedSince = time.Now()
	c.logger.Warn("discovery: etcd unreachable; serving last known state",
		"prefix", c.prefix, "revision", c.status.Revision, "err", err)
}

// reachable marks etcd as answering, logging the end of an outage once.
func (c *Catalog) reachable() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reachableLocked()
}

func (c *Catalog) reachableLocked() {
	c.status.Connected = true
	if c.outage {
		c.outage = false
		c.recovered = time.Now()
		c.logger.Info("discovery: etcd reachable again", "prefix", c.prefix,
			"outage", time.Since(c.status.DisconnectedSince).Round(time.Millisecond))
	}
	c.status.DisconnectedSince = time.Time{}
}

// connected records a successful list at rev.
func (c *Catalog) connected(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reachableLocked()
	c.status.Synced = true
	c.status.Revision = rev
}

func (c *Catalog) setRevision(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.Revision = rev
}

func (c *Catalog) recordError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.LastError = err.Error()
}

// entry kinds under the prefix.
const (
	kindOther = iota
	kindInstance
	kindExposure
	kindRule
	kindEdge
)

// classify tells what key is; for instances it returns the service.
func (c *Catalog) classify(key string) (kind int, service string) {
	if rest, ok := strings.CutPrefix(key, InstancesPrefix(c.prefix)); ok {
		svc, _, _ := strings.Cut(rest, "/")
		return kindInstance, svc
	}
	if rest, ok := strings.CutPrefix(key, ExposuresPrefix(c.prefix)); ok {
		svc, _, _ := strings.Cut(rest, "/") // <service> or <service>/<owner>
		return kindExposure, svc
	}
	if rest, ok := strings.CutPrefix(key, RulesPrefix(c.prefix)); ok {
		return kindRule, rest
	}
	if _, ok := strings.CutPrefix(key, EdgesPrefix(c.prefix)); ok {
		return kindEdge, ""
	}
	return kindOther, ""
}

// decodeInstance parses an instance entry; the key must be
// <prefix>instances/<service>/<version>/<id> and agree with the JSON.
func (c *Catalog) decodeInstance(key string, value []byte) (Instance, error) {
	parts := strings.Split(strings.TrimPrefix(key, InstancesPrefix(c.prefix)), "/")
	if len(parts) != 3 {
		return Instance{}, errors.New("key is not instances/<service>/<version>/<id>")
	}
	var in Instance
	if err := json.Unmarshal(value, &in); err != nil {
		return Instance{}, err
	}
	if in.Service != parts[0] || in.Version != parts[1] || in.ID != parts[2] {
		return Instance{}, fmt.Errorf("value names %s/%s/%s", in.Service, in.Version, in.ID)
	}
	return in, in.Validate()
}

func (c *Catalog) decodeExposure(service string, value []byte) (Exposure, error) {
	var e Exposure
	if err := json.Unmarshal(value, &e); err != nil {
		return Exposure{}, err
	}
	if e.Service != service {
		return Exposure{}, fmt.Errorf("value names service %q", e.Service)
	}
	return e, e.Validate()
}

// put applies one key's value to the working state and reports whether it
// touched it. A malformed value is logged and removes the key's previous
// entry: the key no longer holds a usable one.
func (c *Catalog) put(key string, value []byte, modRev int64, dirty map[string]struct{}) bool {
	kind, svc := c.classify(key)
	switch kind {
	case kindRule:
		doc, err := routing.Parse(value)
		if err == nil && doc.Service != svc {
			err = fmt.Errorf("document names service %q", doc.Service)
		}
		if err != nil {
			c.logger.Warn("discovery: skipping invalid rule document", "key", key, "err", err)
			return c.del(key, dirty)
		}
		c.rules[key] = ruleEntry{doc: *doc, rev: modRev}
		c.rulesDirty = true
		return true
	case kindEdge:
		var e Edge
		if err := json.Unmarshal(value, &e); err != nil {
			c.logger.Warn("discovery: skipping malformed edge", "key", key, "err", err)
			return c.del(key, dirty)
		}
		c.edges[key] = e
		return true
	case kindInstance:
		in, err := c.decodeInstance(key, value)
		if err != nil {
			c.logger.Warn("discovery: skipping malformed instance", "key", key, "err", err)
			return c.del(key, dirty)
		}
		m := c.instances[svc]
		if m == nil {
			m = map[string]Instance{}
			c.instances[svc] = m
		}
		m[key] = in
		c.modRevs[key] = modRev
		if _, ok := c.held[key]; ok {
			delete(c.held, key)
			c.logger.Info("discovery: held instance registered again", "key", key)
		}
		c.dropHeldAt(in.Address, key, dirty)
		dirty[svc] = struct{}{}
		return true
	case kindExposure:
		e, err := c.decodeExposure(svc, value)
		if err != nil {
			c.logger.Warn("discovery: skipping malformed exposure", "key", key, "err", err)
			return c.del(key, dirty)
		}
		c.exposures[key] = e
		return true
	}
	return false
}

// del removes key from the working state and reports whether it was there.
func (c *Catalog) del(key string, dirty map[string]struct{}) bool {
	kind, svc := c.classify(key)
	switch kind {
	case kindRule:
		if _, ok := c.rules[key]; !ok {
			return false
		}
		delete(c.rules, key)
		c.rulesDirty = true
		return true
	case kindEdge:
		if _, ok := c.edges[key]; !ok {
			return false
		}
		delete(c.edges, key)
		return true
	case kindInstance:
		m := c.instances[svc]
		if _, ok := m[key]; !ok {
			return false
		}
		delete(m, key)
		if len(m) == 0 {
			delete(c.instances, svc)
		}
		delete(c.modRevs, key)
		delete(c.held, key)
		dirty[svc] = struct{}{}
		return true
	case kindExposure:
		if _, ok := c.exposures[key]; !ok {
			return false
		}
		delete(c.exposures, key)
		return true
	}
	return false
}

// reset replaces the working state by a full list and publishes it.
// Instances the list lacks that may only have lost their lease to an
// outage are held (see holdable).
func (c *Catalog) reset(kvs []*mvccpb.KeyValue) {
	oldInstances, oldRevs, oldHeld := c.instances, c.modRevs, c.held
	c.instances = map[string]map[string]Instance{}
	c.modRevs = map[string]int64{}
	c.held = map[string]heldInstance{}
	c.exposures = map[string]Exposure{}
	c.edges = map[string]Edge{}
	c.rules = map[string]ruleEntry{}
	c.rulesDirty = true
	dirty := map[string]struct{}{}
	for _, kv := range kvs {
		c.put(string(kv.Key), kv.Value, kv.ModRevision, dirty)
	}
	for svc, m := range oldInstances {
		for key, in := range m {
			if _, listed := c.modRevs[key]; listed {
				continue
			}
			if h, ok := oldHeld[key]; ok {
				c.keep(svc, key, in, oldRevs[key], h.until)
			} else if until, ok := c.holdable(in, oldRevs[key]); ok {
				c.keep(svc, key, in, oldRevs[key], until)
			}
		}
	}
	c.publishHeld()
	c.publish(nil)
}

// apply applies watch events and publishes a new snapshot if any touched
// the state.
func (c *Catalog) apply(events []*clientv3.Event) {
	dirty := map[string]struct{}{}
	changed := false
	for _, ev := range events {
		key := string(ev.Kv.Key)
		switch ev.Type {
		case clientv3.EventTypePut:
			changed = c.put(key, ev.Kv.Value, ev.Kv.ModRevision, dirty) || changed
		case clientv3.EventTypeDelete:
			changed = c.delOrHold(key, dirty) || changed
		}
	}
	if changed {
		c.publishHeld()
		c.publish(dirty)
	}
}

// publish builds a snapshot from the working state and swaps it in. Only the
// services in dirty are rebuilt; nil means all.
func (c *Catalog) publish(dirty map[string]struct{}) {
	old := c.snap.Load()
	next := &snapshot{changed: make(chan struct{})}
	if dirty == nil {
		next.instances = make(map[string][]Instance, len(c.instances))
		for svc := range c.instances {
			next.instances[svc] = c.sortedInstances(svc)
		}
	} else {
		next.instances = maps.Clone(old.instances)
		for svc := range dirty {
			if _, ok := c.instances[svc]; ok {
				next.instances[svc] = c.sortedInstances(svc)
			} else {
				delete(next.instances, svc)
			}
		}
	}
	next.services = slices.Sorted(maps.Keys(next.instances))
	next.exposures = slices.SortedFunc(maps.Values(c.exposures), func(a, b Exposure) int {
		return cmp.Compare(a.Service, b.Service)
	})
	next.edges = slices.SortedFunc(maps.Values(c.edges), func(a, b Edge) int { return cmp.Compare(a.ID, b.ID) })
	next.rules = old.rules
	if c.rulesDirty {
		next.rules = c.compileRules(old.rules)
		c.rulesDirty = false
	}
	c.snap.Store(next)
	close(old.changed)
}

// compileRules compiles the valid documents at hand; if that fails (it
// should not: each was validated), the previous table stays in use.
func (c *Catalog) compileRules(prev *routing.Table) *routing.Table {
	docs := make([]routing.Document, 0, len(c.rules))
	var rev int64
	for _, r := range c.rules {
		docs = append(docs, r.doc)
		rev = max(rev, r.rev)
	}
	t, err := routing.Compile(docs, rev)
	if err != nil {
		c.logger.Error("discovery: compiling rules failed; keeping the previous ones", "revision", rev, "err", err)
		return prev
	}
	return t
}

func (c *Catalog) sortedInstances(svc string) []Instance {
	return slices.SortedFunc(maps.Values(c.instances[svc]), func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.Version, b.Version), cmp.Compare(a.ID, b.ID))
	})
}
