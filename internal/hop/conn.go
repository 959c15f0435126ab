// Package hop is the connection between a sidecar and its handler process:
// a few long-lived connections (shared-memory pipes from package shmpipe,
// or unix sockets), each carrying many requests at once as multiplexed,
// length-prefixed frames, written in batches and read by one goroutine per
// connection.
//
// A frame is a 10-byte header (payload length, type, flags, stream id; big
// endian) and its payload. A stream is one request and its answer:
//
//	Request  a wire.Request; with End, its body is whole
//	Data     a chunk of the request's or the reply's body; End closes it
//	Reply    a wire.Reply; with End, its body is whole
//	Cancel   the stream's opener has given up on it
//	Unary    an opaque call, answered by one UnaryReply (a store read)
//	Window   lets the peer send this many more bytes of Data (4 bytes)
//	Trailers a wire.Reply holding only trailers; always the last frame
//
// Data frames are flow-controlled per stream, as in HTTP/2: each side may
// have at most a window of Data bytes sent and not yet read by the peer's
// application (Recv), which grants more with Window frames as it reads.
// So a slow reader holds back its writer, and a stream's memory is bounded
// by the window on either side. Request, Reply and Trailers frames are
// not counted.
//
// Either side opens streams: the sidecar for the requests the handler
// serves, the handler for its own calls into the mesh (other services, the
// store, events). The ids of streams the accepting side opens have the high
// bit set, so the two never collide. Small requests and answers are one
// frame each way; a flushed or large answer is a Reply head followed by Data
// frames.
package hop

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of a Conn and its streams. Check with errors.Is.
var (
	// ErrClosed reports a stream on a connection that has closed or broken.
	ErrClosed = errors.New("hop: connection closed")
	// ErrCanceled reports a stream its peer gave up on.
	ErrCanceled = errors.New("hop: stream canceled")
	// ErrTimeout reports a wait for a frame that outlasted its deadline.
	ErrTimeout = errors.New("hop: deadline exceeded")
	// ErrProtocol reports a frame that breaks the protocol; the connection
	// is closed.
	ErrProtocol = errors.New("hop: protocol error")
)

// Frame types.
const (
	TypeRequest byte = 1
	TypeData    byte = 2
	TypeReply   byte = 3
	TypeCancel  byte = 4
	TypeUnary   byte = 5
	// TypeUnaryReply answers a TypeUnary frame.
	TypeUnaryReply byte = 6
	// TypeWindow grants the peer more room for Data frames.
	TypeWindow byte = 7
	// TypeTrailers carries a wire.Reply with only trailers, and ends the
	// side's frames of the stream.
	TypeTrailers byte = 8
)

const (
	flagEnd    byte   = 1
	headerLen         = 10
	acceptBit  uint32 = 1 << 31
	readBuffer        = 64 << 10
	// keepBuffer bounds the write buffer a connection keeps between
	// batches; a larger one, grown for a big body, is let go.
	keepBuffer = 1 << 20
	// appendRoom is the spare capacity of a received payload.
	appendRoom = 64
	// DefaultMaxFrame bounds a frame's payload unless Config says otherwise.
	DefaultMaxFrame = 64 << 20
	// window is the Data bytes each side of a stream may have in flight.
	window = 512 << 10
)

// ErrAnswered reports Data sent on a stream whose peer has sent its last
// frame: nobody will read it.
var ErrAnswered = errors.New("hop: stream already answered")

// Frame is one frame of a stream. Payload belongs to whoever received it.
type Frame struct {
	Type    byte
	End     bool
	Payload []byte
}

// Config configures a Conn.
type Config struct {
	// Accepting is true on the side that accepted the connection (the
	// handler): its streams' ids have the high bit set.
	Accepting bool
	// Serve runs each stream the peer opens, on a goroutine of its own
	// (one kept from an earlier stream where one is idle); it must end the
	// stream (Stream.Send with end, or Stream.Close).
	// Nil: streams the peer opens are cancelled at once.
	Serve func(*Stream)
	// Unary answers each unary call the peer makes, on a goroutine of its
	// own; ctx is cancelled when the peer gives up. Nil: unary calls are
	// cancelled at once.
	Unary func(ctx context.Context, payload []byte) []byte
	// Quick, when set, picks the unary calls to answer on the reader
	// itself, saving a goroutine hand-off each: those that take about as
	// long as one (a read from memory), since the connection's other
	// frames wait meanwhile.
	Quick func(payload []byte) bool
	// MaxFrame bounds the payload of frames read (0: DefaultMaxFrame); a
	// larger one closes the connection.
	MaxFrame int
}

