package storehttp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/store"
)

// A Client's operations (OpGet, OpRange, OpGetMany, OpCommit) travel on one
// long-lived connection of multiplexed frames (package hop) instead of one
// HTTP request each: the client asks for it with GET HopPath and
// "Upgrade: griddle-store-hop", authenticated as every request is (the
// connection keeps the caller it was opened by), and each operation is
// then a unary call whose payload is the key space's name (one length
// byte, then the name) followed by the operation.
const (
	HopUpgrade = "griddle-store-hop"
	HopPath    = "/v1/hop"
)

// serveHop upgrades r's connection to a hop connection answering the
// caller's operations, until either side closes it or the Server does.
func (s *Server) serveHop(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || !strings.EqualFold(r.Header.Get("Upgrade"), HopUpgrade) {
		w.Header().Set("Upgrade", HopUpgrade)
		http.Error(w, "want Upgrade: "+HopUpgrade+" over HTTP/1.1", http.StatusUpgradeRequired)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.fail(w, store.ErrClosed)
		return
	}
	s.wg.Add(1) // for the goroutine that closes the connection with the Server
	s.mu.Unlock()
	conn, err := switchToHop(w)
	if err != nil {
		s.wg.Done()
		return
	}
	caller := callerOf(r)
	hc := hop.New(conn, hop.Config{
		Accepting: true,
		Unary:     func(ctx context.Context, p []byte) []byte { return s.hopOp(ctx, caller, p) },
		Quick: func(p []byte) bool {
			_, op, ok := splitHopOp(p)
			return ok && s.Quick(op)
		},
		MaxFrame: maxOpBytes + 1<<10,
	})
	go func() {
		defer s.wg.Done()
		select {
		case <-hc.Done():
		case <-s.ctx.Done():
		}
		_ = hc.Close()
	}()
}

// switchToHop takes w's connection over and answers 101 Switching
// Protocols on it; on an error the connection is closed.
func switchToHop(w http.ResponseWriter) (io.ReadWriteCloser, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	// The HTTP server's read and write deadlines stay on a connection it
	// hands over; a hop connection lives as long as its peer keeps it.
	if err := conn.SetDeadline(time.Time{}); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+HopUpgrade+"\r\n\r\n"); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if brw.Reader.Buffered() == 0 { // as always: the client waits for the 101
		return conn, nil
	}
	return hop.Replayed{Conn: conn, R: brw.Reader}, nil
}

// hopOp answers one operation of caller's hop connection; ctx ends when
// the peer gives the call up or the connection closes (as it does when
// the Server does).
func (s *Server) hopOp(ctx context.Context, caller string, p []byte) []byte {
	name, op, ok := splitHopOp(p)
	if !ok {
		return s.opError(fmt.Errorf("%w: malformed operation", errBadRequest))
	}
	st, err := s.spaceFor(caller, name)
	if err != nil {
		return s.opError(err)
	}
	return s.opIn(ctx, st, op)
}

// appendHopName starts the payload of an operation in key space name; the
// operation follows.
func appendHopName(dst []byte, name string) []byte {
	dst = append(dst, byte(len(name)))
	return append(dst, name...)
}

// splitHopOp is a payload undone.
func splitHopOp(p []byte) (name string, op []byte, ok bool) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return "", nil, false
	}
	n := int(p[0])
	return string(p[1 : 1+n]), p[1+n:], true
}

// hopRedial is how long a Client waits after a hop connection failed or
// could not be opened before it tries again; its operations go over HTTP
// meanwhile.
const hopRedial = time.Second

// hopLink is a Client's hop connection to its Server, opened in the
// background at the first operation.
type hopLink struct {
	conn atomic.Pointer[hop.Conn] // nil: none up

	mu      sync.Mutex // guards the dial state below
	dialing bool
	off     bool      // the Server does not offer it: HTTP only
	retry   time.Time // no new dial before
	wg      sync.WaitGroup
}

// hopConn returns c's hop connection, or nil while there is none (then it
// starts opening one, unless the Server does not offer it).
func (c *Client) hopConn() *hop.Conn {
	l := &c.hop
	if conn := l.conn.Load(); conn != nil {
		select {
		case <-conn.Done():
		default:
			return conn
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if conn := l.conn.Load(); conn != nil {
		select {
		case <-conn.Done():
			l.conn.Store(nil)
			l.retry = time.Now().Add(hopRedial)
		default:
			return conn
		}
	}
	if l.off || l.dialing || c.closed.Load() || time.Now().Before(l.retry) {
		return nil
	}
	l.dialing = true
	l.wg.Go(c.dialHop)
	return nil
}

func (c *Client) dialHop() {
	conn, off, err := c.upgrade()
	l := &c.hop
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dialing = false
	switch {
	case off:
		l.off = true
	case err != nil:
		l.retry = time.Now().Add(hopRedial)
	case c.closed.Load():
		_ = conn.Close()
	default:
		l.conn.Store(conn)
	}
}

// upgrade asks the Server for a hop connection; off reports a Server that
// does not offer one (an older one).
func (c *Client) upgrade() (conn *hop.Conn, off bool, err error) {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, c.base+HopPath, nil)
	if err != nil {
		return nil, true, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", HopUpgrade)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, false, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusUpgradeRequired:
			return nil, true, fmt.Errorf("storehttp: no hop connection: %s", resp.Status)
		}
		return nil, false, fmt.Errorf("storehttp: no hop connection: %s", resp.Status)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		_ = resp.Body.Close()
		return nil, true, fmt.Errorf("storehttp: no hop connection: the HTTP client cannot switch protocols")
	}
	return hop.New(rwc, hop.Config{}), false, nil
}

// hopCall sends the operation payload (appendHopName, then the
// operation) on hc and returns its answer.
func (c *Client) hopCall(ctx context.Context, hc *hop.Conn, payload []byte) ([]byte, error) {
	b, err := hop.Unary(hc, payload, ctx.Done())
	c.answered(ctx, err)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("storehttp: %w", ctx.Err())
		}
		return nil, fmt.Errorf("storehttp: %w", err)
	}
	return b, nil
}

// closeHop closes c's hop connection and waits for a dial under way.
func (c *Client) closeHop() {
	c.cancel()
	c.hop.wg.Wait()
	if conn := c.hop.conn.Swap(nil); conn != nil {
		_ = conn.Close()
	}
}
