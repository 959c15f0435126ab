package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// HTTP/1.x framing that net/http tolerates but an intermediary must not:
// net/http lets Transfer-Encoding override a Content-Length beside it (and
// drops the Content-Length), folds a continuation line (obs-fold) into the
// header before it, and collapses repeated equal Content-Lengths. A server
// behind the edge, or a proxy in front of it, may frame such a request the
// other way, and what one of them takes for a body the other runs as a
// request of its own (request smuggling). The edge refuses them with 400
// and closes the connection, before any handler sees them.
//
// framingGuard sits between the connection and net/http and reads the
// request framing the way net/http does (head up to the first empty line,
// then a Content-Length or chunked body), so it knows where each request
// head begins. It hands net/http a head only once the whole head was
// checked. A refused head is replaced by a request of refusedMethod, which
// the edge's entry answers with 400 and the reason, and nothing after it
// is read: the answers of earlier requests on the connection go out first,
// in order, and the refusal is the connection's last.
//
// HTTP/2 (prior knowledge, or by ALPN: tlsEntry) carries no such framing
// and is passed through untouched, as are the bytes after a protocol
// upgrade (EndFraming).
type framingGuard struct {
	net.Conn
	maxHead int // longest head checked; a longer one is left to net/http's 431

	buf     []byte // read from Conn: buf[:ready] checked, the rest not yet
	ready   int
	pos     int   // scan position in buf, ≥ ready
	state   int   // fHead, fBody, fChunkSize, fChunkData, fChunkEnd, fTrailer, fPass
	left    int64 // body or chunk bytes still to come
	heads   int   // heads handed to net/http
	done    bool  // the refusal was handed over: nothing more is read
	refusal string
	tail    []byte // what is handed to net/http after buf[:ready]: the refusal request
	// tls is the connection's TLS state when the guard is over TLS (the
	// requests' r.TLS, which net/http sets only on a *tls.Conn).
	tls *tls.ConnectionState
}

const (
	fHead = iota
	fBody
	fChunkSize
	fChunkData
	fChunkEnd
	fTrailer
	fPass
)

// refusedMethod is the method of the request that stands for a refused
// head. A client may send it too; it is refused all the same.
const refusedMethod = "GRIDDLE-REFUSED"

var refusedRequest = []byte(refusedMethod + " / HTTP/1.1\r\nHost: refused\r\nConnection: close\r\n\r\n")

// errFraming is the read error net/http sees in a body whose chunked
// framing is broken; the connection reads nothing more.
var errFraming = errors.New("edge: malformed chunked body")

// maxChunkLine bounds a chunk-size line or a trailer line.
const maxChunkLine = 4096

func newFramingGuard(c net.Conn, maxHeaderBytes int) *framingGuard {
	return &framingGuard{Conn: c, maxHead: maxHeaderBytes + 4096} // net/http's own slack
}

// EndFraming stops the checks: what follows on the connection is no longer
// HTTP/1 (the gateway calls it when it takes the connection over for an
// upgrade).
func (g *framingGuard) EndFraming() {
	g.state = fPass
	g.ready, g.pos = len(g.buf), len(g.buf)
}

// Read hands net/http the checked bytes.
func (g *framingGuard) Read(p []byte) (int, error) {
	for {
		if g.ready > 0 {
			n := copy(p, g.buf[:g.ready])
			g.buf = g.buf[:copy(g.buf, g.buf[n:])]
			g.ready -= n
			g.pos -= n
			return n, nil
		}
		if len(g.tail) > 0 {
			n := copy(p, g.tail)
			g.tail = g.tail[n:]
			return n, nil
		}
		if g.done {
			return 0, errFraming
		}
		if g.state == fPass && len(g.buf) == 0 {
			return g.Conn.Read(p)
		}
		if len(g.buf) == cap(g.buf) {
			g.buf = append(g.buf, make([]byte, max(4096, len(g.buf)))...)[:len(g.buf)]
		}
		n, err := g.Conn.Read(g.buf[len(g.buf):cap(g.buf)])
		g.buf = g.buf[:len(g.buf)+n]
		if n > 0 {
			g.scan()
		}
		if err != nil && g.ready == 0 && len(g.tail) == 0 {
			return 0, err
		}
	}
}

