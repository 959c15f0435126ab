package hop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// chunkSize is how much of an answer a ResponseWriter holds before it
// sends what it has as a Data frame; an answer that fits is one frame.
const chunkSize = 64 << 10

// ErrReply wraps the mesh code of an answer that is not the handler's.
var ErrReply = errors.New("hop: no answer")

// Handler serves one request that arrived on a stream: r is built from
// its envelope env (which r shares header values with), w sends the answer
// back on the stream.
type Handler func(w http.ResponseWriter, r *http.Request, env *wire.Request)

// bufs holds buffers for answers and envelopes being marshalled.
var bufs = sync.Pool{New: func() any { return new([]byte) }}

func getBuf() *[]byte { return bufs.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= keepBuffer {
		*b = (*b)[:0]
		bufs.Put(b)
	}
}

// Server serves the requests that arrive on streams.
type Server struct {
	// Handler serves each request (required).
	Handler Handler
	// Host is the request's host when its envelope names none.
	Host string
	// Context, when set, derives the request's context from the one Serve
	// made (which carries the deadline and the stream's cancellation).
	Context func(ctx context.Context, s *Stream, env *wire.Request) context.Context
	// Logger receives handler panics (nil: slog.Default()).
	Logger *slog.Logger
	// StripMeshHeaders removes X-Griddle-* headers from the answers: a
	// handler cannot set what only the mesh may.
	StripMeshHeaders bool
}

// Serve reads the request of s (a stream its peer opened), serves it and
// sends the answer. The request's context carries the envelope's deadline
// and is cancelled when the peer cancels the stream or the connection
// breaks; an answer that turns out to be an event stream (wire.LongLived)
// lifts the deadline, so that it can go on while events flow. A panic in
// the handler answers CODE_INTERNAL (or, after part of the answer went
// out, cancels the stream) and is logged, as net/http does.
func (srv *Server) Serve(s *Stream) {
	f, err := s.Recv(time.Time{}, nil)
	if err != nil || f.Type != TypeRequest {
		s.Close()
		return
	}
	// One allocation for the envelope, the context and the answer's writer.
	x := &struct {
		env  wire.Request
		room wire.HeaderRoom
		url  url.URL
		ctx  requestContext
		w    ResponseWriter
	}{}
	env := &x.env
	if err := env.UnmarshalSharedIn(f.Payload, &x.room); err != nil { // the frame is this stream's alone
		sendCode(s, wire.Code_CODE_BAD_REQUEST, "undecodable envelope")
		return
	}
	rc := &x.ctx
	rc.start(env, &s.c.deadlines)
	defer rc.end()
	s.OnCancel(rc.cancel)
	var ctx context.Context = rc
	if srv.Context != nil {
		ctx = srv.Context(ctx, s, env)
	}
	var body *streamBody
	var bodyReader io.Reader
	if !f.End { // the body's first part is the envelope's, the rest follows
		body = &streamBody{s: s, done: ctx.Done(), cur: env.Body}
		if !env.GetUpgrade() { // an upgrade's stream is the connection's, after Hijack
			bodyReader = body
		}
	}
	r, err := env.HTTPRequestIn(ctx, srv.Host, bodyReader, &x.url)
	if err != nil {
		sendCode(s, wire.Code_CODE_BAD_REQUEST, "invalid method or path")
		return
	}
	if body != nil {
		body.trailer = &r.Trailer
		// A client that asked to be told to send its body hears it when
		// the handler first reads, as from net/http's server.
		body.demand = strings.EqualFold(r.Header.Get("Expect"), "100-continue")
	}
	w := &x.w
	*w = ResponseWriter{s: s, r: r, env: env, ctx: rc, body: body, header: make(http.Header), head: r.Method == http.MethodHead, stripMesh: srv.StripMeshHeaders}
	w.buf = getBuf()
	defer func() {
		if !w.hijacked {
			putBuf(w.buf)
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				log := srv.Logger
				if log == nil {
					log = slog.Default()
				}
				log.Error("handler panicked", "request", env.GetId(), "method", r.Method, "path", r.URL.Path, "panic", p)
			}
			switch {
			case w.hijacked:
			case w.headSent:
				s.Close()
			default:
				sendCode(s, wire.Code_CODE_INTERNAL, "handler panicked")
			}
		}
	}()
	srv.Handler(w, r, env)
	if w.hijacked { // the connection is the handler's now, and ends with its Close
		return
	}
	if err := w.finish(); err != nil {
		s.Close()
	}
}

