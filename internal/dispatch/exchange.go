package dispatch

import (
	"context"
	"fmt"
	"time"

	"go.nanomsg.org/mangos/v3"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// Exchange carries the parts of one request served in parts (DATA and
// PULL envelopes) to the instance that took its first envelope. Parts are
// never retried: the instance holds the request's state. Its methods may
// be called from two goroutines at once (one sending the body, one pulling
// the answer), each with one part in flight.
type Exchange struct {
	d  *Dispatcher
	p  *peer
	id string
}

// Instance is the address of the instance serving the exchange.
func (x *Exchange) Instance() string { return x.p.addr }

// Send sends env, a part of the exchange, and returns its answer, waiting
// up to wait (0: as long as ctx allows). The error wraps ErrUnavailable,
// ErrDeadline, ErrClosed or ctx's error.
func (x *Exchange) Send(ctx context.Context, env *wire.Request, wait time.Duration) (*wire.Reply, error) {
	env.Id = x.id
	msg, err := encode(env)
	if err != nil {
		return nil, err
	}
	l, err := x.p.link()
	if err != nil {
		msg.Free()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, x.p.addr, err)
	}
	sl, err := l.getSlot()
	if err != nil {
		msg.Free()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, x.p.addr, err)
	}
	reusable := true
	defer func() {
		if reusable {
			l.putSlot(sl)
		} else {
			sl.close()
		}
	}()
	if ctx.Done() != nil {
		stop := sl.follow(ctx, x.d, l, "")
		defer func() {
			if !stop() {
				reusable = false
			}
		}()
	}
	// A part waits for the instance as long as its answer may (0: ctx
	// alone bounds it): under load the connection's queue may be slow.
	sl.arm(wait)
	err = sl.mc.SendMsg(msg)
	if !sl.disarm() {
		reusable = false
	}
	if err != nil {
		msg.Free()
		reusable = false
		if sl.timedOut(err) {
			err = mangos.ErrSendTimeout
		}
		return nil, x.failed(ctx, "sending to", err)
	}
	sl.arm(wait)
	rm, err := sl.mc.RecvMsg()
	if !sl.disarm() {
		reusable = false
	}
	if err != nil {
		reusable = false
		if sl.timedOut(err) {
			return nil, fmt.Errorf("%w: waiting for %s", ErrDeadline, x.p.addr)
		}
		return nil, x.failed(ctx, "waiting for", err)
	}
	reply, err := decode(rm)
	if err != nil {
		return nil, fmt.Errorf("%w: reply from %s: %w", ErrUnavailable, x.p.addr, err)
	}
	return reply, nil
}

func (x *Exchange) failed(ctx context.Context, doing string, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctxError(ctx)
	case x.d.isClosed():
		return ErrClosed
	}
	return fmt.Errorf("%w: %s %s: %w", ErrUnavailable, doing, x.p.addr, err)
}

// Cancel tells the instance that the exchange is given up, so that its
// handler stops; best effort, in the background.
func (x *Exchange) Cancel() {
	if l, err := x.p.link(); err == nil {
		x.d.cancelRemote(l, x.id)
	}
}
