package sidecar

import (
	"strings"
	"testing"
)

// countCancels is a canceler that counts its cancels.
type countCancels struct{ n int }

func (c *countCancels) Cancel() { c.n++ }

// TestRunning: a cancel reaches the request with its id, whether the id
// fits in the key (the edge's 16 digits) or not, and only that request; a
// retry with the same id takes the place of the try before it.
func TestRunning(t *testing.T) {
	for _, id := range []string{"0af7651916cd43dd", strings.Repeat("x", 32), strings.Repeat("y", 33), strings.Repeat("z", 200)} {
		var r running
		a, other := &countCancels{}, &countCancels{}
		ka := r.add([]byte(id), a)
		r.add([]byte(id+"-other"), other)
		r.cancel([]byte(id))
		if a.n != 1 || other.n != 0 {
			t.Errorf("id of %d bytes: %d and %d cancels, want 1 and 0", len(id), a.n, other.n)
		}
		r.remove(ka, a) // already gone: a no-op

		retry := &countCancels{}
		kb := r.add([]byte(id), a)
		r.add([]byte(id), retry)
		r.remove(kb, a) // the earlier try ends: the retry stays
		r.cancel([]byte(id))
		if retry.n != 1 || a.n != 1 {
			t.Errorf("id of %d bytes: the retry got %d cancels, the try before %d more; want 1 and 0", len(id), retry.n, a.n-1)
		}
	}
}
