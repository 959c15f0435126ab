package control

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultSessionTTL is the lease of a leader's session: a leader that dies
// is replaced within about this long.
const DefaultSessionTTL = 5 * time.Second

// campaignRetry is the pause before campaigning again after a failure.
const campaignRetry = time.Second

// ElectionKey is the election prefix of the control plane's leader.
func ElectionKey(prefix string) string { return prefix + "control/leader/" }

// Elector runs a function only while this process leads, through etcd's
// concurrency.Election. Its methods are safe for concurrent use.
type Elector struct {
	cli *clientv3.Client
	key string
	id  string
	ttl int
	log *slog.Logger

	leading atomic.Bool
}

// NewElector returns an Elector for the election ElectionKey(prefix), in
// which this process is known as id. ttl is rounded up to whole seconds
// (0: DefaultSessionTTL). It does no I/O. A nil logger means slog.Default().
func NewElector(cli *clientv3.Client, prefix, id string, ttl time.Duration, logger *slog.Logger) *Elector {
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	if logger == nil {
		logger = slog.Default()
	}
	secs := int((ttl + time.Second - 1) / time.Second)
	return &Elector{cli: cli, key: ElectionKey(prefix), id: id, ttl: secs, log: logger}
}

// Leading reports whether this process leads now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Leader returns the id of the current leader ("" if none).
func (e *Elector) Leader(ctx context.Context) (string, error) {
	resp, err := e.cli.Get(ctx, e.key, clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("control: leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// Run campaigns until ctx ends, then returns nil. Each time this process
// wins, it calls lead with a context that is cancelled when the leadership
// ends (the session's lease is lost or ctx ends) and a guard that holds in
// an etcd transaction only while this process still leads; lead must
// return when its context is cancelled. Then Run resigns, closes the
// session and campaigns again.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context, guard clientv3.Cmp)) error {
	for ctx.Err() == nil {
		if err := e.term(ctx, lead); err != nil && ctx.Err() == nil {
			e.log.Warn("control: election failed; campaigning again", "id", e.id, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(campaignRetry):
			}
		}
	}
	return nil
}

// term is one session: campaign, lead, resign.
func (e *Elector) term(ctx context.Context, lead func(context.Context, clientv3.Cmp)) error {
	// The session outlives ctx a little, so that Close can still revoke the
	// lease at shutdown and the next leader need not wait for it to expire.
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	defer scancel()
	sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(e.ttl), concurrency.WithContext(sctx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer func() { _ = sess.Close() }()

	// lctx ends with ctx and when the session's lease is lost.
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	stop := context.AfterFunc(sess.Ctx(), lcancel)
	defer stop()

	el := concurrency.NewElection(sess, e.key)
	if err := el.Campaign(lctx, e.id); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	// Campaign can return after the session was lost while waiting: check
	// that our key is still there.
	resp, err := e.cli.Get(lctx, el.Key())
	if err != nil {
		return fmt.Errorf("check leadership: %w", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != el.Rev() {
		return fmt.Errorf("leadership lost before it began")
	}
	guard := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	e.log.Info("control: leading", "id", e.id)
	e.leading.Store(true)
	lead(lctx, guard)
	e.leading.Store(false)
	rctx, cancel := context.WithTimeout(sctx, time.Duration(e.ttl)*time.Second)
	_ = el.Resign(rctx)
	cancel()
	e.log.Info("control: no longer leading", "id", e.id)
	return nil
}
