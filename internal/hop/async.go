package hop

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Pending is a request sent with Go: its answer is handed to a function on
// the connection's reader as it arrives, so that no goroutine waits for it.
type Pending struct {
	s        *Stream
	deadline time.Time
	maxBody  int
	fn       func(reply []byte, err error)
	timer    atomic.Pointer[time.Timer] // set by Start; Cancel may race with it
	ended    atomic.Bool
}

// Go opens a stream on c for a request whose answer, as Call returns it,
// goes to fn: called once, on the connection's reader goroutine (or a
// timer's, or Cancel's caller), so fn must not block for long. Start sends
// the request; until then fn is never called.
func Go(c *Conn, deadline time.Time, maxBody int, fn func(reply []byte, err error)) (*Pending, error) {
	s, err := c.Open()
	if err != nil {
		return nil, err
	}
	return &Pending{s: s, deadline: deadline, maxBody: maxBody, fn: fn}, nil
}

// Start sends payload, a marshalled wire.Request whose body is whole, as
// the stream's Request frame. When it fails nothing was sent and fn is
// never called.
func (p *Pending) Start(payload []byte) error {
	if !p.deadline.IsZero() {
		d := time.Until(p.deadline)
		if d <= 0 {
			p.abandon()
			return ErrTimeout
		}
		// A timer that fires before the request is out calls fn: then
		// Start reports success whatever Send does, as fn has the outcome.
		p.timer.Store(time.AfterFunc(d, p.expire))
	}
	// Set under the stream's lock, which the reader takes to hand over the
	// answer: what the caller did before Start is visible to fn.
	p.s.mu.Lock()
	p.s.complete = p.first
	p.s.mu.Unlock()
	if err := p.s.Send(TypeRequest, true, payload); err != nil && p.abandon() {
		return err
	}
	return nil
}

// Cancel gives up on the request: the peer is told, and fn gets
// ErrCanceled unless the answer came first.
func (p *Pending) Cancel() { p.stop(ErrCanceled) }

// abandon ends a request that was never sent, without calling fn, and
// reports whether it did: false when fn has been called already.
func (p *Pending) abandon() bool {
	if !p.ended.CompareAndSwap(false, true) {
		return false
	}
	if t := p.timer.Load(); t != nil {
		t.Stop()
	}
	p.s.Close()
	return true
}

// stop ends the request for err, cancelling it at the peer.
func (p *Pending) stop(err error) {
	if p.ended.CompareAndSwap(false, true) {
		if t := p.timer.Load(); t != nil {
			t.Stop()
		}
		p.s.Close()
		p.fn(nil, err)
	}
}

// expire is stop for the deadline, on the timer's goroutine.
func (p *Pending) expire() { p.stop(ErrTimeout) }

// end hands the outcome to fn, unless the request ended already.
func (p *Pending) end(reply []byte, err error) {
	if p.ended.CompareAndSwap(false, true) {
		if t := p.timer.Load(); t != nil {
			t.Stop()
		}
		p.fn(reply, err)
	}
}

// first takes the stream's first frame, or why none will come. An answer
// whose body follows in parts is put together on a goroutine of its own.
func (p *Pending) first(f Frame, err error) {
	switch {
	case err != nil:
		p.end(nil, err)
	case f.Type != TypeReply:
		p.s.Close()
		p.end(nil, fmt.Errorf("%w: frame type %d before the reply", ErrProtocol, f.Type))
	case f.End:
		p.end(f.Payload, nil)
	default:
		go func() {
			reply, err := gather(p.s, f, p.deadline, p.maxBody, nil)
			p.end(reply, err)
		}()
	}
}