// requestContext is the context of a request served on a stream: it is
// cancelled by the peer, at the end of Serve, or at the envelope's
// deadline, unless an event-stream answer lifted the deadline first.
type requestContext struct {
	context.Context
	lifted    atomic.Bool
	deadlines *deadlines // the connection's, timing this request; nil: no deadline
	deadline  timed
	cancel    context.CancelFunc
}

// start sets the context up for env, its deadline timed by d.
func (c *requestContext) start(env *wire.Request, d *deadlines) {
	c.Context, c.cancel = context.WithCancel(context.Background())
	if at, ok := env.Deadline(time.Now()); ok && !env.GetLongLived() {
		c.deadlines, c.deadline = d, newTimed(at, c)
		d.add(&c.deadline)
	} else {
		c.lifted.Store(true)
	}
}

// expire cancels the context at its deadline (deadlines' expirer).
func (c *requestContext) expire() { c.cancel() }

// end cancels the context and stops timing it: the request is over.
func (c *requestContext) end() {
	if c.deadlines != nil {
		c.deadlines.remove(&c.deadline)
	}
	c.cancel()
}

// lift takes the deadline away, unless it has passed.
func (c *requestContext) lift() {
	if c.deadlines != nil && c.deadlines.remove(&c.deadline) {
		c.lifted.Store(true)
	}
}

// Deadline implements context.Context.
func (c *requestContext) Deadline() (time.Time, bool) {
	if c.lifted.Load() {
		return time.Time{}, false
	}
	return c.deadline.at, true
}

// Err implements context.Context: context.DeadlineExceeded once the
// deadline has passed, as a context made by context.WithDeadline says.
func (c *requestContext) Err() error {
	err := c.Context.Err()
	if err != nil && !c.lifted.Load() && !time.Now().Before(c.deadline.at) {
		return context.DeadlineExceeded
	}
	return err
}

// sendCode answers s with a mesh error instead of an HTTP answer.
func sendCode(s *Stream, code wire.Code, msg string) {
	b, _ := proto.Marshal(&wire.Reply{Code: code, Message: msg})
	_ = s.Send(TypeReply, true, b)
}

// streamBody reads a body that arrives as Data frames, and the trailers
// that may end it.
type streamBody struct {
	s        *Stream
	done     <-chan struct{}
	cur      []byte
	eof      bool
	deadline atomic.Int64 // Unix nanoseconds; 0: none
	trailer  *http.Header // filled from a Trailers frame (nil: dropped)
	demand   bool         // tell the peer at the first read (Stream.Demand)
}

func (b *streamBody) Read(p []byte) (int, error) {
	if b.demand {
		b.demand = false
		if err := b.s.Demand(); err != nil {
			return 0, err
		}
	}
	for len(b.cur) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		var deadline time.Time
		if d := b.deadline.Load(); d != 0 {
			deadline = time.Unix(0, d)
		}
		f, err := b.s.Recv(deadline, b.done)
		if err != nil {
			if err == io.EOF {
				b.eof = true
				continue
			}
			if err == ErrTimeout && !deadline.IsZero() {
				return 0, os.ErrDeadlineExceeded // a net.Error that is a timeout
			}
			return 0, err
		}
		if f.Type == TypeTrailers {
			b.eof = true
			if b.trailer != nil {
				if err := decodeTrailers(b.trailer, f.Payload); err != nil {
					return 0, err
				}
			}
			continue
		}
		b.cur, b.eof = f.Payload, f.End
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	return n, nil
}

func (b *streamBody) Close() error { return nil }

// decodeTrailers adds the trailers of a Trailers frame's payload to *h.
func decodeTrailers(h *http.Header, payload []byte) error {
	var t wire.Reply
	if err := t.UnmarshalShared(payload); err != nil {
		return fmt.Errorf("%w: trailers: %w", ErrProtocol, err)
	}
	if *h == nil {
		*h = make(http.Header, len(t.Trailers))
	}
	for _, tr := range t.Trailers {
		(*h)[tr.GetName()] = tr.GetValues()
	}
	return nil
}