// Replayed is a connection whose first bytes a handshake has already read
// from it (an HTTP upgrade's buffer, a shared-memory offer's check): R
// gives those bytes, then the connection's own. It is what New takes such
// a connection as.
type Replayed struct {
	net.Conn
	R io.Reader
}

func (c Replayed) Read(p []byte) (int, error) { return c.R.Read(p) }

// Conn is one multiplexed connection. Its methods are safe for concurrent
// use. It runs one goroutine, the reader, from New until the connection
// closes; Close stops it and waits for it.
type Conn struct {
	c        io.ReadWriteCloser // a net.Conn, or what an HTTP upgrade hands over
	cfg      Config
	local    uint32 // acceptBit or 0: marks the ids of streams this side opens
	next     atomic.Uint32
	inflight atomic.Int64

	wmu      sync.Mutex // guards the write state below
	pending  []byte     // frames not yet written
	spare    []byte
	flushing bool // a writer is writing pending to c
	werr     error

	mu      sync.Mutex // guards streams and err
	streams map[uint32]*Stream
	err     error // set once the connection is done

	workers   workers   // run the streams the peer opens
	deadlines deadlines // of its pending requests (Go, GoPartsIn) and of the requests it serves

	done chan struct{} // closed when the reader has returned
}

// New starts serving c and returns its Conn; it takes c over. It only
// reads, writes and closes c.
func New(c io.ReadWriteCloser, cfg Config) *Conn {
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	conn := &Conn{c: c, cfg: cfg, streams: map[uint32]*Stream{}, done: make(chan struct{}), workers: newWorkers()}
	if cfg.Accepting {
		conn.local = acceptBit
	}
	go conn.read()
	return conn
}

// Done is closed once the connection has closed or broken.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// InFlight is the number of streams this side has opened that are not yet
// answered.
func (c *Conn) InFlight() int64 { return c.inflight.Load() }

// Close closes the connection: every open stream fails with ErrClosed. It
// waits for the reader to return.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	<-c.done
	return nil
}

// Open starts a stream of this side's; its first Send must be a Request.
func (c *Conn) Open() (*Stream, error) {
	s := new(Stream)
	if err := c.openAs(s); err != nil {
		return nil, err
	}
	return s, nil
}

// openAs is Open with the stream made in s, a zero Stream (one allocated
// with what it belongs to).
func (c *Conn) openAs(s *Stream) error {
	s.init(c, (c.next.Add(1)&^acceptBit)|c.local, true)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.streams[s.id] = s
	c.mu.Unlock()
	c.inflight.Add(1)
	return nil
}

// fail closes the connection for err (the first reason sticks) and ends
// every stream.
func (c *Conn) fail(err error) {
	if !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*Stream{}
	c.mu.Unlock()
	_ = c.c.Close()
	c.workers.stop()
	c.deadlines.stop()
	for _, s := range streams {
		s.finish(err)
	}
}

func (c *Conn) remove(s *Stream) {
	c.mu.Lock()
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
		if s.mine {
			c.inflight.Add(-1)
		}
	}
	c.mu.Unlock()
}

// read is the connection's reader: it hands each frame to its stream.
func (c *Conn) read() {
	defer close(c.done)
	r := bufio.NewReaderSize(c.c, readBuffer)
	var hdr [headerLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			c.fail(err)
			return
		}
		n := binary.BigEndian.Uint32(hdr[0:4])
		typ, flags, id := hdr[4], hdr[5], binary.BigEndian.Uint32(hdr[6:10])
		if int64(n) > int64(c.cfg.MaxFrame) {
			c.fail(fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrProtocol, n, c.cfg.MaxFrame))
			return
		}
		var payload []byte
		if n > 0 {
			// Room beyond the frame for what a relay appends to it (a
			// sidecar adds its instance and version to a reply).
			payload = make([]byte, n, int(n)+appendRoom)
			if _, err := io.ReadFull(r, payload); err != nil {
				c.fail(err)
				return
			}
		}
		if err := c.dispatch(Frame{Type: typ, End: flags&flagEnd != 0, Payload: payload}, id); err != nil {
			c.fail(err)
			return
		}
	}
}