// scan advances the framing over buf[pos:], moving ready past what is
// checked.
func (g *framingGuard) scan() {
	for g.pos < len(g.buf) && !g.done {
		switch g.state {
		case fPass:
			g.pos = len(g.buf)
			g.ready = g.pos
		case fHead:
			end := headEnd(g.buf[g.pos:])
			if end < 0 {
				if len(g.buf)-g.pos > g.maxHead {
					g.state = fPass // net/http answers 431 and closes
					continue
				}
				return
			}
			g.head(g.buf[g.pos : g.pos+end])
			if g.done {
				return
			}
			g.pos += end
			g.ready = g.pos
			g.heads++
		case fBody, fChunkData:
			n := min(g.left, int64(len(g.buf)-g.pos))
			g.pos += int(n)
			g.left -= n
			g.ready = g.pos
			if g.left == 0 {
				if g.state == fBody {
					g.state = fHead
				} else {
					g.state = fChunkEnd
				}
			}
		case fChunkSize, fChunkEnd, fTrailer:
			i := bytes.IndexByte(g.buf[g.pos:], '\n')
			if i < 0 {
				if len(g.buf)-g.pos > maxChunkLine {
					g.broken()
				}
				return
			}
			line := bytes.TrimSuffix(g.buf[g.pos:g.pos+i], []byte("\r"))
			switch g.state {
			case fChunkEnd:
				if len(line) != 0 {
					g.broken()
					return
				}
				g.state = fChunkSize
			case fTrailer:
				if len(line) == 0 {
					g.state = fHead
				}
			case fChunkSize:
				size, ok := chunkSize(line)
				if !ok {
					g.broken()
					return
				}
				g.left = size
				g.state = fChunkData
				if size == 0 {
					g.state = fTrailer
				}
			}
			g.pos += i + 1
			g.ready = g.pos
		}
	}
}

// broken ends the connection's reads inside a body: net/http's body read
// fails, the handler answers, and no request after it is read.
func (g *framingGuard) broken() {
	g.buf = g.buf[:g.ready]
	g.pos = g.ready
	g.done = true
}

// head checks one request head (request line, fields, the empty line) and
// sets the state for its body; a head to refuse is replaced by the refusal
// request.
func (g *framingGuard) head(h []byte) {
	reqLine, fields, _ := bytes.Cut(h, []byte("\n"))
	reqLine = bytes.TrimSuffix(reqLine, []byte("\r"))
	if g.heads == 0 && bytes.Equal(reqLine, []byte("PRI * HTTP/2.0")) {
		g.state = fPass // HTTP/2 with prior knowledge
		return
	}
	var cls [][]byte
	var te []byte
	hasTE := false
	for l := range bytes.Lines(fields) {
		l = bytes.TrimSuffix(bytes.TrimSuffix(l, []byte("\n")), []byte("\r"))
		if len(l) == 0 {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			g.refuse("obs-fold: a header line continued on the next")
			return
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue // net/http refuses it
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			cls = append(cls, value)
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if hasTE {
				te = nil // net/http refuses more than one (501)
			} else {
				te = value
			}
			hasTE = true
		}
	}
	switch {
	case hasTE && len(cls) > 0:
		g.refuse("both Content-Length and Transfer-Encoding")
		return
	case len(cls) > 1:
		g.refuse("Content-Length given more than once")
		return
	case hasTE:
		if !bytes.EqualFold(te, []byte("chunked")) {
			g.state = fPass // net/http answers 501 and closes
			return
		}
		g.state = fChunkSize
	case len(cls) == 1:
		n, err := strconv.ParseUint(string(cls[0]), 10, 63)
		if err != nil || cls[0][0] == '+' {
			g.state = fPass // net/http answers 400 and closes
			return
		}
		g.left = int64(n)
		if n > 0 {
			g.state = fBody
		}
	}
}

// refuse replaces the head at pos, and everything after it, by the
// refusal request.
func (g *framingGuard) refuse(reason string) {
	g.refusal = reason
	g.buf = g.buf[:g.pos]
	g.ready = g.pos
	g.tail = refusedRequest
	g.done = true
}

