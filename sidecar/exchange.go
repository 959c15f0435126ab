package sidecar

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/metrics"
	"github.com/griddle-mesh/griddle/internal/pluginhost"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// An exchange is a request served in parts (see envelope.proto): its body
// streams in DATA envelopes, its answer goes back in the answers to PULL
// envelopes. The sidecar relays between those envelopes and the frames of
// one hop stream to the handler; the hop's windows and the one-in-flight
// rule of each direction bound what it holds to a part each way.
type exchange struct {
	s       *hop.Stream
	id      string
	upgrade string // the protocol of an upgrade ("websocket"), "" for none

	// pullMu and dataMu keep one PULL and one DATA at a time.
	pullMu, dataMu sync.Mutex
	headOut        bool // the answer's head went back (pullMu)
	seq            uint32

	idleFor time.Duration // the idle timeout, should the exchange become long-lived

	mu       sync.Mutex
	idle     time.Duration // > 0: long-lived, ended after this long without a part
	deadline time.Time     // otherwise: ended at this time
	timer    *time.Timer
	done     chan struct{} // closed when the exchange ends
	ended    bool
	drained  bool   // ended by the sidecar's drain: the answer ends cleanly
	closing  []byte // the last part when drained (a WebSocket close frame)
}

// maxPart bounds the body bytes of one answer to a PULL.
const maxPart = 256 << 10

// exchanges are the exchanges in progress, by request id.
type exchanges struct {
	mu sync.Mutex
	m  map[string]*exchange
}

// add registers x, ending it on its deadline or when idle.
func (xs *exchanges) add(x *exchange) {
	x.done = make(chan struct{})
	x.mu.Lock() // the timer may fire at once: end waits for it to be set
	x.timer = time.AfterFunc(x.wait(), func() { xs.abort(x) })
	x.mu.Unlock()
	xs.mu.Lock()
	if xs.m == nil {
		xs.m = make(map[string]*exchange)
	}
	if old := xs.m[x.id]; old != nil { // a retry that takes an earlier try's place
		defer old.end()
	}
	xs.m[x.id] = x
	xs.mu.Unlock()
}

func (xs *exchanges) get(id []byte) *exchange {
	xs.mu.Lock()
	defer xs.mu.Unlock()
	return xs.m[string(id)]
}

// remove forgets x once it has ended.
func (xs *exchanges) remove(x *exchange) {
	xs.mu.Lock()
	if xs.m[x.id] == x {
		delete(xs.m, x.id)
	}
	xs.mu.Unlock()
	x.end()
}

// abort ends x, cancelling the handler's stream.
func (xs *exchanges) abort(x *exchange) {
	xs.remove(x)
	x.s.Close()
}

// cancel aborts the exchange with id, if there is one.
func (xs *exchanges) cancel(id []byte) {
	if x := xs.get(id); x != nil {
		xs.abort(x)
	}
}

// drain ends the long-lived exchanges (event streams, upgrades) so that a
// draining sidecar need not wait for them: the next part each gets says
// the answer ended (for a WebSocket, after a close frame, "going away").
func (xs *exchanges) drain() {
	xs.mu.Lock()
	var long []*exchange
	for _, x := range xs.m {
		x.mu.Lock()
		if x.idle > 0 {
			long = append(long, x)
			x.drained = true
			if x.upgrade == "websocket" {
				x.closing = wsGoingAway
			}
		}
		x.mu.Unlock()
	}
	xs.mu.Unlock()
	for _, x := range long {
		x.end()
	}
}

// wsGoingAway is a server's WebSocket close frame with status 1001.
var wsGoingAway = []byte{0x88, 0x02, 0x03, 0xe9}

// wait is how long x may go without a part.
func (x *exchange) wait() time.Duration {
	if x.idle > 0 {
		return x.idle
	}
	return time.Until(x.deadline)
}

// touch restarts the idle timer of a long-lived exchange.
func (x *exchange) touch() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.idle > 0 && !x.ended {
		x.timer.Reset(x.idle)
	}
}

// longLived makes x long-lived from now on.
func (x *exchange) longLived() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.idle == 0 && !x.ended {
		x.idle = x.idleFor
		x.timer.Reset(x.idle)
	}
}

func (x *exchange) end() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.ended {
		x.ended = true
		x.timer.Stop()
		close(x.done)
	}
}