// dispatch hands one frame to its stream, or starts a stream the peer opens.
func (c *Conn) dispatch(f Frame, id uint32) error {
	theirs := id&acceptBit != c.local
	if f.Type == TypeRequest || f.Type == TypeUnary {
		if !theirs {
			return fmt.Errorf("%w: request on stream %#x of ours", ErrProtocol, id)
		}
		s := newStream(c, id, false)
		s.push(f)
		c.mu.Lock()
		if _, dup := c.streams[id]; dup {
			c.mu.Unlock()
			return fmt.Errorf("%w: stream %#x opened twice", ErrProtocol, id)
		}
		c.streams[id] = s
		c.mu.Unlock()
		switch {
		case f.Type == TypeUnary && c.cfg.Unary != nil && c.cfg.Quick != nil && c.cfg.Quick(f.Payload):
			s.serveUnary(c.cfg.Unary, f.Payload)
		case f.Type == TypeUnary && c.cfg.Unary != nil:
			c.workers.run(job{s: s, unary: true, payload: f.Payload})
		case f.Type == TypeRequest && c.cfg.Serve != nil:
			c.workers.run(job{s: s})
		default:
			s.Close()
		}
		return nil
	}
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	switch {
	case s == nil: // a stream already given up on: its late frames are dropped
		return nil
	case f.Type == TypeCancel:
		c.remove(s)
		s.finish(ErrCanceled)
	case f.Type == TypeWindow:
		if len(f.Payload) != 4 {
			return fmt.Errorf("%w: window frame of %d bytes", ErrProtocol, len(f.Payload))
		}
		s.grant(int64(binary.BigEndian.Uint32(f.Payload)))
	case f.Type == TypeData, f.Type == TypeTrailers, (f.Type == TypeReply || f.Type == TypeUnaryReply) && s.mine:
		if f.End && s.mine {
			c.remove(s) // answered: nothing more will come
		}
		s.push(f)
	default:
		return fmt.Errorf("%w: frame type %d on stream %#x", ErrProtocol, f.Type, id)
	}
	return nil
}

// write queues one frame and, unless another writer is already at it,
// writes everything queued, frames that other writers add meanwhile
// included: concurrent writers share system calls. p is copied before
// write returns.
func (c *Conn) write(typ, flags byte, id uint32, p []byte) error {
	if len(p) > c.cfg.MaxFrame {
		return fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrProtocol, len(p), c.cfg.MaxFrame)
	}
	c.wmu.Lock()
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return err
	}
	var hdr [headerLen]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(p)))
	hdr[4], hdr[5] = typ, flags
	binary.BigEndian.PutUint32(hdr[6:10], id)
	c.pending = append(append(c.pending, hdr[:]...), p...)
	if c.flushing {
		c.wmu.Unlock()
		return nil
	}
	c.flushing = true
	for len(c.pending) > 0 && c.werr == nil {
		buf := c.pending
		c.pending = c.spare[:0]
		c.spare = nil
		c.wmu.Unlock()
		_, err := c.c.Write(buf)
		c.wmu.Lock()
		if cap(buf) <= keepBuffer {
			c.spare = buf[:0]
		}
		if err != nil {
			c.werr = fmt.Errorf("%w: %w", ErrClosed, err)
		}
	}
	c.flushing = false
	err := c.werr
	c.wmu.Unlock()
	if err != nil {
		c.fail(err)
	}
	return err
}

