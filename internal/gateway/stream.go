package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/griddle-mesh/griddle/internal/dispatch"
	"github.com/griddle-mesh/griddle/internal/wire"
)

const (
	// inlineBody is the largest request body of known length sent whole in
	// the first envelope; larger ones, and those of unknown length, stream.
	inlineBody = 1 << 20
	// partSize is the most body bytes one DATA envelope carries.
	partSize = 256 << 10
	// idleMargin is how much longer than the instance's idle timeout the
	// gateway waits for a part, so that the instance's end arrives first.
	idleMargin = 5 * time.Second
)

// stream carries an exchange in parts between the client and the
// instance: the rest of the request's body up in DATA envelopes, the
// answer down from PULL envelopes, each written and flushed as it comes.
// first is the reply to the opening envelope: the answer's head with the
// first of its body, or (for a body that follows) only an acknowledgement.
// body is what is left of the request's body (nil: none). release gives
// back the admission slot; it runs once the head is in.
func (g *Gateway) stream(w http.ResponseWriter, r *http.Request, body io.Reader, req *wire.Request, first *wire.Reply, x *dispatch.Exchange, deadline time.Time, release func()) int {
	ctx, cancel := context.WithCancel(r.Context())
	var wg sync.WaitGroup
	uploaded := make(chan struct{})
	var bodyRead atomic.Bool // the uploader has read the client's body to its end
	defer func() {
		cancel()
		select {
		case <-uploaded:
		default:
			// The uploader may sit in a read of the client's body, which
			// no context reaches: a read deadline in the past ends it. Not
			// once the body is read: net/http then reads the connection
			// on its own, and a deadline past would cancel the
			// connection's next request.
			if !bodyRead.Load() {
				_ = http.NewResponseController(w).SetReadDeadline(time.Now())
			}
		}
		wg.Wait()
	}()
	finished := false
	defer func() {
		if !finished {
			x.Cancel() // the instance stops its handler
		}
	}()

	idle := time.Duration(req.GetIdleNanos())
	if idle <= 0 {
		idle = wire.DefaultIdle
	}
	longLived := req.GetLongLived()
	// wait is how long one PULL may wait: until the deadline, or while a
	// long-lived answer stays idle.
	wait := func() time.Duration {
		if longLived || deadline.IsZero() {
			return idle + idleMargin
		}
		return max(time.Until(deadline), time.Millisecond)
	}
	pull := func() (*wire.Reply, error) {
		return x.Send(ctx, &wire.Request{Part: wire.Part_PART_PULL}, wait())
	}

	rc := http.NewResponseController(w)
	var tooLarge atomic.Bool
	if req.GetBodyFollows() && !req.GetUpgrade() && body != nil {
		// The server's whole-request read timeout would cut a long upload
		// off; the request's own deadline (or idle timeout) bounds it.
		_ = rc.SetReadDeadline(time.Time{})
		wg.Go(func() {
			defer close(uploaded)
			if err := g.upload(ctx, body, r, x, cancel, strings.EqualFold(r.Header.Get("Expect"), "100-continue"), &bodyRead); err != nil {
				_, big := errors.AsType[*http.MaxBytesError](err)
				tooLarge.Store(big)
			}
		})
	} else {
		close(uploaded)
	}
	head := first
	if !first.GetHead() { // the opening was only acknowledged: the head comes by PULL
		var err error
		if head, err = pull(); err != nil {
			release()
			if tooLarge.Load() {
				return g.fail(w, r, http.StatusRequestEntityTooLarge, "body_too_large", "request body too large", nil)
			}
			return g.failDispatch(w, r, err)
		}
		if head.GetCode() != wire.Code_CODE_OK {
			release()
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				// The instance ended the exchange at its deadline before
				// this pull came: whatever it says, the deadline passed.
				return g.failDispatch(w, r, fmt.Errorf("%w: %s", dispatch.ErrDeadline, head.GetMessage()))
			}
			return g.failCode(w, r, head)
		}
	}
	release()
	if head.GetHijacked() {
		finished = g.spliceUpgrade(ctx, w, head, x, pull, idle)
		return http.StatusSwitchingProtocols
	}
	if !head.GetMore() { // whole after all
		finished = true
		w.Header().Set(wire.HeaderRequestID, req.Id)
		_ = head.WriteHTTP(w)
		return head.FigureStatus()
	}
	if wire.LongLived(wire.HeaderValue(head.GetHeaders(), "Content-Type")) {
		longLived = true
	}
	w.Header().Set(wire.HeaderRequestID, req.Id)
	head.WriteHead(w)
	part := head
	for {
		if longLived {
			// No whole-answer write timeout: only a client that stops
			// reading for the idle timeout is cut off.
			_ = rc.SetWriteDeadline(time.Now().Add(idle + idleMargin))
		}
		if len(part.GetBody()) > 0 {
			if _, err := w.Write(part.GetBody()); err != nil {
				return int(head.GetStatus()) // the client went away; the deferred cancel tells the instance
			}
		}
		if !part.GetMore() {
			wire.WriteTrailers(w, part.GetTrailers())
			finished = true
			if c, ok := wire.GRPCStatus(head.GetHeaders(), part.GetTrailers()); ok && head.GetStatus() == http.StatusOK {
				return wire.GRPCHTTPStatus(c)
			}
			return int(head.GetStatus())
		}
		_ = rc.Flush()
		var err error
		if part, err = pull(); err == nil && part.GetCode() != wire.Code_CODE_OK {
			err = errors.New(part.GetCode().String() + ": " + part.GetMessage())
		}
		if err != nil {
			// The head is out: all that is left is to break the answer
			// off, so that the client sees it incomplete, as net/http's
			// reverse proxy does.
			g.log.Warn("answer broken off", "request", req.Id, "instance", x.Instance(), "err", err)
			panic(http.ErrAbortHandler)
		}
	}
}

