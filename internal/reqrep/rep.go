package reqrep

import (
	"strings"
	"sync"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol"
)

// Handler serves one request, on the reader of the pipe it came on: while
// it runs, that pipe reads nothing more, so it must not block (work that
// waits goes to a goroutine). It owns m (m.Pipe is the pipe it came on)
// and answers through r, at once or later, from any goroutine, or not at
// all (the requester's deadline then ends the wait).
type Handler func(m *mangos.Message, r Replier)

// maxHops bounds the backtrace of a request: the devices it crossed, as
// mangos' REP allows by default (OptionTTL 8).
const maxHops = 8

// Replier answers one request. It is a small value: keep it, not a
// pointer to it.
type Replier struct {
	p  *repPipe
	n  uint8
	bt [4 * maxHops]byte // the request's backtrace, sent back with the reply
}

// Reply sends m as the answer, and takes m over. It waits while another
// reply is being written to the same pipe. It fails with mangos.ErrClosed
// once the pipe has closed (the requester is gone; m is freed).
func (r Replier) Reply(m *mangos.Message) error {
	p := r.p
	m.Header = append(m.Header[:0], r.bt[:r.n]...)
	select {
	case p.wsem <- struct{}{}:
	case <-p.gone:
		m.Free()
		return protocol.ErrClosed
	}
	err := p.p.SendMsg(m)
	<-p.wsem
	if err != nil || p.keep {
		m.Free()
	}
	return err
}

// keepsSent reports whether pp's transport leaves a message it has sent
// to the sender, who frees it: mangos' inproc transport sends a copy,
// while its stream transports (tcp, tls+tcp, ipc) free a message once
// written. A message not freed is not reused from mangos' pools.
func keepsSent(pp protocol.Pipe) bool {
	a, ok := pp.(interface{ Address() string })
	return ok && strings.HasPrefix(a.Address(), "inproc://")
}

// Rep is a REP socket whose requests go to a Handler. Close closes it and
// waits until no Handler call runs. Its SendMsg, RecvMsg and OpenContext
// fail with mangos.ErrProtoOp: it answers through its Handler only.
type Rep struct {
	mangos.Socket
	p *rep
}

// NewRep returns a REP socket that serves every request with h.
func NewRep(h Handler) *Rep {
	p := &rep{h: h}
	return &Rep{Socket: protocol.MakeSocket(p), p: p}
}

// Close closes the socket, then waits for the Handler calls in progress.
func (r *Rep) Close() error {
	err := r.Socket.Close()
	r.p.readers.Wait()
	return err
}

// rep is the REP protocol of one socket.
type rep struct {
	h       Handler
	readers sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

var _ protocol.Protocol = (*rep)(nil)

// repPipe is one connection of the socket.
type repPipe struct {
	p    protocol.Pipe
	wsem chan struct{} // holds one token while a reply is written to p
	gone chan struct{} // closed when the pipe is removed
	keep bool          // the transport leaves a sent message to the sender (keepsSent)
}

func (*rep) Info() protocol.Info {
	return protocol.Info{Self: protocol.ProtoRep, Peer: protocol.ProtoReq, SelfName: "rep", PeerName: "req"}
}

func (s *rep) AddPipe(pp protocol.Pipe) error {
	p := &repPipe{p: pp, wsem: make(chan struct{}, 1), gone: make(chan struct{}), keep: keepsSent(pp)}
	pp.SetPrivate(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return protocol.ErrClosed
	}
	s.readers.Go(func() { s.receive(p) })
	return nil
}

func (s *rep) RemovePipe(pp protocol.Pipe) {
	if p, ok := pp.GetPrivate().(*repPipe); ok {
		close(p.gone)
	}
}

// receive is a pipe's reader: it hands each request to the Handler.
func (s *rep) receive(p *repPipe) {
	for {
		m := p.p.RecvMsg()
		if m == nil {
			return // the pipe closed; core removes it
		}
		// Move the backtrace, up to the request id (its high bit set), from
		// the body to the header.
		r := Replier{p: p}
		ok := false
		for hops := 0; hops < maxHops && len(m.Body) >= 4; hops++ {
			copy(r.bt[r.n:], m.Body[:4])
			r.n += 4
			last := m.Body[0]&0x80 != 0
			m.Body = m.Body[4:]
			if last {
				ok = true
				break
			}
		}
		if !ok {
			m.Free() // garbled, or too many hops
			continue
		}
		m.Header = append(m.Header[:0], r.bt[:r.n]...)
		s.h(m, r)
	}
}

func (s *rep) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return protocol.ErrClosed
	}
	s.closed = true
	return nil
}

func (*rep) SendMsg(*protocol.Message) error        { return protocol.ErrProtoOp }
func (*rep) RecvMsg() (*protocol.Message, error)    { return nil, protocol.ErrProtoOp }
func (*rep) OpenContext() (protocol.Context, error) { return nil, protocol.ErrProtoOp }
func (*rep) SetOption(string, any) error            { return protocol.ErrBadOption }
func (*rep) GetOption(name string) (any, error) {
	if name == protocol.OptionRaw {
		return false, nil
	}
	return nil, protocol.ErrBadOption
}