// Stream is one request and its answer on a Conn.
type Stream struct {
	c    *Conn
	id   uint32
	mine bool // opened by this side

	mu       sync.Mutex
	queue    []Frame
	first    [1]Frame      // the queue's first backing array: most streams see one frame
	err      error         // set once nothing more will arrive
	signal   chan struct{} // made by the first Recv that waits; signalled when a frame arrives or the stream ends
	onCancel func()        // run when the peer cancels (streams of theirs)
	ended    bool          // this side has sent its last frame
	credit   int64         // Data bytes this side may still send
	read     int64         // Data bytes read since the last Window sent
	credited chan struct{} // signalled when credit grows or the stream ends
	demanded bool          // the peer's application began to read the body
	// complete, when set, takes the stream's first frame (or why none
	// will come) instead of a reader of the queue; see Go.
	complete *Pending
	gone     bool // finished: cancelled, closed or broken
}

// Demand tells the peer that the application began to read the body it
// sends on s (an empty Window frame): for a sender that waits to be asked,
// as an HTTP client that sent "Expect: 100-continue" does.
func (s *Stream) Demand() error {
	return s.c.write(TypeWindow, 0, s.id, make([]byte, 4))
}

// AwaitDemand waits until the peer's application began to read the body
// (Demand). It fails as sending Data would: with ErrAnswered once the peer
// has answered without reading, or the stream's error.
func (s *Stream) AwaitDemand() error { return s.await(func() bool { return s.demanded }) }

// Conn is the connection s belongs to.
func (s *Stream) Conn() *Conn { return s.c }

func newStream(c *Conn, id uint32, mine bool) *Stream {
	s := new(Stream)
	s.init(c, id, mine)
	return s
}

// init sets up s, a zero Stream.
func (s *Stream) init(c *Conn, id uint32, mine bool) {
	s.c, s.id, s.mine, s.credit = c, id, mine, window
	s.queue = s.first[:0]
}

// grant adds n to what s may send; a grant of 0 says the peer's
// application wants the body (see Stream.AwaitDemand).
func (s *Stream) grant(n int64) {
	s.mu.Lock()
	s.credit += n
	if n == 0 {
		s.demanded = true
	}
	ch := s.credited
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// awaitCredit waits until s may send Data: its window is not used up.
func (s *Stream) awaitCredit() error { return s.await(func() bool { return s.credit > 0 }) }

// await waits until ready (called with s.mu held) holds, woken by grants
// and by the stream's end. It fails once the peer has given up on s or,
// with ErrAnswered, has sent its last frame.
func (s *Stream) await(ready func() bool) error {
	for {
		s.mu.Lock()
		switch {
		case s.err == io.EOF && s.mine:
			s.mu.Unlock()
			return ErrAnswered
		case s.err != nil && s.err != io.EOF:
			err := s.err
			s.mu.Unlock()
			return err
		case ready():
			s.mu.Unlock()
			return nil
		}
		if s.credited == nil {
			s.credited = make(chan struct{}, 1)
		}
		ch := s.credited
		s.mu.Unlock()
		<-ch
	}
}

// consumed records that the application read n bytes of Data and grants
// the peer room for more once half the window is read.
func (s *Stream) consumed(n int) {
	s.mu.Lock()
	s.read += int64(n)
	grant := s.read
	if grant < window/2 || s.err != nil && s.err != io.EOF {
		s.mu.Unlock()
		return
	}
	s.read = 0
	s.mu.Unlock()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(grant))
	_ = s.c.write(TypeWindow, 0, s.id, b[:])
}

func (s *Stream) push(f Frame) {
	s.mu.Lock()
	if f.End && s.err == nil {
		s.err = io.EOF
	}
	if p := s.complete; p != nil {
		s.complete = nil
		s.mu.Unlock()
		p.first(f, nil)
		return
	}
	s.queue = append(s.queue, f)
	signal := s.signal
	s.mu.Unlock()
	select {
	case signal <- struct{}{}: // nil until a reader waits: then it finds f in the queue
	default:
	}
}

