package hop

import (
	"container/heap"
	"sync"
	"time"
)

// deadlines times a connection's pending requests (Go, GoParts) with one
// timer for all of them instead of one each: a heap by deadline, and a
// timer set for the earliest deadline it has seen. A request answered in
// time leaves the heap and the timer as it is; when the timer fires it
// expires what is due and sets itself for the earliest deadline left. As
// requests of one service mostly share one timeout, it fires about once a
// timeout while requests flow, not once a request, and costs a request no
// allocation.
type deadlines struct {
	mu    sync.Mutex
	h     pendingHeap
	timer *time.Timer // nil until the first deadline
	armed time.Time   // when timer fires; zero: it is stopped
}

// add times p, whose deadline is set.
func (d *deadlines) add(p *Pending) {
	d.mu.Lock()
	heap.Push(&d.h, p)
	if d.armed.IsZero() || p.deadline.Before(d.armed) {
		d.arm(p.deadline)
	}
	d.mu.Unlock()
}

// remove stops timing p; it is a no-op for a p not (or no longer) timed.
func (d *deadlines) remove(p *Pending) {
	d.mu.Lock()
	if p.index >= 0 {
		heap.Remove(&d.h, p.index)
	}
	d.mu.Unlock()
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
	var due []*Pending
	d.mu.Lock()
	for len(d.h) > 0 && !d.h[0].deadline.After(now) {
		due = append(due, heap.Pop(&d.h).(*Pending))
	}
	d.armed = time.Time{}
	if len(d.h) > 0 {
		d.arm(d.h[0].deadline)
	}
	d.mu.Unlock()
	for _, p := range due {
		p.expire()
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

// pendingHeap orders pending requests by deadline; each knows its index.
type pendingHeap []*Pending

func (h pendingHeap) Len() int           { return len(h) }
func (h pendingHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h pendingHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *pendingHeap) Push(x any) {
	p := x.(*Pending)
	p.index = len(*h)
	*h = append(*h, p)
}
func (h *pendingHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.index = -1
	return p
}
