package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/griddle-mesh/griddle/internal/backoff"
	"github.com/griddle-mesh/griddle/internal/routing"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Back-off bounds for re-registering after a lost lease. Each try waits
// for the client's connection (gRPC's wait for ready), so it goes through
// as soon as etcd answers again; the pause between tries only keeps fast
// failures (no leader yet) from spinning, and stays short so that the
// entry is back well within a lease period of etcd's return.
const (
	regBackoffMin = 50 * time.Millisecond
	regBackoffMax = 500 * time.Millisecond
)

// Registration is a sidecar's own entry in etcd: InstanceKey → JSON of the
// Instance, attached to a lease that a goroutine owned by the Registration
// keeps alive. If the process dies, the entry disappears when the lease
// expires (after ttl); Close removes it at once.
//
// If the lease is lost (etcd restarted and the lease expired while it was
// down, or a partition outlasted the ttl), the Registration grants a new
// lease and puts the entry again, retrying with back-off until it succeeds
// or is closed. Its methods are safe for concurrent use.
type Registration struct {
	cli    *clientv3.Client
	key    string
	ttl    int64 // seconds
	logger *slog.Logger

	cancel context.CancelFunc // stops the keeper
	done   chan struct{}      // closed when the keeper has returned

	// mu serializes every put of the entry with lease changes, so that an
	// Update cannot re-attach the key to a lease that was just replaced.
	mu     sync.Mutex
	entry  any // Instance or Edge
	lease  clientv3.LeaseID
	closed bool
	claim  *exposureClaim // nil: the instance exposes nothing
}

// Register validates in, grants a lease of ttl (rounded up to whole seconds;
// etcd may raise it to its minimum), puts InstanceKey(prefix, in) → JSON under
// that lease and starts keeping the lease alive. ctx bounds only this first
// registration; the keep-alive runs until Close. A nil logger means
// slog.Default(). The caller must Close the Registration.
func Register(ctx context.Context, cli *clientv3.Client, prefix string, in Instance, ttl time.Duration, logger *slog.Logger) (*Registration, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return register(ctx, cli, InstanceKey(prefix, in), in, ttl, logger)
}

// RegisterEdge is Register for an edge: EdgeKey(prefix, e.ID) → JSON of e.
func RegisterEdge(ctx context.Context, cli *clientv3.Client, prefix string, e Edge, ttl time.Duration, logger *slog.Logger) (*Registration, error) {
	if !ValidName(e.ID) || e.Address == "" {
		return nil, fmt.Errorf("%w: edge id %q must be a valid name and address %q set", ErrDiscoveryInvalid, e.ID, e.Address)
	}
	return register(ctx, cli, EdgeKey(prefix, e.ID), e, ttl, logger)
}

func register(ctx context.Context, cli *clientv3.Client, key string, entry any, ttl time.Duration, logger *slog.Logger) (*Registration, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: registration ttl %v must be positive", ErrDiscoveryInvalid, ttl)
	}
	if logger == nil {
		logger = slog.Default()
	}
	r := &Registration{
		cli:    cli,
		key:    key,
		ttl:    int64(math.Ceil(ttl.Seconds())),
		logger: logger,
		done:   make(chan struct{}),
	}
	r.entry = r.withLease(entry)
	lease, err := r.grantAndPut(ctx)
	if err != nil {
		return nil, fmt.Errorf("discovery: register %s: %w", r.key, err)
	}
	r.lease = lease
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.keep(kctx, lease)
	return r, nil
}

// withLease returns entry with the lease's ttl recorded, for an Instance.
func (r *Registration) withLease(entry any) any {
	if in, ok := entry.(Instance); ok {
		in.LeaseSeconds = r.ttl
		return in
	}
	return entry
}

// grantAndPut grants a new lease and puts the current Instance under it. On
// success the caller must store the lease in r.lease while holding r.mu, or
// (in Register) before r is shared.
func (r *Registration) grantAndPut(ctx context.Context) (clientv3.LeaseID, error) {
	g, err := r.cli.Grant(ctx, r.ttl)
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	if err := r.put(ctx, r.entry, g.ID); err != nil {
		// The lease would expire by itself; revoking just tidies up.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = r.cli.Revoke(rctx, g.ID)
		cancel()
		return 0, err
	}
	if c := r.claim; c != nil {
		// The exposure went with the old lease; while it was gone another
		// service may have claimed the paths, and keeps them.
		if err := claimExposure(ctx, r.cli, c.prefix, c.key, c.e, g.ID); err != nil {
			r.logger.Error("discovery: exposure not claimed again after a lost lease", "key", c.key, "err", err)
		}
	}
	return g.ID, nil
}

func (r *Registration) put(ctx context.Context, entry any, lease clientv3.LeaseID) error {
	v, err := json.Marshal(entry)
	if err != nil {
		return fmt.Errorf("encode entry: %w", err)
	}
	if _, err := r.cli.Put(ctx, r.key, string(v), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("put %s: %w", r.key, err)
	}
	return nil
}

