package events

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff yields growing, jittered waits between retries. Use newBackoff;
// not safe for concurrent use.
type backoff struct {
	min, max, next time.Duration
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, next: min}
}

// wait sleeps for the next back-off period or until ctx ends, and reports
// whether ctx is still live.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next
	b.next = min(b.next*2, b.max)
	// ±20% jitter so that many subscribers do not retry in step.
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

func (b *backoff) reset() { b.next = b.min }
