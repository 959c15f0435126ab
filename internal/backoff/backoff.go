// Package backoff paces retries: growing, jittered waits.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields growing, jittered waits between retries. Use New; it is
// not safe for concurrent use.
type Backoff struct {
	min, max, next time.Duration
}

// New returns a Backoff whose waits start at min and double up to max.
func New(min, max time.Duration) *Backoff {
	return &Backoff{min: min, max: max, next: min}
}

// Wait sleeps for the next period or until ctx ends, and reports whether
// ctx is still live.
func (b *Backoff) Wait(ctx context.Context) bool {
	d := b.next
	b.next = min(b.next*2, b.max)
	// ±20% jitter so that many processes do not retry in step.
	d = d - d/5 + rand.N(d*2/5+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Reset starts the waits over at min.
func (b *Backoff) Reset() { b.next = b.min }