// openParts starts the request of the marshalled envelope body (head is
// its Head) as an exchange, or as a plain request whose answer may come in
// parts. deadline bounds the wait for the answer's head; wait is the same
// on this process's clock.
func (s *Sidecar) openParts(head wire.Head, body []byte, deadline, wait time.Time, canceled <-chan struct{}) ([]byte, int) {
	id := head.ID
	st, err := s.host.Load().Open(body, !head.BodyFollows)
	if err != nil {
		return s.hopFailure(id, err)
	}
	if head.BodyFollows {
		// The answer comes by PULL, while the body goes on in DATA.
		s.exchanges.add(newExchange(head, st, deadline, body))
		b, _ := proto.Marshal(&wire.Reply{Id: string(id), More: true, ServedBy: s.cfg.ID})
		return b, 0 // counted when its head goes back (pull)
	}
	f, err := st.Recv(wait, canceled)
	if err != nil {
		st.Close()
		return s.hopFailure(id, err)
	}
	return s.first(head, st, f, deadline, wait, body)
}

// first is the reply to the first frame f of the answer on st to the
// request with head (its envelope env): the whole answer, or its head
// when the body follows in parts, which then goes on as an exchange.
func (s *Sidecar) first(head wire.Head, st *hop.Stream, f hop.Frame, deadline, wait time.Time, env []byte) ([]byte, int) {
	id := head.ID
	if f.End { // whole: as a plain request
		if !time.Now().Before(wait) {
			// An answer at or past the deadline (a handler that answers
			// when its context expires) is a deadline missed.
			return s.codeReply(id, wire.Code_CODE_DEADLINE_EXCEEDED, "answered past the deadline")
		}
		return s.answer(id, f.Payload)
	}
	x := newExchange(head, st, deadline, env)
	s.exchanges.add(x)
	reply, status := s.head(x, f)
	if reply == nil {
		s.exchanges.abort(x)
		return s.codeReply(id, wire.Code_CODE_INTERNAL, "undecodable answer from the handler")
	}
	return reply, status
}

// newExchange is the exchange of the request with head (its envelope
// env) on st.
func newExchange(head wire.Head, st *hop.Stream, deadline time.Time, env []byte) *exchange {
	x := &exchange{s: st, id: string(head.ID), deadline: deadline, idleFor: head.IdleTimeout()}
	if head.LongLived {
		x.idle = x.idleFor
	}
	if head.Upgrade {
		x.upgrade = upgradeOf(env)
	}
	return x
}

// upgradeOf is the protocol an upgrade request asks for, lower case.
func upgradeOf(env []byte) string {
	var r wire.Request
	if err := r.UnmarshalShared(env); err != nil {
		return ""
	}
	return strings.ToLower(wire.HeaderValue(r.GetHeaders(), "Upgrade"))
}

// answer is the marshalled reply for the handler's answer payload (a
// marshalled wire.Reply), with this instance's fields added.
func (s *Sidecar) answer(id, payload []byte) ([]byte, int) {
	status, code, err := wire.PeekReply(payload)
	if err != nil {
		return s.codeReply(id, wire.Code_CODE_INTERNAL, "undecodable answer from the handler")
	}
	payload = wire.AppendReplyFields(payload, id, s.cfg.ID, wire.HeaderVersion, s.cfg.Version)
	if code == wire.Code_CODE_OK && status >= 500 && s.storeUnreachable() {
		// The handler failed while this instance cannot reach its store:
		// the cause is the instance's, not the request's, and another
		// instance may well serve it.
		payload = wire.AppendUnhealthy(payload)
	}
	if code != wire.Code_CODE_OK {
		return payload, code.HTTPStatus()
	}
	return payload, int(status)
}

// storeUnreachable reports whether this instance has lost its link to
// the store (storehttp.Client.Reachable).
func (s *Sidecar) storeUnreachable() bool {
	return s.storeLink != nil && !s.storeLink.Reachable()
}