// SendTrailers sends h as the Trailers frame that ends s from this side.
func SendTrailers(s *Stream, h http.Header) error {
	b, err := proto.Marshal(&wire.Reply{Trailers: wire.EncodeTrailers(h)})
	if err != nil {
		return err
	}
	return s.Send(TypeTrailers, true, b)
}

// ResponseWriter is the http.ResponseWriter of a request served on a
// stream. An answer that ends within chunkSize bytes and without Flush goes
// out as one Reply frame; otherwise the head goes first, then the body in
// Data frames. Trailers (declared in the Trailer header, or set after the
// head with the http.TrailerPrefix) follow the body in a Trailers frame.
// It implements http.Flusher, and http.Hijacker for requests whose
// envelope allows an upgrade.
type ResponseWriter struct {
	s           *Stream
	r           *http.Request
	env         *wire.Request
	ctx         *requestContext
	body        *streamBody // the request's body as it arrives (nil: whole), whatever r.Body became
	header      http.Header
	status      int
	wroteHeader bool
	headSent    bool
	head        bool // a HEAD request: the body is not sent
	stripMesh   bool
	hijacked    bool
	trailers    []string // declared in the Trailer header when the head went out
	buf         *[]byte
	err         error
}

var (
	_ http.Flusher  = (*ResponseWriter)(nil)
	_ http.Hijacker = (*ResponseWriter)(nil)
)

// Header implements http.ResponseWriter.
func (w *ResponseWriter) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter. Informational statuses (1xx)
// are not forwarded, but for 101 (Switching Protocols), which net/http
// takes as final: Hijack then sends it.
func (w *ResponseWriter) WriteHeader(code int) {
	if w.wroteHeader || code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	w.wroteHeader, w.status = true, code
}

// Write implements http.ResponseWriter.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	p0 := p
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.head {
		return len(p), nil
	}
	for len(p) > 0 && w.err == nil { // a frame holds chunkSize at most
		n := min(len(p), chunkSize-len(*w.buf))
		*w.buf = append(*w.buf, p[:n]...)
		p = p[n:]
		if len(*w.buf) >= chunkSize {
			w.flush(false)
		}
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p0), nil
}

// Flush implements http.Flusher: what was written so far goes out now.
func (w *ResponseWriter) Flush() {
	if w.hijacked {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.flush(false)
}

// flush sends the head if it has not gone out, then the buffered body.
func (w *ResponseWriter) flush(end bool) {
	if w.err != nil {
		return
	}
	if !w.headSent {
		w.headSent = true
		w.sniff(*w.buf) // as net/http does with what it holds when the head goes
		if w.err = w.sendReply(nil, false, nil); w.err != nil {
			return
		}
	}
	if len(*w.buf) > 0 || end {
		w.err = w.s.Send(TypeData, end, *w.buf)
		*w.buf = (*w.buf)[:0]
	}
}

// finish sends whatever of the answer has not gone out, ending the stream.
func (w *ResponseWriter) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	trailers := w.trailer()
	if trailers != nil && !w.headSent && len(*w.buf) < chunkSize {
		// Head, body and trailers in one frame (gRPC's trailers-only
		// answers, small answers with trailers).
		w.headSent = true
		return w.sendReply(*w.buf, true, trailers)
	}
	if trailers != nil {
		// The trailers end the stream: the head and body go first.
		w.flush(false)
		if w.err == nil {
			w.err = SendTrailers(w.s, trailers)
		}
		return w.err
	}
	if w.headSent {
		w.flush(true)
		return w.err
	}
	w.headSent = true
	return w.sendReply(*w.buf, true, nil)
}

