package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrInvalid is wrapped by every error from Faults.Validate and New.
var ErrInvalid = errors.New("faultproxy: invalid")

// Faults is what a Proxy does to the bytes it carries. The zero value
// forwards everything unchanged. Faults apply to both directions, to the
// connections open when they are set and to later ones.
type Faults struct {
	// Latency delays every chunk of bytes by this much in each direction,
	// without limiting throughput (chunks are pipelined).
	Latency time.Duration
	// Bandwidth limits each direction of each connection to this many
	// bytes per second; 0: unlimited.
	Bandwidth int
	// Blackhole drops every byte read while it is set; connections stay
	// open and nothing tells either side.
	Blackhole bool
	// Reset resets (TCP RST) every open connection and every new one.
	Reset bool
	// HalfClose closes the direction toward the client (it reads EOF)
	// and drops what the target sends; the client's bytes still reach
	// the target.
	HalfClose bool
}

// Validate reports the first invalid field.
func (f Faults) Validate() error {
	switch {
	case f.Latency < 0:
		return fmt.Errorf("%w: Latency %v is negative", ErrInvalid, f.Latency)
	case f.Bandwidth < 0:
		return fmt.Errorf("%w: Bandwidth %d is negative", ErrInvalid, f.Bandwidth)
	}
	return nil
}

// Stats counts what a Proxy did.
type Stats struct {
	Accepted  int64 // connections accepted
	Open      int64 // connections open now
	Forwarded int64 // bytes written to either side
	Dropped   int64 // bytes read and dropped (blackhole, half close)
}

// Proxy forwards TCP connections from its listener to one target address,
// applying the Faults set last. Its goroutines are owned by it: Close stops
// them and waits for them.
type Proxy struct {
	ln     net.Listener
	target string
	faults atomic.Pointer[Faults]

	mu     sync.Mutex
	conns  map[*pair]struct{}
	closed bool

	accepted, open, forwarded, dropped atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New listens on listen (host:port; port 0 picks a free one) and forwards
// every accepted connection to target. Close releases it.
func New(listen, target string) (*Proxy, error) {
	if target == "" {
		return nil, fmt.Errorf("%w: target is required", ErrInvalid)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen %s: %w", listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{ln: ln, target: target, conns: map[*pair]struct{}{}, ctx: ctx, cancel: cancel}
	p.faults.Store(&Faults{})
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the host:port the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set replaces the faults; an invalid f is refused and changes nothing.
func (p *Proxy) Set(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	p.faults.Store(&f)
	p.mu.Lock()
	var hit []*pair
	if f.Reset || f.HalfClose {
		for c := range p.conns {
			hit = append(hit, c)
		}
	}
	p.mu.Unlock()
	for _, c := range hit {
		if f.Reset {
			c.reset()
		} else {
			c.halfClose()
		}
	}
	return nil
}

// Heal is Set(Faults{}).
func (p *Proxy) Heal() { _ = p.Set(Faults{}) }

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{Accepted: p.accepted.Load(), Open: p.open.Load(), Forwarded: p.forwarded.Load(), Dropped: p.dropped.Load()}
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	conns := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.cancel()
	err := p.ln.Close()
	for _, c := range conns {
		c.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		if p.faults.Load().Reset {
			resetConn(c)
			continue
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

// pair is one proxied connection: client side and target side.
type pair struct {
	client, target net.Conn
	once           sync.Once
	halfOnce       sync.Once
}

// halfClose ends the direction toward the client (it reads EOF).
func (c *pair) halfClose() { c.halfOnce.Do(func() { closeWrite(c.client) }) }

func (c *pair) close() {
	c.once.Do(func() {
		_ = c.client.Close()
		_ = c.target.Close()
	})
}

func (c *pair) reset() {
	c.once.Do(func() {
		resetConn(c.client)
		resetConn(c.target)
	})
}

// resetConn closes c so that the peer sees a reset, not an orderly end.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) serve(client net.Conn) {
	d := net.Dialer{Timeout: 5 * time.Second}
	target, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		resetConn(client)
		return
	}
	c := &pair{client: client, target: target}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	p.open.Add(1)
	if p.faults.Load().HalfClose {
		c.halfClose()
	}
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		p.open.Add(-1)
		c.close()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { p.pump(c, client, target, false) })
	p.pump(c, target, client, true)
	wg.Wait()
}

// chunk is bytes read at a time, to be written once due.
type chunk struct {
	b   []byte
	due time.Time
}

// pump copies src to dst through the faults until either side ends;
// toClient tells the direction (half close acts on the way to the client).
// A reader goroutine stamps each chunk with its due time so that latency
// delays bytes without limiting their rate.
func (p *Proxy) pump(c *pair, src, dst net.Conn, toClient bool) {
	q := make(chan chunk, 64)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				f := p.faults.Load()
				if f.Blackhole || (toClient && f.HalfClose) {
					p.dropped.Add(int64(n))
				} else {
					select {
					case q <- chunk{b: b[:n], due: time.Now().Add(f.Latency)}:
					case <-p.ctx.Done():
						return
					}
				}
			}
			if err != nil {
				return
			}
		}
	})
	defer wg.Wait()
	for ch := range q {
		if toClient && p.faults.Load().HalfClose {
			p.dropped.Add(int64(len(ch.b)))
			continue
		}
		if !p.sleepUntil(ch.due) {
			break
		}
		if p.faults.Load().Blackhole {
			p.dropped.Add(int64(len(ch.b)))
			continue
		}
		if !p.writePaced(dst, ch.b) {
			break
		}
	}
	// One side ended: end the whole connection, as a plain relay would
	// once both directions are done; draining the queue unblocks the
	// reader.
	c.close()
	for range q {
	}
}

// writePaced writes b to dst, at most Bandwidth bytes per second.
func (p *Proxy) writePaced(dst net.Conn, b []byte) bool {
	for len(b) > 0 {
		n := len(b)
		bw := p.faults.Load().Bandwidth
		if bw > 0 {
			n = min(n, max(bw/50, 1)) // about 20 ms of bytes at a time
		}
		w, err := dst.Write(b[:n])
		p.forwarded.Add(int64(w))
		if err != nil {
			return false
		}
		b = b[n:]
		if bw > 0 && !p.sleepUntil(time.Now().Add(time.Duration(n)*time.Second/time.Duration(bw))) {
			return false
		}
	}
	return true
}

// sleepUntil waits until t or the proxy closes (false). A Set that lowers
// the latency does not shorten waits already begun.
func (p *Proxy) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return p.ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// closeWrite sends FIN on c's write side, where c supports it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

var _ io.Closer = (*Proxy)(nil)