// finish records that nothing more will arrive on s, for err.
func (s *Stream) finish(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	// A cancel after the last frame arrived (a request whose body came
	// whole) leaves err at io.EOF for the queue's reader, but still
	// cancels.
	s.gone = true
	fn := s.onCancel
	s.onCancel = nil
	ch, signal := s.credited, s.signal
	complete := s.complete
	s.complete = nil
	err = s.err
	s.mu.Unlock()
	if complete != nil {
		complete.first(Frame{}, err)
	}
	for _, c := range [...]chan struct{}{signal, ch} {
		if c != nil {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}
	if fn != nil {
		fn()
	}
}

// OnCancel sets fn to run once when the peer cancels s or the connection
// breaks; at once if that has already happened.
func (s *Stream) OnCancel(fn func()) {
	s.mu.Lock()
	gone := s.gone || s.err != nil && s.err != io.EOF
	if !gone {
		s.onCancel = fn
	}
	s.mu.Unlock()
	if gone {
		fn()
	}
}

// Send writes one frame of s; end marks s's last frame from this side.
// A Data frame waits for room in the stream's window (see the package
// documentation): until the peer has read enough of what went before.
func (s *Stream) Send(typ byte, end bool, payload []byte) error {
	if typ == TypeData && len(payload) > 0 {
		if err := s.awaitCredit(); err != nil {
			return err
		}
		s.mu.Lock()
		s.credit -= int64(len(payload))
		s.mu.Unlock()
	}
	var flags byte
	if end {
		flags = flagEnd
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		if !s.mine {
			s.c.remove(s) // answered
		}
	}
	return s.c.write(typ, flags, s.id, payload)
}

// Recv returns the next frame that arrived on s, waiting for it until
// deadline (zero: no deadline) or done (nil: never) is closed. After the
// last frame (End) it returns io.EOF. It fails with ErrTimeout past the
// deadline, with ErrCanceled on done or a peer's cancel, with ErrClosed when
// the connection went away.
func (s *Stream) Recv(deadline time.Time, done <-chan struct{}) (Frame, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			f := s.queue[0]
			s.queue[0] = Frame{}
			s.queue = s.queue[1:]
			s.mu.Unlock()
			if f.Type == TypeData && len(f.Payload) > 0 {
				s.consumed(len(f.Payload))
			}
			return f, nil
		}
		err := s.err
		if s.signal == nil && err == nil {
			s.signal = make(chan struct{}, 1)
		}
		signal := s.signal
		s.mu.Unlock()
		if err != nil {
			return Frame{}, err
		}
		var expired <-chan time.Time
		if !deadline.IsZero() {
			if timer == nil {
				d := time.Until(deadline)
				if d <= 0 {
					return Frame{}, ErrTimeout
				}
				timer = time.NewTimer(d)
			}
			expired = timer.C
		}
		select {
		case <-signal:
		case <-expired:
			return Frame{}, ErrTimeout
		case <-done:
			return Frame{}, ErrCanceled
		}
	}
}

// Close ends s from this side. A stream of ours that is not answered
// yet is cancelled, so that the peer stops working on it; one of theirs
// that this side has not answered gets a cancel instead of an answer.
// Frames still arriving for s are dropped. Close after the last frame each
// way only lets s go.
func (s *Stream) Close() {
	s.mu.Lock()
	cancel := !s.ended && !s.mine || s.mine && s.err == nil
	s.ended = true
	s.mu.Unlock()
	s.c.remove(s)
	if cancel {
		_ = s.c.write(TypeCancel, flagEnd, s.id, nil)
	}
	s.finish(ErrCanceled)
}

// serveUnary answers one unary call of the peer's.
func (s *Stream) serveUnary(fn func(context.Context, []byte) []byte, payload []byte) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.OnCancel(cancel)
	_ = s.Send(TypeUnaryReply, true, fn(ctx, payload))
}

// Unary makes one unary call on c and returns the answer, waiting until
// done is closed at most (nil: no bound; then the call is cancelled and
// Unary fails with ErrCanceled).
func Unary(c *Conn, payload []byte, done <-chan struct{}) ([]byte, error) {
	s, err := c.Open()
	if err != nil {
		return nil, err
	}
	if err := s.Send(TypeUnary, true, payload); err != nil {
		s.Close()
		return nil, err
	}
	f, err := s.Recv(time.Time{}, done)
	if err != nil {
		s.Close()
		return nil, err
	}
	if f.Type != TypeUnaryReply {
		s.Close()
		return nil, fmt.Errorf("%w: frame type %d answering a unary call", ErrProtocol, f.Type)
	}
	return f.Payload, nil
}