// headEnd is the length of the head at the start of b up to and including
// its empty line (lines end in LF, with or without CR, as net/http reads
// them), or -1 if b holds no whole head.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		empty := j == 0 || j == 1 && b[i] == '\r'
		i += j + 1
		// An empty first line is a head of its own: net/http refuses it.
		if empty {
			return i
		}
	}
}

// chunkSize parses a chunk-size line as net/http does: hex digits, then
// optional whitespace and extensions.
func chunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(line), 16, 63)
	return int64(n), err == nil
}

// guardListener wraps each connection in a framingGuard.
type guardListener struct {
	net.Listener
	maxHeaderBytes int
}

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newFramingGuard(c, l.maxHeaderBytes), nil
}

type guardKey struct{}

// withGuard is http.Server.ConnContext: it puts the connection's guard in
// its requests' contexts.
func withGuard(ctx context.Context, c net.Conn) context.Context {
	if g, ok := c.(*framingGuard); ok {
		return context.WithValue(ctx, guardKey{}, g)
	}
	return ctx
}

// refuseFraming answers the refusal request with 400, the reason and the
// end of the connection, and hands every other request to next.
func refuseFraming(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g, _ := r.Context().Value(guardKey{}).(*framingGuard)
		if g != nil && g.tls != nil && r.TLS == nil {
			r.TLS = g.tls
		}
		if r.Method != refusedMethod {
			next.ServeHTTP(w, r)
			return
		}
		reason := "request refused"
		if g != nil && g.refusal != "" {
			reason = g.refusal
		}
		w.Header().Set("Connection", "close")
		http.Error(w, "400 Bad Request: "+reason, http.StatusBadRequest)
	})
}

// tlsEntry is the HTTPS listener. It completes each TLS handshake itself,
// in a goroutine of its own and within handshakeTimeout, and hands
// net/http an HTTP/2 connection as the *tls.Conn net/http serves HTTP/2 on,
// and an HTTP/1 one behind a framingGuard (whose requests get their TLS
// state back from refuseFraming). Close stops it; Accept then fails.
type tlsEntry struct {
	ln             net.Listener
	cfg            *tls.Config
	maxHeaderBytes int
	timeout        time.Duration

	conns chan net.Conn
	done  chan struct{} // closed when the accept loop has ended
	err   error         // why it ended; read after done
	wg    sync.WaitGroup
}

func newTLSEntry(ln net.Listener, cfg *tls.Config, maxHeaderBytes int, handshakeTimeout time.Duration) *tlsEntry {
	t := &tlsEntry{ln: ln, cfg: cfg, maxHeaderBytes: maxHeaderBytes, timeout: handshakeTimeout,
		conns: make(chan net.Conn), done: make(chan struct{})}
	go t.loop()
	return t
}

func (t *tlsEntry) loop() {
	defer close(t.done)
	for {
		c, err := t.ln.Accept()
		if err != nil {
			t.err = err
			return
		}
		t.wg.Go(func() { t.handshake(c) })
	}
}

func (t *tlsEntry) handshake(c net.Conn) {
	tc := tls.Server(c, t.cfg)
	_ = tc.SetDeadline(time.Now().Add(t.timeout))
	if err := tc.Handshake(); err != nil {
		_ = tc.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	var out net.Conn = tc
	if cs := tc.ConnectionState(); cs.NegotiatedProtocol != "h2" {
		g := newFramingGuard(tc, t.maxHeaderBytes)
		g.tls = &cs
		out = g
	}
	select {
	case t.conns <- out:
	case <-t.done:
		_ = out.Close()
	}
}

func (t *tlsEntry) Accept() (net.Conn, error) {
	select {
	case c := <-t.conns:
		return c, nil
	case <-t.done:
		return nil, t.err
	}
}

// Close stops accepting and waits for the handshakes under way.
func (t *tlsEntry) Close() error {
	err := t.ln.Close()
	<-t.done
	t.wg.Wait()
	return err
}

func (t *tlsEntry) Addr() net.Addr { return t.ln.Addr() }
