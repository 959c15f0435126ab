package hop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
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
// breaks. A panic in the handler answers CODE_INTERNAL (or, after part of
// the answer went out, cancels the stream) and is logged, as net/http
// does.
func (srv *Server) Serve(s *Stream) {
	f, err := s.Recv(time.Time{}, nil)
	if err != nil || f.Type != TypeRequest {
		s.Close()
		return
	}
	// One allocation for the envelope and the answer's writer.
	x := &struct {
		env wire.Request
		w   ResponseWriter
	}{}
	env := &x.env
	if err := env.UnmarshalShared(f.Payload); err != nil { // the frame is this stream's alone
		sendCode(s, wire.Code_CODE_BAD_REQUEST, "undecodable envelope")
		return
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if d, ok := env.Deadline(time.Now()); ok {
		ctx, cancel = context.WithDeadline(context.Background(), d)
	} else {
		ctx, cancel = context.WithCancel(context.Background())
	}
	defer cancel()
	s.OnCancel(cancel)
	if srv.Context != nil {
		ctx = srv.Context(ctx, s, env)
	}
	var body io.Reader
	if !f.End {
		body = &streamBody{s: s, done: ctx.Done()}
	}
	r, err := env.HTTPRequest(ctx, srv.Host, body)
	if err != nil {
		sendCode(s, wire.Code_CODE_BAD_REQUEST, "invalid method or path")
		return
	}
	w := &x.w
	*w = ResponseWriter{s: s, header: make(http.Header), head: r.Method == http.MethodHead, stripMesh: srv.StripMeshHeaders}
	w.buf = getBuf()
	defer putBuf(w.buf)
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				log := srv.Logger
				if log == nil {
					log = slog.Default()
				}
				log.Error("handler panicked", "request", env.GetId(), "method", r.Method, "path", r.URL.Path, "panic", p)
			}
			if w.headSent {
				s.Close()
			} else {
				sendCode(s, wire.Code_CODE_INTERNAL, "handler panicked")
			}
		}
	}()
	srv.Handler(w, r, env)
	if err := w.finish(); err != nil {
		s.Close()
	}
}

// sendCode answers s with a mesh error instead of an HTTP answer.
func sendCode(s *Stream, code wire.Code, msg string) {
	b, _ := proto.Marshal(&wire.Reply{Code: code, Message: msg})
	_ = s.Send(TypeReply, true, b)
}

// streamBody reads a request body that arrives as Data frames.
type streamBody struct {
	s    *Stream
	done <-chan struct{}
	cur  []byte
	eof  bool
}

func (b *streamBody) Read(p []byte) (int, error) {
	for len(b.cur) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		f, err := b.s.Recv(time.Time{}, b.done)
		if err != nil {
			if err == io.EOF {
				b.eof = true
				continue
			}
			return 0, err
		}
		b.cur, b.eof = f.Payload, f.End
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	return n, nil
}

func (b *streamBody) Close() error { return nil }

// ResponseWriter is the http.ResponseWriter of a request served on a
// stream. An answer that ends within chunkSize bytes and without Flush goes
// out as one Reply frame; otherwise the head goes first, then the body in
// Data frames. It implements http.Flusher.
type ResponseWriter struct {
	s           *Stream
	header      http.Header
	status      int
	wroteHeader bool
	headSent    bool
	head        bool // a HEAD request: the body is not sent
	stripMesh   bool
	buf         *[]byte
	err         error
}

var _ http.Flusher = (*ResponseWriter)(nil)

// Header implements http.ResponseWriter.
func (w *ResponseWriter) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter. Informational statuses (1xx)
// are not forwarded.
func (w *ResponseWriter) WriteHeader(code int) {
	if w.wroteHeader || code >= 100 && code < 200 {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	w.wroteHeader, w.status = true, code
}

// Write implements http.ResponseWriter.
func (w *ResponseWriter) Write(p []byte) (int, error) {
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
	*w.buf = append(*w.buf, p...)
	if len(*w.buf) >= chunkSize {
		w.flush(false)
	}
	return len(p), w.err
}

// Flush implements http.Flusher: what was written so far goes out now.
func (w *ResponseWriter) Flush() {
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
		if w.err = w.sendReply(nil, false); w.err != nil {
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
	if w.headSent {
		w.flush(true)
		return w.err
	}
	w.headSent = true
	return w.sendReply(*w.buf, true)
}

// sendReply sends the answer's head with body as one Reply frame.
func (w *ResponseWriter) sendReply(body []byte, end bool) error {
	if _, ok := w.header["Content-Type"]; !ok && len(body) > 0 && bodyAllowed(w.status) {
		w.header["Content-Type"] = []string{http.DetectContentType(body)}
	}
	b := getBuf()
	defer putBuf(b)
	*b = wire.AppendReply(*b, w.status, w.header, body, w.stripMesh)
	return w.s.Send(TypeReply, end, *b)
}

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
	// The head and then the body in parts: the body is put together and
	// appended to the head as its body field, which overrides any earlier.
	var head wire.Reply
	if err := head.UnmarshalShared(f.Payload); err != nil {
		s.Close()
		return nil, true, fmt.Errorf("%w: reply: %w", ErrProtocol, err)
	}
	body := append([]byte(nil), head.Body...)
	for {
		f, err := s.Recv(deadline, done)
		if err == io.EOF {
			break
		}
		if err != nil {
			s.Close()
			return nil, true, err
		}
		if len(body)+len(f.Payload) > maxBody {
			s.Close()
			return nil, true, fmt.Errorf("%w: answer body exceeds %d bytes", ErrTooLarge, maxBody)
		}
		body = append(body, f.Payload...)
		if f.End {
			break
		}
	}
	return wire.AppendBody(f.Payload, body), true, nil
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
	} else {
		resp.Body = &replyBody{streamBody: streamBody{s: s, done: ctx.Done(), cur: reply.GetBody()}}
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