// keep owns the keep-alive of lease and its replacements. It returns when ctx
// ends (Close) or the client is closed, and closes r.done.
func (r *Registration) keep(ctx context.Context, lease clientv3.LeaseID) {
	defer close(r.done)
	for {
		ch, err := r.cli.KeepAlive(ctx, lease)
		// ch closes when the lease is lost; on Close, ctx ends first, and
		// the keeper does not wait for etcd's client to close ch as well.
		for alive := err == nil; alive; {
			select {
			case _, alive = <-ch:
			case <-ctx.Done():
				alive = false
			}
		}
		if ctx.Err() != nil || r.cli.Ctx().Err() != nil {
			return
		}
		lost := time.Now()
		r.logger.Warn("discovery: registration lease lost; re-registering",
			"key", r.key, "lease", int64(lease), "err", err)
		var ok bool
		if lease, ok = r.reregister(ctx); !ok {
			return
		}
		r.logger.Info("discovery: re-registered",
			"key", r.key, "lease", int64(lease), "outage", time.Since(lost).Round(time.Millisecond))
	}
}

// reregister grants a new lease and puts the entry again, retrying with
// back-off until it succeeds (true) or ctx ends or the client is closed (false).
func (r *Registration) reregister(ctx context.Context) (clientv3.LeaseID, bool) {
	b := backoff.New(regBackoffMin, regBackoffMax)
	// Each try is bounded so a hung request cannot hold r.mu for long.
	tryTimeout := max(time.Duration(r.ttl)*time.Second, 2*time.Second)
	for {
		if ctx.Err() != nil || r.cli.Ctx().Err() != nil {
			return 0, false
		}
		lease, err := func() (clientv3.LeaseID, error) {
			tctx, cancel := context.WithTimeout(ctx, tryTimeout)
			defer cancel()
			r.mu.Lock()
			defer r.mu.Unlock()
			lease, err := r.grantAndPut(tctx)
			if err == nil {
				r.lease = lease
			}
			return lease, err
		}()
		if err == nil {
			return lease, true
		}
		r.logger.Debug("discovery: re-register failed; retrying", "key", r.key, "err", err)
		if !b.Wait(ctx) {
			return 0, false
		}
	}
}

// Update replaces the registered Instance (e.g. a new RuleRevision) under the
// same lease. in must have the same Service, Version and ID as the registered
// one. The new value is kept even if the put fails, and is the one put again
// after a lost lease. Update blocks until the put is done or ctx ends (while
// etcd is unreachable, that is ctx's deadline). Update after Close returns
// ErrDiscoveryClosed.
func (r *Registration) Update(ctx context.Context, in Instance) error {
	if err := in.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrDiscoveryClosed
	}
	old, ok := r.entry.(Instance)
	if !ok || in.Service != old.Service || in.Version != old.Version || in.ID != old.ID {
		return fmt.Errorf("%w: update of %s changes service, version or id", ErrDiscoveryInvalid, r.key)
	}
	r.entry = r.withLease(in)
	if err := r.put(ctx, r.entry, r.lease); err != nil {
		return fmt.Errorf("discovery: update: %w", err)
	}
	return nil
}

// SetRuleRevision records the routing rules revision the registered
// instance or edge runs, so that operators see a change propagate. Like
// Update, it keeps the value for later re-registrations even if the put fails.
func (r *Registration) SetRuleRevision(ctx context.Context, rev int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrDiscoveryClosed
	}
	switch e := r.entry.(type) {
	case Instance:
		e.RuleRevision = rev
		r.entry = e
	case Edge:
		e.RuleRevision = rev
		r.entry = e
	}
	if err := r.put(ctx, r.entry, r.lease); err != nil {
		return fmt.Errorf("discovery: set rule revision: %w", err)
	}
	return nil
}

// Close stops the keep-alive and revokes the lease, so the entry disappears
// at once. Only the first call does anything; later calls return nil. If the
// revoke fails (e.g. etcd is unreachable within ctx) the error is returned
// and the entry disappears when the lease expires.
func (r *Registration) Close(ctx context.Context) error {
	r.cancel()
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("discovery: close %s: %w", r.key, ctx.Err())
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	lease := r.lease
	r.mu.Unlock()
	if _, err := r.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("discovery: close %s: revoke lease: %w", r.key, err)
	}
	return nil
}

// TrackRuleRevision keeps reg's rule revision equal to the revision of
// rules() until ctx ends: it re-reads it each time changed() fires, and
// tells observe (when set) every revision it sees. The put is retried at
// the next change if etcd is unreachable.
func TrackRuleRevision(ctx context.Context, reg *Registration, rules func() *routing.Table, changed func() <-chan struct{}, observe func(rev int64)) {
	var last int64 = -1
	for {
		ch := changed()
		rev := rules().Revision()
		if observe != nil {
			observe(rev)
		}
		if rev != last {
			uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := reg.SetRuleRevision(uctx, rev); err == nil {
				last = rev
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}
