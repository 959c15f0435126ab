// Package admission decides whether the edge takes on one more request: an
// adaptive concurrency limit in front of a bounded wait queue. Past
// saturation it refuses work at once rather than letting every request
// slow down, so the requests it serves keep their latency.
//
// The limit follows the gradient of the latency the mesh answers in, as in
// Netflix's concurrency-limits Gradient2: while the short-term latency stays
// near the long-term one the limit grows by about its square root per
// window; when queueing inside the mesh makes the short-term latency rise,
// the limit shrinks in proportion.
package admission

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"time"
)

// ErrShed is returned by Acquire when the request must be refused for load.
var ErrShed = errors.New("admission: shed for load")

// Config tunes a Limiter. Zero values select the defaults.
type Config struct {
	InitialLimit int // concurrency limit at start (16)
	MinLimit     int // floor of the limit (8)
	// MaxLimit is the ceiling of the limit: 64 per CPU, at least 128. A
	// request waiting on a synced commit holds a slot but no CPU, so the
	// ceiling leaves room for writes: at 16 per CPU, commits that waited
	// on the disk filled it and the queue shed writes while the CPU idled.
	MaxLimit  int
	QueueSize int // requests that may wait for a slot (256)
	// MaxWait is the longest wait for a slot while the queue absorbs a
	// burst (25ms). Once every request that left the queue for longer than
	// OverloadAfter (100ms) had waited more than OverloadWait (5ms), the
	// queue is standing: the load is no burst, and new waiters wait at most
	// OverloadWait. CoDel's rule, judged on what leaves the queue, so that
	// under sustained overload the queue adds little latency and the excess
	// is shed fast, while a stall (the service, or the machine, answering
	// nothing for a moment, so that nothing leaves) is a burst like any
	// other.
	MaxWait       time.Duration
	OverloadAfter time.Duration
	OverloadWait  time.Duration
	Window        time.Duration // how often the limit is recomputed (50ms)
	Tolerance     float64       // short/long latency ratio tolerated before the limit falls (1.5)
	// Now is the clock (time.Now); tests set it.
	Now func() time.Time
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.InitialLimit < 0, c.MinLimit < 0, c.MaxLimit < 0, c.QueueSize < 0:
		return errors.New("admission: limits and QueueSize must not be negative")
	case c.MaxLimit != 0 && c.MinLimit > c.MaxLimit:
		return fmt.Errorf("admission: MinLimit %d exceeds MaxLimit %d", c.MinLimit, c.MaxLimit)
	case c.MaxWait < 0 || c.Window < 0 || c.OverloadAfter < 0 || c.OverloadWait < 0:
		return errors.New("admission: MaxWait, OverloadAfter, OverloadWait and Window must not be negative")
	case c.Tolerance != 0 && c.Tolerance < 1:
		return fmt.Errorf("admission: Tolerance %v must be at least 1", c.Tolerance)
	}
	return nil
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.InitialLimit, 16)
	def(&c.MinLimit, 8)
	def(&c.MaxLimit, max(128, 64*runtime.GOMAXPROCS(0)))
	def(&c.QueueSize, 256)
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defDur(&c.MaxWait, 25*time.Millisecond)
	defDur(&c.OverloadAfter, 100*time.Millisecond)
	defDur(&c.OverloadWait, 5*time.Millisecond)
	if c.Window == 0 {
		c.Window = 50 * time.Millisecond
	}
	if c.Tolerance == 0 {
		c.Tolerance = 1.5
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.InitialLimit = min(max(c.InitialLimit, c.MinLimit), c.MaxLimit)
}

// Limiter admits requests up to an adaptive limit. It is safe for
// concurrent use.
type Limiter struct {
	cfg Config

	mu       sync.Mutex
	limit    float64
	inflight int
	waiters  []waiter // FIFO
	// slowSince is since when every waiter that left the queue had waited
	// longer than OverloadWait (zero: the last one did not, or the queue
	// emptied).
	slowSince time.Time

	// latency samples of the current window
	winStart time.Time
	winSum   time.Duration
	winN     int
	winPeak  int     // the most requests in flight during the window
	longRTT  float64 // EWMA of window latencies, in seconds
}

// New validates cfg and returns a Limiter.
func New(cfg Config) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Limiter{cfg: cfg, limit: float64(cfg.InitialLimit), winStart: cfg.Now()}, nil
}

// waiter is a request in the queue; a send on slot hands it a slot.
type waiter struct {
	slot  chan struct{}
	since time.Time
}

// left records that a waiter queued since left the queue at now (granted
// or shed). Called with l.mu held, after it is removed.
func (l *Limiter) left(since, now time.Time) {
	switch {
	case len(l.waiters) == 0 || now.Sub(since) <= l.cfg.OverloadWait:
		l.slowSince = time.Time{}
	case l.slowSince.IsZero():
		l.slowSince = now
	}
}