// trailer collects the answer's trailers as net/http's server does: the
// names declared in the Trailer header before the head went out, and any
// set with the http.TrailerPrefix. Nil: none.
func (w *ResponseWriter) trailer() http.Header {
	declared := w.trailers
	if !w.headSent {
		declared = declaredTrailers(w.header)
	}
	var t http.Header
	for _, k := range declared {
		if v, ok := w.header[k]; ok {
			if t == nil {
				t = make(http.Header)
			}
			t[k] = v
		}
	}
	for k, v := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if t == nil {
				t = make(http.Header)
			}
			t[http.CanonicalHeaderKey(name)] = v
		}
	}
	if t == nil && len(declared) > 0 {
		t = http.Header{} // declared but not set: the body still ends as promised
	}
	return t
}

// declaredTrailers lists the names in h's Trailer header, canonical.
func declaredTrailers(h http.Header) []string {
	var names []string
	for _, v := range h["Trailer"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				names = append(names, http.CanonicalHeaderKey(f))
			}
		}
	}
	return names
}

// sendReply sends the answer's head with body (and, ending it, trailers)
// as one Reply frame.
func (w *ResponseWriter) sendReply(body []byte, end bool, trailers http.Header) error {
	w.sniff(body)
	if !end {
		w.trailers = declaredTrailers(w.header)
		if wire.LongLived(w.header.Get("Content-Type")) {
			w.ctx.lift()
		}
	}
	b := getBuf()
	defer putBuf(b)
	*b = wire.AppendReply(*b, w.status, w.header, body, w.stripMesh)
	if trailers != nil {
		var err error
		if *b, err = (proto.MarshalOptions{}).MarshalAppend(*b, &wire.Reply{Trailers: wire.EncodeTrailers(trailers)}); err != nil {
			return err
		}
	}
	return w.s.Send(TypeReply, end, *b)
}

// sniff sets a Content-Type from the body's first bytes where the handler
// set none, as net/http does.
func (w *ResponseWriter) sniff(body []byte) {
	if _, ok := w.header["Content-Type"]; !ok && len(body) > 0 && bodyAllowed(w.status) {
		w.header["Content-Type"] = []string{http.DetectContentType(body)}
	}
}

// Hijack implements http.Hijacker for a request whose envelope allows an
// upgrade: the handler takes the connection over. What it writes on the
// returned conn (its own 101 answer first) reaches the client as it is,
// and what the client sends after its request reads from it. Closing the
// conn ends the stream.
func (w *ResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	switch {
	case !w.env.GetUpgrade():
		return nil, nil, fmt.Errorf("hop: %w: the request is not an upgrade the route allows", http.ErrNotSupported)
	case w.headSent:
		return nil, nil, errors.New("hop: hijack after the answer began")
	case w.hijacked:
		return nil, nil, http.ErrHijacked
	}
	b, err := proto.Marshal(&wire.Reply{Hijacked: true})
	if err == nil {
		err = w.s.Send(TypeReply, false, b)
	}
	if err != nil {
		return nil, nil, err
	}
	w.hijacked, w.headSent = true, true
	w.ctx.lift()
	body := w.body
	if body == nil {
		body = &streamBody{s: w.s, eof: true}
	}
	body.done = nil // the conn outlives the handler's call, and its context
	c := &hijackedConn{s: w.s, body: body, remote: w.env.GetRemoteAddr(), buf: w.buf}
	if w.status == http.StatusSwitchingProtocols {
		// The handler wrote its 101 before taking the connection over, as
		// net/http allows: it goes out first, with the header it set.
		var hb bytes.Buffer
		hb.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
		_ = w.header.Write(&hb)
		hb.WriteString("\r\n")
		if _, err := c.Write(hb.Bytes()); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	return c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), nil
}

// Tunnel opens a stream on c whose peer takes it over (an upgrade its
// Handler hijacks) and returns it as a connection: bytes both ways, until
// either side closes. payload is the marshalled wire.Request that asks for
// the upgrade; the peer's answer must be the hijacked one, which comes
// before done is closed (nil: no bound).
func Tunnel(c *Conn, payload []byte, done <-chan struct{}) (net.Conn, error) {
	s, err := Start(c, payload, false)
	if err != nil {
		return nil, err
	}
	f, err := s.Recv(time.Time{}, done)
	if err != nil {
		s.Close()
		return nil, err
	}
	var reply wire.Reply
	if f.Type != TypeReply || reply.UnmarshalShared(f.Payload) != nil || !reply.GetHijacked() {
		s.Close()
		return nil, fmt.Errorf("%w: the peer answered %d %s instead of taking the stream over", ErrProtocol, reply.GetStatus(), reply.GetCode())
	}
	return &hijackedConn{s: s, body: &streamBody{s: s}, remote: "sidecar"}, nil
}