// head is the marshalled reply carrying the answer's head, frame f (a
// Reply frame that the body follows), marked as the first of its parts.
// An event stream or a taken-over connection makes x long-lived. Nil for
// an undecodable frame.
func (s *Sidecar) head(x *exchange, f hop.Frame) ([]byte, int) {
	var r wire.Reply
	if err := r.UnmarshalShared(f.Payload); err != nil {
		return nil, 0
	}
	x.headOut = true
	if r.GetHijacked() || wire.LongLived(wire.HeaderValue(r.GetHeaders(), "Content-Type")) {
		x.longLived()
	}
	// What of the body (and trailers) has arrived already goes with the
	// head: a small answer flushed in parts is still one reply.
	more := true
	b := f.Payload
	if !r.GetHijacked() {
		body, trailers, last, _ := s.gather(x, append([]byte(nil), r.GetBody()...), false)
		if len(body) > len(r.GetBody()) {
			b = wire.AppendBody(b, body)
		}
		if len(trailers) > 0 {
			b, _ = proto.MarshalOptions{}.MarshalAppend(b, &wire.Reply{Trailers: trailers})
		}
		more = !last
	}
	b = protoAppendBool(b, true, more)
	if !more {
		s.exchanges.remove(x)
	}
	reply, status := s.answer([]byte(x.id), b)
	if r.GetHijacked() {
		status = http.StatusSwitchingProtocols
	}
	return reply, status
}

// gather collects the answer's next part from x's stream onto body: with
// wait, it waits for the first frame (until the exchange ends); then it
// takes what has arrived, up to maxPart bytes. last reports the answer's
// end (its last Data frame, or the trailers, which it returns). A failure
// after something arrived is left for the next call to find.
func (s *Sidecar) gather(x *exchange, body []byte, wait bool) (_ []byte, trailers []*wire.Header, last bool, err error) {
	for first := wait; len(body) < maxPart; first = false {
		deadline := time.Now() // only what has arrived
		if first {
			deadline = time.Time{} // until the exchange ends
		}
		f, err := x.s.Recv(deadline, x.done)
		switch {
		case err == io.EOF:
			return body, nil, true, nil
		case err != nil && first:
			return body, nil, false, err
		case err != nil:
			return body, nil, false, nil
		}
		switch f.Type {
		case hop.TypeData:
			body = append(body, f.Payload...)
			if f.End {
				return body, nil, true, nil
			}
		case hop.TypeTrailers:
			var t wire.Reply
			if err := t.UnmarshalShared(f.Payload); err == nil {
				trailers = t.GetTrailers()
			}
			return body, trailers, true, nil
		}
	}
	return body, nil, false, nil
}

// protoAppendBool marks a marshalled Reply as a head (and, with more, as
// one that more parts follow): appended fields override earlier ones.
func protoAppendBool(b []byte, head, more bool) []byte {
	tail, _ := proto.MarshalOptions{}.MarshalAppend(nil, &wire.Reply{Head: head, More: more})
	return append(b, tail...)
}

// hopFailure is the reply for a hop stream that failed before the answer.
func (s *Sidecar) hopFailure(id []byte, err error) ([]byte, int) {
	s.log.Debug("handler round trip failed", "request", string(id), "err", err)
	switch {
	case errors.Is(err, hop.ErrCanceled):
		b, _ := s.codeReply(id, wire.Code_CODE_DEADLINE_EXCEEDED, "canceled by the caller")
		return b, 499
	case errors.Is(err, pluginhost.ErrUnavailable):
		return s.codeReply(id, wire.Code_CODE_UNAVAILABLE, "handler unavailable")
	case errors.Is(err, hop.ErrTimeout):
		return s.codeReply(id, wire.Code_CODE_DEADLINE_EXCEEDED, "deadline exceeded in handler")
	case errors.Is(err, hop.ErrTooLarge):
		return s.codeReply(id, wire.Code_CODE_INTERNAL, "handler's answer exceeds the body limit")
	default:
		return s.codeReply(id, wire.Code_CODE_INTERNAL, "handler failed without an answer")
	}
}

// part serves a DATA or PULL envelope of an exchange.
func (s *Sidecar) part(head wire.Head, body []byte) []byte {
	x := s.exchanges.get(head.ID)
	if x == nil {
		// Ended (its deadline or idle timeout passed, or it was
		// cancelled), or never begun here.
		b, _ := s.codeReply(head.ID, wire.Code_CODE_DEADLINE_EXCEEDED, "no such exchange here: ended, or never begun")
		return b
	}
	x.touch()
	if head.Part == wire.Part_PART_DATA {
		return s.data(x, head, body)
	}
	return s.pull(x)
}

