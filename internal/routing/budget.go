package routing

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults of RetryPolicy's budget fields.
const (
	DefaultBudget       = 0.1 // RetryPolicy.Budget "" means 10%
	DefaultMinPerSecond = 10  // RetryPolicy.MinPerSecond 0 means 10
)

// ParseBudget reads a retry budget such as "10%" as a ratio (0.1). The
// percentage must be above 0 and at most 100; "" is DefaultBudget. Errors
// wrap ErrInvalid.
func ParseBudget(s string) (float64, error) {
	if s == "" {
		return DefaultBudget, nil
	}
	num, ok := strings.CutSuffix(s, "%")
	f, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || !(f > 0 && f <= 100) {
		return 0, fmt.Errorf("%w: budget %q must be a percentage above 0%% and at most 100%%", ErrInvalid, s)
	}
	return f / 100, nil
}

// NewBudget returns the retry budget the policy describes, with defaults
// for unset fields. p must be valid.
func (p *RetryPolicy) NewBudget() *Budget {
	ratio, err := ParseBudget(p.Budget)
	if err != nil {
		ratio = DefaultBudget
	}
	floor := p.MinPerSecond
	if floor == 0 {
		floor = DefaultMinPerSecond
	}
	return NewBudget(ratio, floor)
}

// micro is the number of micro-tokens in one token: the budget counts in
// micro-tokens so that ratios such as 0.1 deposit whole numbers.
const micro = 1_000_000

// maxFloor bounds minPerSecond so that the arithmetic cannot overflow.
const maxFloor = 1_000_000

// Budget caps retries at a share of live requests plus a small floor, so
// that retries cannot multiply an outage (Finagle's and Linkerd's retry
// budget). It is a token bucket: each live request deposits ratio of a
// token, time deposits minPerSecond tokens per second, each retry takes
// one token, and the bucket holds at most 10 seconds of the floor plus
// ratio*1000 tokens. It starts with one second of the floor.
//
// A Budget is safe for concurrent use and lock-free. Use one per service
// (or per destination) and keep it across rule revisions.
type Budget struct {
	deposit  int64 // micro-tokens per live request
	floor    int64 // tokens per second
	capacity int64 // micro-tokens
	now      func() time.Time
	tokens   atomic.Int64 // micro-tokens
	last     atomic.Int64 // time of the last floor deposit, in nanoseconds since the epoch
}

// NewBudget returns a budget that lets retries add ratio (0.1 = 10%) to
// live requests, and at least minPerSecond retries per second. Negative
// or NaN values count as 0; ratio is capped at 1, minPerSecond at 1e6.
func NewBudget(ratio float64, minPerSecond int) *Budget {
	return newBudget(ratio, minPerSecond, time.Now)
}

// newBudget is NewBudget with a clock.
func newBudget(ratio float64, minPerSecond int, now func() time.Time) *Budget {
	if !(ratio > 0) {
		ratio = 0
	}
	ratio = math.Min(ratio, 1)
	floor := int64(max(0, min(minPerSecond, maxFloor)))
	deposit := int64(math.Round(ratio * micro))
	b := &Budget{
		deposit:  deposit,
		floor:    floor,
		capacity: 10*floor*micro + 1000*deposit,
		now:      now,
	}
	b.tokens.Store(min(floor*micro, b.capacity))
	b.last.Store(now().UnixNano())
	return b
}

// Request records one live request.
func (b *Budget) Request() { b.add(b.deposit) }

// TryRetry takes a token for one retry and reports whether there was one.
// A false answer means the retry must not be made.
func (b *Budget) TryRetry() bool {
	b.refill()
	for {
		t := b.tokens.Load()
		if t < micro {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-micro) {
			return true
		}
	}
}

// refill deposits the floor for the time since the last deposit.
func (b *Budget) refill() {
	if b.floor == 0 {
		return
	}
	now := b.now().UnixNano()
	last := b.last.Load()
	elapsed := now - last
	// micro-tokens = elapsed ns * floor tokens/s * micro / 1e9 = elapsed*floor/1000;
	// past 20 s the bucket is full anyway.
	elapsed = min(elapsed, 20*int64(time.Second))
	add := elapsed / 1000 * b.floor
	if add <= 0 {
		return
	}
	if b.last.CompareAndSwap(last, now) { // one of racing callers deposits
		b.add(add)
	}
}

// add deposits n micro-tokens, up to the capacity.
func (b *Budget) add(n int64) {
	for {
		t := b.tokens.Load()
		v := min(t+n, b.capacity)
		if v == t || b.tokens.CompareAndSwap(t, v) {
			return
		}
	}
}
