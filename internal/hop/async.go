package hop

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Pending is a request sent with Go, GoIn or GoPartsIn: its answer is
// handed to its receiver on the connection's reader as it arrives, so that
// no goroutine waits for it.
type Pending struct {
	s       *Stream // &stream
	stream  Stream
	maxBody int
	whole   Whole // Go's
	parts   First // GoPartsIn's
	timed   timed // the deadline (zero: none), in the connection's deadlines from Start
	ended   atomic.Bool
}

// Whole takes the outcome of a request sent with Go: the answer, as Call
// returns it, or why there is none.
type Whole interface{ Whole(reply []byte, err error) }

// First takes the outcome of a request sent with GoPartsIn: the answer's
// first frame, or why none came.
type First interface{ First(f Frame, err error) }

// WholeFunc is a function as a Whole (an interface, so that a receiver
// kept per request costs no closure).
type WholeFunc func(reply []byte, err error)

// Whole calls f.
func (f WholeFunc) Whole(reply []byte, err error) { f(reply, err) }

// Go opens a stream on c for a request whose answer, as Call returns it,
// goes to fn: called once, on the connection's reader goroutine (or a
// timer's, or Cancel's caller), so fn must not block for long. Start sends
// the request; until then fn is never called.
func Go(c *Conn, deadline time.Time, maxBody int, fn Whole) (*Pending, error) {
	p := new(Pending)
	if err := GoIn(c, p, deadline, maxBody, fn); err != nil {
		return nil, err
	}
	return p, nil
}

// GoIn is Go with the request made in p, a zero Pending (allocated with
// the caller's own state).
func GoIn(c *Conn, p *Pending, deadline time.Time, maxBody int, fn Whole) error {
	p.maxBody, p.whole = maxBody, fn
	return p.open(c, deadline)
}

// GoPartsIn is GoIn for a request whose answer may come in parts: fn gets
// the answer's first frame, a Reply frame (f.End when the answer is
// whole), or why none came; the rest of an answer in parts is then the
// caller's to read from Stream, and the deadline no longer applies to it.
func GoPartsIn(c *Conn, p *Pending, deadline time.Time, fn First) error {
	p.parts = fn
	return p.open(c, deadline)
}

// open opens p's stream on c, in p: one allocation for both.
func (p *Pending) open(c *Conn, deadline time.Time) error {
	if err := c.openAs(&p.stream); err != nil {
		return err
	}
	p.s = &p.stream
	p.timed = newTimed(deadline, p)
	return nil
}

// Stream is the request's stream.
func (p *Pending) Stream() *Stream { return p.s }

// Start sends payload, a marshalled wire.Request whose body is whole, as
// the stream's Request frame. When it fails nothing was sent and the
// function is never called.
func (p *Pending) Start(payload []byte) error {
	if !p.timed.at.IsZero() {
		d := time.Until(p.timed.at)
		if d <= 0 {
			p.abandon()
			return ErrTimeout
		}
		// A deadline that passes before the request is out calls the
		// function: then Start reports success whatever Send does.
		p.s.c.deadlines.add(&p.timed)
	}
	// Set under the stream's lock, which the reader takes to hand over the
	// answer: what the caller did before Start is visible to the function.
	p.s.mu.Lock()
	p.s.complete = p
	p.s.mu.Unlock()
	if err := p.s.Send(TypeRequest, true, payload); err != nil && p.abandon() {
		return err
	}
	return nil
}

// Cancel gives up on the request: the peer is told, and the function gets
// ErrCanceled unless the answer came first.
func (p *Pending) Cancel() { p.stop(ErrCanceled) }

// expire is stop for the deadline, on the connection's timer's goroutine.
func (p *Pending) expire() { p.stop(ErrTimeout) }

// abandon ends a request that was never sent, without calling the
// function, and reports whether it did: false when the function has been
// called already.
func (p *Pending) abandon() bool {
	if !p.claim() {
		return false
	}
	p.s.Close()
	return true
}

// stop ends the request for err, cancelling it at the peer.
func (p *Pending) stop(err error) {
	if p.claim() {
		p.s.Close()
		p.call(Frame{}, nil, err)
	}
}

// claim reports whether this is the request's end, the first: only that
// calls the function.
func (p *Pending) claim() bool {
	if !p.ended.CompareAndSwap(false, true) {
		return false
	}
	if !p.timed.at.IsZero() {
		p.s.c.deadlines.remove(&p.timed)
	}
	return true
}

// call hands the outcome to the function: f to GoPartsIn's, reply to Go's.
func (p *Pending) call(f Frame, reply []byte, err error) {
	if p.parts != nil {
		p.parts.First(f, err)
	} else {
		p.whole.Whole(reply, err)
	}
}

// first takes the stream's first frame, or why none will come. For Go, an
// answer whose body follows in parts is put together on a goroutine of its
// own.
func (p *Pending) first(f Frame, err error) {
	switch {
	case err != nil:
		if p.claim() {
			p.call(Frame{}, nil, err)
		}
	case f.Type != TypeReply:
		p.s.Close()
		if p.claim() {
			p.call(Frame{}, nil, fmt.Errorf("%w: frame type %d before the reply", ErrProtocol, f.Type))
		}
	case p.parts != nil || f.End:
		if p.claim() {
			p.call(f, f.Payload, nil)
		}
	default:
		go func() {
			reply, err := gather(p.s, f, p.timed.at, p.maxBody, nil)
			if p.claim() {
				p.whole.Whole(reply, err)
			}
		}()
	}
}
