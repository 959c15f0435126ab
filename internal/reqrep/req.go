package reqrep

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol"
)

// StallTimeout is how long a write may go on after its sender's context
// was closed before the pipe under it is closed (see the package
// documentation).
const StallTimeout = time.Second

// NewReq returns a REQ socket. It never fails; the error is mangos'
// constructors' shape.
func NewReq() (mangos.Socket, error) { return protocol.MakeSocket(newReqProto()), nil }

// req is the REQ protocol of one socket.
type req struct {
	mu       sync.Mutex
	closed   bool
	pipes    []*reqPipe
	added    chan struct{} // closed and replaced when a pipe is added
	byID     map[uint32]*reqCtx
	contexts map[*reqCtx]struct{}
	nextID   uint32
	def      *reqCtx
}

var _ protocol.Protocol = (*req)(nil)

// reqPipe is one connection of the socket.
type reqPipe struct {
	p    protocol.Pipe
	s    *req
	wsem chan struct{} // holds one token while a context writes to p
	gone chan struct{} // closed when the pipe is removed
	keep bool          // the transport leaves a sent message to the sender (keepsSent)
	out  int           // requests sent on p and not answered (s.mu)
}

// reqCtx is a context: one request at a time.
type reqCtx struct {
	s     *req
	reply chan *protocol.Message // the reply, or nil: the request failed (cap 1)
	done  chan struct{}          // closed by Close

	// guarded by s.mu
	id          uint32   // the request waiting for its reply; 0: none
	pipe        *reqPipe // where it went
	failure     error    // why a nil came on reply
	closed      bool
	sendExpire  time.Duration
	recvExpire  time.Duration
	failNoPeers bool

	writing atomic.Uint64 // the sequence of the write in progress, 0: none
	writes  uint64        // writes begun (the sender's)
}

func newReqProto() *req {
	s := &req{
		added:    make(chan struct{}),
		byID:     map[uint32]*reqCtx{},
		contexts: map[*reqCtx]struct{}{},
		nextID:   uint32(time.Now().UnixNano()),
	}
	s.def = s.newCtx()
	return s
}

func (s *req) newCtx() *reqCtx {
	c := &reqCtx{s: s, reply: make(chan *protocol.Message, 1), done: make(chan struct{})}
	if s.def != nil {
		c.sendExpire, c.recvExpire, c.failNoPeers = s.def.sendExpire, s.def.recvExpire, s.def.failNoPeers
	}
	s.contexts[c] = struct{}{}
	return c
}

func (*req) Info() protocol.Info {
	return protocol.Info{Self: protocol.ProtoReq, Peer: protocol.ProtoRep, SelfName: "req", PeerName: "rep"}
}

func (s *req) OpenContext() (protocol.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, protocol.ErrClosed
	}
	return s.newCtx(), nil
}

func (s *req) AddPipe(pp protocol.Pipe) error {
	p := &reqPipe{p: pp, s: s, wsem: make(chan struct{}, 1), gone: make(chan struct{}), keep: keepsSent(pp)}
	pp.SetPrivate(p)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return protocol.ErrClosed
	}
	s.pipes = append(s.pipes, p)
	close(s.added)
	s.added = make(chan struct{})
	s.mu.Unlock()
	go p.receive()
	return nil
}

func (s *req) RemovePipe(pp protocol.Pipe) {
	p, ok := pp.GetPrivate().(*reqPipe)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.pipes {
		if q == p {
			s.pipes = append(s.pipes[:i], s.pipes[i+1:]...)
			close(p.gone)
			break
		}
	}
	// Requests out on p get no reply: they fail now.
	for id, c := range s.byID {
		if c.pipe != p {
			continue
		}
		delete(s.byID, id)
		c.id, c.pipe, c.failure = 0, nil, protocol.ErrCanceled
		if c.failNoPeers && len(s.pipes) == 0 {
			c.failure = protocol.ErrNoPeers
		}
		c.deliver(nil)
	}
}

// receive is the pipe's reader: it hands each reply to its context.
func (p *reqPipe) receive() {
	s := p.s
	for {
		m := p.p.RecvMsg()
		if m == nil {
			return // the pipe closed; core removes it
		}
		if len(m.Body) < 4 {
			m.Free()
			continue
		}
		id := binary.BigEndian.Uint32(m.Body)
		m.Header = append(m.Header[:0], m.Body[:4]...)
		m.Body = m.Body[4:]
		s.mu.Lock()
		c := s.byID[id]
		if c == nil {
			s.mu.Unlock()
			m.Free() // the request was given up on
			continue
		}
		delete(s.byID, id)
		c.id, c.pipe = 0, nil
		p.out--
		c.deliver(m)
		s.mu.Unlock()
	}
}

// deliver hands c the reply m to its request, nil for a failure (s.mu).
// The channel is empty: a context has one request at a time, and a send
// drains what came for the one before.
func (c *reqCtx) deliver(m *protocol.Message) {
	select {
	case c.reply <- m:
	default:
		m.Free()
	}
}

// pick returns the pipe with the fewest requests out, nil if none (s.mu).
func (s *req) pick() *reqPipe {
	var best *reqPipe
	for _, p := range s.pipes {
		if best == nil || p.out < best.out {
			best = p
		}
	}
	return best
}

// abandon forgets c's request, if any, and a reply that came for it (s.mu).
func (c *reqCtx) abandon() {
	if c.id != 0 {
		delete(c.s.byID, c.id)
		if c.pipe != nil {
			c.pipe.out--
		}
		c.id, c.pipe = 0, nil
	}
	select {
	case m := <-c.reply:
		m.Free()
	default:
	}
}