// upload sends the rest of the request body from body (which belongs to r)
// in DATA envelopes, one at a time, each after the last was taken: the
// handler's reading paces it. Each carries what one read gave, so that
// what the client sends moves on at once (a message of a bidirectional
// stream). The last carries r's trailers. A failure cancels the exchange
// (cancel); a failed read of the body is returned. read is set once body
// has been read to its end.
func (g *Gateway) upload(ctx context.Context, body io.Reader, r *http.Request, x *dispatch.Exchange, cancel context.CancelFunc, ask bool, read *atomic.Bool) error {
	seq := uint32(1)
	if ask { // first an empty part: does the handler want the body?
		reply, err := x.Send(ctx, &wire.Request{Part: wire.Part_PART_DATA, Seq: seq}, 0)
		if err != nil || reply.GetCode() != wire.Code_CODE_OK || !reply.GetMore() {
			return nil // it answered without: the body stays unread
		}
		seq++
	}
	bp := partBufs.Get().(*[]byte)
	defer partBufs.Put(bp)
	buf := *bp
	for ; ; seq++ {
		n, err := body.Read(buf)
		end := err == io.EOF
		if end {
			read.Store(true)
		}
		if n == 0 && err == nil {
			seq--
			continue
		}
		if err != nil && !end {
			g.log.Info("request body broken off", "err", err)
			cancel()
			return err
		}
		env := &wire.Request{Part: wire.Part_PART_DATA, Seq: seq, Body: buf[:n], End: end}
		if end && r != nil && len(r.Trailer) > 0 {
			env.Trailers = wire.EncodeTrailers(r.Trailer)
		}
		reply, err := x.Send(ctx, env, 0)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				g.log.Info("sending the request body failed", "instance", x.Instance(), "err", err)
				cancel()
			}
			return nil
		case reply.GetCode() != wire.Code_CODE_OK:
			g.log.Info("request body refused", "instance", x.Instance(), "code", reply.GetCode(), "message", reply.GetMessage())
			cancel()
			return nil
		case end || !reply.GetMore(): // all sent, or the handler reads no more
			return nil
		}
	}
}

// spliceUpgrade joins the client's connection, taken over from w, with a
// handler that took its side over (head): raw bytes both ways until either
// side ends. It reports whether the exchange ended of itself.
func (g *Gateway) spliceUpgrade(ctx context.Context, w http.ResponseWriter, head *wire.Reply, x *dispatch.Exchange, pull func() (*wire.Reply, error), idle time.Duration) bool {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		g.log.Warn("upgrade: the client's connection cannot be taken over", "err", err)
		return false
	}
	_ = conn.SetDeadline(time.Time{}) // the server's request timeouts end here
	if f, ok := conn.(interface{ EndFraming() }); ok {
		f.EndFraming() // what follows is the upgraded protocol's, not HTTP/1's
	}
	var wg sync.WaitGroup
	defer wg.Wait() // last: the closed conn ends the uploader's read
	defer conn.Close()
	upCtx, stop := context.WithCancel(ctx)
	defer stop()
	// Up: what the client sends after its request (some may already sit in
	// brw's buffer).
	wg.Go(func() {
		defer stop()
		_ = g.upload(upCtx, io.MultiReader(brw.Reader, conn), nil, x, stop, false, new(atomic.Bool))
	})
	// Down: what the handler writes, as it comes.
	part := head
	for {
		if len(part.GetBody()) > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(idle + idleMargin))
			if _, err := conn.Write(part.GetBody()); err != nil {
				return false
			}
		}
		if !part.GetMore() {
			closeWrite(conn)
			return true
		}
		if part, err = pull(); err != nil || part.GetCode() != wire.Code_CODE_OK {
			return false
		}
	}
}

// endProbe is how long probeEnd waits for a body's end.
const endProbe = time.Millisecond

// probeEnd waits up to endProbe for the next read of body: ended reports
// that it was the body's end. Otherwise the read goes on in the
// background, and rest reads its result first, then the rest of body.
func probeEnd(body io.Reader) (rest io.Reader, ended bool) {
	ch := make(chan readResult, 1)
	go func() {
		bp := partBufs.Get().(*[]byte)
		n, err := body.Read(*bp)
		ch <- readResult{bp, (*bp)[:n], err}
	}()
	t := time.NewTimer(endProbe)
	defer t.Stop()
	select {
	case res := <-ch:
		if len(res.b) == 0 && res.err == io.EOF {
			partBufs.Put(res.buf)
			return body, true
		}
		return &pendingReader{ch: nil, res: &res, body: body}, false
	case <-t.C:
		return &pendingReader{ch: ch, body: body}, false
	}
}

// partBufs are buffers of partSize for the parts of streamed bodies.
var partBufs = sync.Pool{New: func() any { b := make([]byte, partSize); return &b }}

type readResult struct {
	buf *[]byte // from partBufs, given back once b is read
	b   []byte
	err error
}

// pendingReader reads the result of a read begun elsewhere, then body.
type pendingReader struct {
	ch   chan readResult // the read under way, or nil
	res  *readResult     // its result, once in
	body io.Reader
}

func (p *pendingReader) Read(b []byte) (int, error) {
	if p.ch != nil {
		res := <-p.ch
		p.ch, p.res = nil, &res
	}
	if p.res != nil {
		n := copy(b, p.res.b)
		p.res.b = p.res.b[n:]
		if len(p.res.b) == 0 {
			err := p.res.err
			partBufs.Put(p.res.buf)
			p.res = nil
			return n, err
		}
		return n, nil
	}
	return p.body.Read(b)
}

// closeWrite ends the client's side of a spliced connection.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