// data passes the body part of a DATA envelope on to the handler. Its
// answer goes back once the handler's window took it: so the edge sends
// no faster than the handler reads. more false tells the edge to stop:
// the handler has answered and reads no more.
func (s *Sidecar) data(x *exchange, head wire.Head, body []byte) []byte {
	x.dataMu.Lock()
	defer x.dataMu.Unlock()
	if head.Seq != x.seq+1 {
		s.exchanges.abort(x)
		b, _ := s.codeReply(head.ID, wire.Code_CODE_BAD_REQUEST, "body part out of order")
		return b
	}
	x.seq = head.Seq
	var env wire.Request
	if err := env.UnmarshalShared(body); err != nil {
		s.exchanges.abort(x)
		b, _ := s.codeReply(head.ID, wire.Code_CODE_BAD_REQUEST, "undecodable envelope")
		return b
	}
	var err error
	switch {
	case len(env.Body) == 0 && !env.GetEnd() && len(env.GetTrailers()) == 0:
		// An empty part asks whether the handler wants the body: answered
		// when it begins to read it, or (more false) when it answered
		// without (a client's "Expect: 100-continue").
		err = x.s.AwaitDemand()
	case len(env.GetTrailers()) > 0:
		if len(env.Body) > 0 {
			err = x.s.Send(hop.TypeData, false, env.Body)
		}
		if err == nil {
			t := make(http.Header, len(env.GetTrailers()))
			wire.DecodeHeader(t, env.GetTrailers())
			err = hop.SendTrailers(x.s, t)
		}
	case len(env.Body) > 0 || env.GetEnd():
		err = x.s.Send(hop.TypeData, env.GetEnd(), env.Body)
	}
	more := err == nil && !env.GetEnd()
	if err != nil && !errors.Is(err, hop.ErrAnswered) {
		s.exchanges.abort(x)
		b, _ := s.codeReply(head.ID, wire.Code_CODE_UNAVAILABLE, "handler gone")
		return b
	}
	b, _ := proto.Marshal(&wire.Reply{Id: x.id, More: more})
	return b
}

// pull answers a PULL: the answer's head if it has not gone back yet,
// otherwise the next part of its body, up to maxPart bytes of what has
// arrived, waiting for the first. The last part carries the trailers.
func (s *Sidecar) pull(x *exchange) []byte {
	x.pullMu.Lock()
	defer x.pullMu.Unlock()
	id := []byte(x.id)
	recv := func(deadline time.Time) (hop.Frame, error) { return x.s.Recv(deadline, x.done) }
	if !x.headOut {
		f, err := recv(time.Time{})
		if err != nil {
			return s.partFailure(x, err)
		}
		if f.Type != hop.TypeReply {
			s.exchanges.abort(x)
			b, _ := s.codeReply(id, wire.Code_CODE_INTERNAL, "handler sent a body before its answer's head")
			return b
		}
		var b []byte
		var status int
		if f.End {
			s.exchanges.remove(x)
			b, status = s.answer(id, f.Payload)
		} else if b, status = s.head(x, f); b == nil {
			s.exchanges.abort(x)
			b, status = s.codeReply(id, wire.Code_CODE_INTERNAL, "undecodable answer from the handler")
		}
		s.requests.WithLabelValues(metrics.Code(status)).Inc()
		return b
	}
	body, trailers, last, err := s.gather(x, nil, true)
	if err != nil {
		return s.partFailure(x, err)
	}
	reply := wire.Reply{Id: x.id, More: !last, Trailers: trailers}
	reply.Body = body
	if !reply.More {
		s.exchanges.remove(x)
	}
	b, _ := proto.Marshal(&reply)
	return b
}

// partFailure answers a PULL whose wait failed: the exchange ended (drained:
// the answer ends cleanly, after a WebSocket's close frame), timed out, or
// the handler went away.
func (s *Sidecar) partFailure(x *exchange, err error) []byte {
	id := []byte(x.id)
	x.mu.Lock()
	closing, drained := x.closing, x.drained
	x.mu.Unlock()
	s.exchanges.abort(x)
	if drained && x.headOut {
		b, _ := proto.Marshal(&wire.Reply{Id: x.id, Body: closing})
		return b
	}
	b, _ := s.hopFailure(id, err)
	return b
}
