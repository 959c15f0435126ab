package admission

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Fair admits requests under one Limiter per key (the edge keys by
// service), so that a service that answers slowly fills its own limit and
// queue and sheds its own requests, while every other service keeps all of
// its capacity. Each key's limiter adapts on its own latency. It is safe
// for concurrent use.
type Fair struct {
	cfg  Config
	mu   sync.Mutex // serialises creating limiters
	lims sync.Map   // key → *Limiter
	n    atomic.Int64
}

// ErrTooManyKeys is returned by Fair.Acquire for a key beyond MaxKeys.
var ErrTooManyKeys = errors.New("admission: too many keys")

// MaxKeys bounds the limiters a Fair keeps: keys come from the routing
// rules and the catalog, never from clients, so the bound only guards
// against a caller that gets this wrong.
const MaxKeys = 4096

// NewFair validates cfg, the configuration of each key's Limiter.
func NewFair(cfg Config) (*Fair, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Fair{cfg: cfg}, nil
}

// Ticket is a request admitted by a Fair. Release it exactly once.
type Ticket struct {
	l   *Limiter
	tok Token
}

// Acquire admits a request for key at once or after a bounded wait, as
// Limiter.Acquire does; it returns ErrShed when key's limit and queue are
// full.
func (f *Fair) Acquire(ctx context.Context, key string) (Ticket, error) {
	l, err := f.limiter(key)
	if err != nil {
		return Ticket{}, err
	}
	tok, err := l.Acquire(ctx)
	return Ticket{l: l, tok: tok}, err
}

// Release ends an admitted request; ok as for Limiter.Release.
func (f *Fair) Release(t Ticket, ok bool) { t.l.Release(t.tok, ok) }

func (f *Fair) limiter(key string) (*Limiter, error) {
	if v, ok := f.lims.Load(key); ok {
		return v.(*Limiter), nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.lims.Load(key); ok {
		return v.(*Limiter), nil
	}
	if f.n.Load() >= MaxKeys {
		return nil, fmt.Errorf("%w: %d", ErrTooManyKeys, MaxKeys)
	}
	l, err := New(f.cfg)
	if err != nil {
		return nil, err
	}
	f.lims.Store(key, l)
	f.n.Add(1)
	return l, nil
}

// Stats reports each key's limiter.
func (f *Fair) Stats() map[string]Stats {
	out := map[string]Stats{}
	f.lims.Range(func(k, v any) bool {
		out[k.(string)] = v.(*Limiter).Stats()
		return true
	})
	return out
}

// Bytes bounds the request bytes held in memory at once across all
// requests: a request whose body does not fit is refused rather than
// buffered. It is safe for concurrent use; the zero value admits nothing.
type Bytes struct {
	max  int64
	used atomic.Int64
}

// NewBytes returns a budget of max bytes (max must be positive).
func NewBytes(max int64) (*Bytes, error) {
	if max <= 0 {
		return nil, fmt.Errorf("admission: byte budget %d must be positive", max)
	}
	return &Bytes{max: max}, nil
}

// TryAcquire takes n bytes of the budget if they fit and reports whether
// it did; the caller gives them back with Release.
func (b *Bytes) TryAcquire(n int64) bool {
	if n <= 0 {
		return true
	}
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// Release gives back n bytes taken by TryAcquire.
func (b *Bytes) Release(n int64) {
	if n > 0 {
		b.used.Add(-n)
	}
}

// InUse reports the bytes currently taken.
func (b *Bytes) InUse() int64 { return b.used.Load() }
