package hop

import (
	"container/heap"
	"sync"
	"time"
)

// deadlines times what a connection waits for (its side's pending
// requests, Go and GoPartsIn, and the deadlines of the requests it serves)
// with one timer for all of them instead of one each: a heap by deadline, and a
// timer set for the earliest deadline it has seen. A request answered in
// time leaves the heap and the timer as it is; when the timer fires it
// expires what is due and sets itself for the earliest deadline left. As
// requests of one service mostly share one timeout, it fires about once a
// timeout while requests flow, not once a request, and costs a request no
// allocation.
type deadlines struct {
	mu    sync.Mutex
	h     timedHeap
	timer *time.Timer // nil until the first deadline
	armed time.Time   // when timer fires; zero: it is stopped
}

// timed is an entry of deadlines: what expires, at when.
type timed struct {
	at    time.Time
	index int     // in the heap (deadlines.mu); -1: not there
	what  expirer // set once, with at
}

// expirer is what a deadline ends: called once, on the timer's goroutine.
type expirer interface{ expire() }

func newTimed(at time.Time, what expirer) timed { return timed{at: at, index: -1, what: what} }

// add times t.
func (d *deadlines) add(t *timed) {
	d.mu.Lock()
	heap.Push(&d.h, t)
	if d.armed.IsZero() || t.at.Before(d.armed) {
		d.arm(t.at)
	}
	d.mu.Unlock()
}

// remove stops timing t, and reports whether it did: false when t was not
// (or is no longer) timed, its deadline passed.
func (d *deadlines) remove(t *timed) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&d.h, t.index)
	return true
}

// arm sets the timer to fire at t (d.mu held).
func (d *deadlines) arm(t time.Time) {
	d.armed = t
	if d.timer == nil {
		d.timer = time.AfterFunc(time.Until(t), d.fire)
		return
	}
	d.timer.Reset(time.Until(t))
}

// fire expires the requests that are due, on the timer's goroutine, and
// sets the timer for the next deadline.
func (d *deadlines) fire() {
	now := time.Now()
	var due []expirer
	d.mu.Lock()
	for len(d.h) > 0 && !d.h[0].at.After(now) {
		due = append(due, heap.Pop(&d.h).(*timed).what)
	}
	d.armed = time.Time{}
	if len(d.h) > 0 {
		d.arm(d.h[0].at)
	}
	d.mu.Unlock()
	for _, e := range due {
		e.expire()
	}
}

// stop stops the timer; the connection has closed, and its streams' end
// ends the requests.
func (d *deadlines) stop() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.armed = time.Time{}
	d.mu.Unlock()
}

// timedHeap orders entries by deadline; each knows its index.
type timedHeap []*timed

func (h timedHeap) Len() int           { return len(h) }
func (h timedHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timedHeap) Push(x any) {
	t := x.(*timed)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timedHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