// standing reports whether the queue has been standing for longer than
// OverloadAfter. Called with l.mu held.
func (l *Limiter) standing(now time.Time) bool {
	return !l.slowSince.IsZero() && now.Sub(l.slowSince) > l.cfg.OverloadAfter
}

// Token is an admitted request. Release it exactly once.
type Token struct {
	start time.Time
}

// Acquire admits a request at once, or after waiting at most MaxWait in the
// queue; otherwise it returns ErrShed (also when ctx ends while waiting).
func (l *Limiter) Acquire(ctx context.Context) (Token, error) {
	l.mu.Lock()
	if l.inflight < int(l.limit) && len(l.waiters) == 0 {
		l.inflight++
		l.winPeak = max(l.winPeak, l.inflight)
		l.mu.Unlock()
		return Token{start: l.cfg.Now()}, nil
	}
	if len(l.waiters) >= l.cfg.QueueSize {
		l.mu.Unlock()
		return Token{}, ErrShed
	}
	now := l.cfg.Now()
	wait := l.cfg.MaxWait
	if l.standing(now) {
		wait = l.cfg.OverloadWait
	}
	w := waiter{slot: make(chan struct{}, 1), since: now}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()

	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.slot:
		return Token{start: l.cfg.Now()}, nil
	case <-t.C:
	case <-ctx.Done():
	}
	l.mu.Lock()
	for i, x := range l.waiters {
		if x.slot == w.slot {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			if ctx.Err() == nil { // a client that left says nothing of the queue
				l.left(w.since, l.cfg.Now())
			}
			l.mu.Unlock()
			return Token{}, ErrShed
		}
	}
	l.mu.Unlock()
	// Granted while timing out: the slot is ours; give it back.
	<-w.slot
	l.release(0, false)
	return Token{}, ErrShed
}

// Release ends an admitted request. ok says whether its latency is a fair
// sample of the mesh's (an answer, or a timeout); a request that failed
// fast for another reason should pass false.
func (l *Limiter) Release(t Token, ok bool) {
	l.release(l.cfg.Now().Sub(t.start), ok)
}

func (l *Limiter) release(rtt time.Duration, sample bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sample {
		l.winSum += rtt
		l.winN++
	}
	if now := l.cfg.Now(); now.Sub(l.winStart) >= l.cfg.Window {
		l.adjust()
		l.winStart, l.winSum, l.winN, l.winPeak = now, 0, 0, l.inflight
	}
	if len(l.waiters) > 0 && l.inflight <= int(l.limit) {
		w := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.left(w.since, l.cfg.Now())
		w.slot <- struct{}{} // the slot passes to the waiter; inflight is unchanged
		return
	}
	l.inflight--
}

// adjust recomputes the limit from the window's mean latency. Called with
// l.mu held.
func (l *Limiter) adjust() {
	if l.winN == 0 {
		return
	}
	short := (l.winSum / time.Duration(l.winN)).Seconds()
	if l.longRTT == 0 {
		l.longRTT = short
	} else {
		l.longRTT = 0.95*l.longRTT + 0.05*short
	}
	// Only move while the limit is being used: an idle limit says
	// nothing. Judged by the window's peak, not by the moment it ends:
	// requests that come in bursts (writes released together by one
	// synced commit) use the limit in between.
	if float64(l.winPeak) < l.limit/2 {
		return
	}
	gradient := 1.0 // a window of answers quicker than the clock shows
	if short > 0 {
		gradient = math.Max(0.5, math.Min(1.0, l.cfg.Tolerance*l.longRTT/short))
	}
	next := l.limit*gradient + math.Sqrt(l.limit)
	next = 0.8*l.limit + 0.2*next
	l.limit = math.Min(float64(l.cfg.MaxLimit), math.Max(float64(l.cfg.MinLimit), next))
	// The long-term latency is the baseline queueing is measured against,
	// an average over about 20 windows (a second), as in Gradient2. Once
	// latency falls back well below it (an overload ended), it decays
	// faster, so that the limit can grow again soon. It does not drop to
	// the best single window: the latency of a service that waits on a
	// disk varies from window to window with no queueing in the mesh, and
	// a baseline at its best window read every ordinary one as queueing.
	if l.longRTT > 2*short {
		l.longRTT *= 0.95
	}
}

// Stats is a Limiter's state, for status pages and metrics.
type Stats struct {
	Limit    int
	InFlight int
	Queued   int
}

// Stats reports the current limit, requests in flight and waiting.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Limit: int(l.limit), InFlight: l.inflight, Queued: len(l.waiters)}
}