// hijackedConn is a stream taken over by a handler: reads are the
// client's bytes (Data frames), writes go back as Data frames.
type hijackedConn struct {
	s      *Stream
	body   *streamBody
	remote string
	buf    *[]byte // the ResponseWriter's, given back on Close

	mu     sync.Mutex
	closed bool
}

func (c *hijackedConn) Read(p []byte) (int, error) {
	n, err := c.body.Read(p)
	if err != nil && err != io.EOF {
		err = &net.OpError{Op: "read", Net: "griddle", Err: err}
	}
	return n, err
}

func (c *hijackedConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), chunkSize)
		if err := c.s.Send(TypeData, false, p[:n]); err != nil {
			return written, &net.OpError{Op: "write", Net: "griddle", Err: err}
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// Close ends the stream: the client's connection closes behind it.
func (c *hijackedConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	err := c.s.Send(TypeData, true, nil)
	c.s.Close()
	if c.buf != nil {
		putBuf(c.buf)
	}
	return err
}

func (c *hijackedConn) LocalAddr() net.Addr  { return meshAddr("handler") }
func (c *hijackedConn) RemoteAddr() net.Addr { return meshAddr(c.remote) }

// SetDeadline sets the read deadline; writes are paced by the peer.
func (c *hijackedConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline bounds the reads that start after it.
func (c *hijackedConn) SetReadDeadline(t time.Time) error {
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	c.body.deadline.Store(d)
	return nil
}

// SetWriteDeadline is accepted and ignored: a write waits only for the
// peer to read.
func (c *hijackedConn) SetWriteDeadline(time.Time) error { return nil }

// meshAddr is the address of either end of a hijacked stream.
type meshAddr string

func (a meshAddr) Network() string { return "griddle" }
func (a meshAddr) String() string  { return string(a) }

// bodyAllowed reports whether a status may carry a body (RFC 9110).
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && (status < 100 || status > 199)
}

// Call sends an envelope (payload: a marshalled wire.Request whose body is
// whole) on c and returns the marshalled wire.Reply of the answer, body
// included, waiting until deadline at most (zero: no deadline). An answer
// that arrived in parts is put together, up to maxBody bytes of body.
//
// sent reports whether the request went out: when it is false the peer
// never saw it. On ErrTimeout, and on ErrCanceled when done is closed
// (nil: never), the stream is cancelled, so the peer stops working on it.
func Call(c *Conn, payload []byte, deadline time.Time, maxBody int, done <-chan struct{}) (reply []byte, sent bool, err error) {
	s, err := c.Open()
	if err != nil {
		return nil, false, err
	}
	if err := s.Send(TypeRequest, true, payload); err != nil {
		s.Close()
		return nil, false, err
	}
	f, err := s.Recv(deadline, done)
	if err != nil {
		s.Close()
		return nil, true, err
	}
	if f.Type != TypeReply {
		s.Close()
		return nil, true, fmt.Errorf("%w: frame type %d before the reply", ErrProtocol, f.Type)
	}
	if f.End {
		return f.Payload, true, nil
	}
	reply, err = gather(s, f, deadline, maxBody, done)
	return reply, true, err
}

// gather puts together an answer whose head, f, came without its body: the
// body that follows in parts is appended to the head as its body field,
// which overrides any earlier, and the trailers after it. On failure s is
// closed.
func gather(s *Stream, f Frame, deadline time.Time, maxBody int, done <-chan struct{}) ([]byte, error) {
	var head wire.Reply
	if err := head.UnmarshalShared(f.Payload); err != nil {
		s.Close()
		return nil, fmt.Errorf("%w: reply: %w", ErrProtocol, err)
	}
	body := append([]byte(nil), head.Body...)
	var trailers []byte
	for {
		part, err := s.Recv(deadline, done)
		if err == io.EOF {
			break
		}
		if err != nil {
			s.Close()
			return nil, err
		}
		if part.Type == TypeTrailers {
			trailers = part.Payload // a Reply of trailers only: appended, it merges
			break
		}
		if len(body)+len(part.Payload) > maxBody {
			s.Close()
			return nil, fmt.Errorf("%w: answer body exceeds %d bytes", ErrTooLarge, maxBody)
		}
		body = append(body, part.Payload...)
		if part.End {
			break
		}
	}
	return append(wire.AppendBody(f.Payload, body), trailers...), nil
}

// Start opens a stream on c and sends payload, a marshalled wire.Request,
// as its Request frame; end says the body in it is whole, otherwise the
// rest follows in Data frames (and perhaps Trailers) that the caller sends.
// The caller reads the answer with Recv and ends the stream.
func Start(c *Conn, payload []byte, end bool) (*Stream, error) {
	s, err := c.Open()
	if err != nil {
		return nil, err
	}
	if err := s.Send(TypeRequest, end, payload); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// ErrTooLarge reports an answer over the caller's limit.
var ErrTooLarge = errors.New("hop: too large")

// RoundTrip sends r on c as an envelope, its whole body read first, and
// returns the answer; an answer in parts is read as its body is. The
// envelope's deadline is r's context's; cancelling that context cancels the
// stream. service becomes the envelope's service.
func RoundTrip(c *Conn, r *http.Request, service string) (*http.Response, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("hop: reading the request body: %w", err)
		}
	}
	ctx := r.Context()
	env := wire.NewRequest(r, service, body)
	env.Host = r.Host
	if env.Host == "" {
		env.Host = r.URL.Host
	}
	if d, ok := ctx.Deadline(); ok {
		env.SetDeadline(d, time.Now())
	}
	b := getBuf()
	var err error
	*b, err = proto.MarshalOptions{}.MarshalAppend(*b, env)
	if err != nil {
		putBuf(b)
		return nil, fmt.Errorf("hop: %w", err)
	}
	s, err := c.Open()
	if err == nil {
		err = s.Send(TypeRequest, true, *b)
	}
	putBuf(b)
	if err != nil {
		if s != nil {
			s.Close()
		}
		return nil, err
	}
	f, err := s.Recv(time.Time{}, ctx.Done())
	if err != nil {
		s.Close()
		if errors.Is(err, ErrCanceled) && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	var reply wire.Reply
	if f.Type != TypeReply {
		s.Close()
		return nil, fmt.Errorf("%w: frame type %d before the reply", ErrProtocol, f.Type)
	}
	if err := reply.UnmarshalShared(f.Payload); err != nil {
		s.Close()
		return nil, fmt.Errorf("%w: reply: %w", ErrProtocol, err)
	}
	if reply.GetCode() != wire.Code_CODE_OK {
		s.Close()
		return nil, fmt.Errorf("%w: %s: %s", ErrReply, reply.GetCode(), reply.GetMessage())
	}
	resp := &http.Response{
		Status:     strconv.Itoa(int(reply.GetStatus())) + " " + http.StatusText(int(reply.GetStatus())),
		StatusCode: int(reply.GetStatus()),
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  make(http.Header, len(reply.GetHeaders())),
		Request: r,
	}
	wire.DecodeHeader(resp.Header, reply.GetHeaders())
	if f.End {
		resp.Body = io.NopCloser(bytes.NewReader(reply.GetBody()))
		resp.ContentLength = int64(len(reply.GetBody()))
		if n := len(reply.GetBody()); n > 0 && resp.Header["Content-Length"] == nil {
			// As a net/http server sends the length of an answer it held
			// whole (wire.Reply.WriteHead leaves such a length to it).
			resp.Header["Content-Length"] = []string{strconv.Itoa(n)}
		}
	} else {
		rb := &replyBody{streamBody: streamBody{s: s, done: ctx.Done(), cur: reply.GetBody()}}
		rb.trailer = &resp.Trailer
		resp.Body = rb
		resp.ContentLength = -1
	}
	return resp, nil
}

// replyBody reads an answer that arrives in parts; Close before the end
// cancels the stream.
type replyBody struct {
	streamBody
}

func (b *replyBody) Close() error {
	b.s.Close()
	return nil
}