func (c *reqCtx) SendMsg(m *protocol.Message) error {
	s := c.s
	s.mu.Lock()
	var expire <-chan time.Time
	if c.sendExpire > 0 {
		t := time.NewTimer(c.sendExpire)
		defer t.Stop()
		expire = t.C
	}
	var p *reqPipe
	for {
		if s.closed || c.closed {
			s.mu.Unlock()
			return protocol.ErrClosed
		}
		c.abandon()
		if p = s.pick(); p != nil {
			break
		}
		if c.failNoPeers {
			s.mu.Unlock()
			return protocol.ErrNoPeers
		}
		added := s.added
		s.mu.Unlock()
		select {
		case <-added:
		case <-c.done:
		case <-expire:
			return protocol.ErrSendTimeout
		}
		s.mu.Lock()
	}
	s.nextID++
	for s.byID[s.nextID|0x80000000] != nil {
		s.nextID++
	}
	id := s.nextID | 0x80000000
	c.id, c.pipe, c.failure = id, p, nil
	s.byID[id] = c
	p.out++
	s.mu.Unlock()

	m.Header = binary.BigEndian.AppendUint32(m.Header[:0], id)
	select {
	case p.wsem <- struct{}{}:
	default:
		select {
		case p.wsem <- struct{}{}:
		case <-c.done:
			c.unsent(id)
			return protocol.ErrClosed
		case <-p.gone:
			c.unsent(id)
			return protocol.ErrCanceled
		case <-expire:
			c.unsent(id)
			return protocol.ErrSendTimeout
		}
	}
	c.writes++
	c.writing.Store(c.writes)
	err := p.p.SendMsg(m)
	c.writing.Store(0)
	<-p.wsem
	if err != nil {
		// mangos' core closes the pipe, which fails requests out on it.
		c.unsent(id)
		return err
	}
	if p.keep {
		m.Free()
	}
	return nil
}

// unsent forgets request id, which did not leave this process.
func (c *reqCtx) unsent(id uint32) {
	c.s.mu.Lock()
	if c.id == id {
		c.abandon()
	}
	c.s.mu.Unlock()
}

func (c *reqCtx) RecvMsg() (*protocol.Message, error) {
	s := c.s
	s.mu.Lock()
	switch {
	case s.closed || c.closed:
		s.mu.Unlock()
		return nil, protocol.ErrClosed
	case c.id == 0 && len(c.reply) == 0:
		s.mu.Unlock()
		return nil, protocol.ErrProtoState
	}
	var expire <-chan time.Time
	if c.recvExpire > 0 {
		t := time.NewTimer(c.recvExpire)
		defer t.Stop()
		expire = t.C
	}
	s.mu.Unlock()
	select {
	case m := <-c.reply:
		if m == nil {
			s.mu.Lock()
			err := c.failure
			s.mu.Unlock()
			return nil, err
		}
		return m, nil
	case <-c.done:
		return nil, protocol.ErrClosed
	case <-expire:
		s.mu.Lock()
		c.abandon()
		s.mu.Unlock()
		return nil, protocol.ErrRecvTimeout
	}
}

// Close closes the context: a send or receive waiting on it returns
// mangos.ErrClosed.
func (c *reqCtx) Close() error {
	s := c.s
	s.mu.Lock()
	if c.closed {
		s.mu.Unlock()
		return protocol.ErrClosed
	}
	c.close()
	s.mu.Unlock()
	return nil
}

// close closes c (s.mu) and watches a write of c's in progress.
func (c *reqCtx) close() {
	c.closed = true
	pipe := c.pipe
	c.abandon()
	delete(c.s.contexts, c)
	close(c.done)
	if w := c.writing.Load(); w != 0 && pipe != nil {
		time.AfterFunc(StallTimeout, func() {
			if c.writing.Load() == w {
				_ = pipe.p.Close()
			}
		})
	}
}

func (c *reqCtx) SetOption(name string, v any) error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	switch name {
	case protocol.OptionRetryTime:
		if d, ok := v.(time.Duration); ok && d == 0 {
			return nil // this REQ never resends
		}
		return protocol.ErrBadValue
	case protocol.OptionSendDeadline, protocol.OptionRecvDeadline:
		d, ok := v.(time.Duration)
		if !ok {
			return protocol.ErrBadValue
		}
		if name == protocol.OptionSendDeadline {
			c.sendExpire = d
		} else {
			c.recvExpire = d
		}
		return nil
	case protocol.OptionFailNoPeers:
		b, ok := v.(bool)
		if !ok {
			return protocol.ErrBadValue
		}
		c.failNoPeers = b
		return nil
	}
	return protocol.ErrBadOption
}

func (c *reqCtx) GetOption(name string) (any, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	switch name {
	case protocol.OptionRetryTime:
		return time.Duration(0), nil
	case protocol.OptionSendDeadline:
		return c.sendExpire, nil
	case protocol.OptionRecvDeadline:
		return c.recvExpire, nil
	case protocol.OptionFailNoPeers:
		return c.failNoPeers, nil
	}
	return nil, protocol.ErrBadOption
}

// The socket's own methods use its default context.

func (s *req) SendMsg(m *protocol.Message) error   { return s.def.SendMsg(m) }
func (s *req) RecvMsg() (*protocol.Message, error) { return s.def.RecvMsg() }
func (s *req) SetOption(name string, v any) error  { return s.def.SetOption(name, v) }
func (s *req) GetOption(name string) (any, error) {
	if name == protocol.OptionRaw {
		return false, nil
	}
	return s.def.GetOption(name)
}

func (s *req) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return protocol.ErrClosed
	}
	s.closed = true
	for c := range s.contexts {
		c.close()
	}
	return nil
}
