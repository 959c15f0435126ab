package floor

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
)

// maxFrame bounds the frames the unix floors accept.
const maxFrame = 16 << 20

// Unix is the floor of one request/reply exchange on a unix socket, the
// transport of the sidecar → handler hop and of the handler's calls back:
// Config.InFlight connections, each carrying one length-prefixed frame
// (4 bytes of length, then the bytes) out and the same frame back, one
// write and one blocking read per frame on each side, a goroutine per
// connection on the echoing side. No HTTP, no envelope: a write, a wake-up
// and a read each way. An exchange that keeps one connection per request
// in flight costs at least this.
func Unix() Floor {
	return Floor{Name: "unix", Hop: "sidecar → handler (unix socket, a connection per request in flight)", open: openUnix}
}

// UnixMux is the floor of the shape the sidecar → handler hop is meant to
// take: one long-lived unix connection carrying all Config.InFlight
// requests as multiplexed frames (length, request id, bytes). Senders
// append their frames to a shared buffer and whoever finds no write in
// progress writes everything queued in one system call; one goroutine per
// side reads, the echoing side flushes its replies whenever its input runs
// dry. At 1 in flight it is Unix plus the hand-off to and from the reading
// goroutine; with more in flight the batching shares each system call and
// wake-up among several frames.
func UnixMux() Floor {
	return Floor{Name: "unix-mux", Hop: "sidecar → handler (unix socket, one multiplexed connection)", open: openUnixMux}
}

func listenUnix(r *Rig, dir, name string) (net.Listener, error) {
	ln, err := net.Listen("unix", filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	r.onClose(func() error {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	return ln, nil
}

// serve accepts connections on ln and runs echo on each until ln and the
// connections are closed.
func serve(r *Rig, ln net.Listener, echo func(net.Conn)) {
	var mu sync.Mutex
	var conns []net.Conn
	closed := false
	r.onClose(func() error {
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		return nil
	})
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns = append(conns, c)
			mu.Unlock()
			r.wg.Go(func() { echo(c) })
		}
	})
}

func openUnix(cfg Config, dir string) (*Rig, error) {
	r := &Rig{}
	ln, err := listenUnix(r, dir, "unix.sock")
	if err != nil {
		return nil, err
	}
	serve(r, ln, func(c net.Conn) {
		buf := make([]byte, 4, 4+cfg.Size)
		for {
			if _, err := io.ReadFull(c, buf[:4]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(buf[:4])
			if n > maxFrame {
				return
			}
			buf = growTo(buf, 4+int(n))
			if _, err := io.ReadFull(c, buf[4:]); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	conns := make([]net.Conn, cfg.InFlight)
	for i := range conns {
		if conns[i], err = net.Dial("unix", ln.Addr().String()); err != nil {
			_ = r.Close()
			return nil, err
		}
		c := conns[i]
		r.onClose(c.Close)
	}
	frame := binary.BigEndian.AppendUint32(nil, uint32(cfg.Size))
	frame = append(frame, bytes.Repeat([]byte{'u'}, cfg.Size)...)
	bufs := make([][]byte, cfg.InFlight)
	for i := range bufs {
		bufs[i] = make([]byte, len(frame))
	}
	r.trip = func(w int) error {
		if _, err := conns[w].Write(frame); err != nil {
			return err
		}
		if _, err := io.ReadFull(conns[w], bufs[w]); err != nil {
			return err
		}
		if !bytes.Equal(bufs[w], frame) {
			return ErrEcho
		}
		return nil
	}
	return r, nil
}

func growTo(b []byte, n int) []byte {
	if cap(b) < n {
		nb := make([]byte, n)
		copy(nb, b)
		return nb
	}
	return b[:n]
}

// batchWriter writes frames from many goroutines to one connection: a
// frame is appended to the queue, and the goroutine that finds no write in
// progress writes the whole queue, again and again until it is empty.
type batchWriter struct {
	w     io.Writer
	mu    sync.Mutex
	queue []byte
	spare []byte
	busy  bool
	err   error
}

func (b *batchWriter) write(frame []byte) error {
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return err
	}
	b.queue = append(b.queue, frame...)
	if b.busy {
		b.mu.Unlock()
		return nil
	}
	b.busy = true
	for len(b.queue) > 0 && b.err == nil {
		out := b.queue
		b.queue = b.spare[:0]
		b.mu.Unlock()
		_, err := b.w.Write(out)
		b.mu.Lock()
		b.spare = out
		if err != nil {
			b.err = err
		}
	}
	b.busy = false
	err := b.err
	b.mu.Unlock()
	return err
}

// muxHeader is a multiplexed frame's length (of what follows) and id.
const muxHeader = 8

func openUnixMux(cfg Config, dir string) (*Rig, error) {
	r := &Rig{}
	ln, err := listenUnix(r, dir, "mux.sock")
	if err != nil {
		return nil, err
	}
	serve(r, ln, func(c net.Conn) { muxEcho(cfg, c) })
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	r.onClose(c.Close)
	muxClient(r, cfg, c)
	return r, nil
}

// muxEcho is the echoing side of the multiplexed floors: it reads frames
// and writes them back, flushing whenever its input runs dry.
func muxEcho(cfg Config, c io.ReadWriter) {
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 64<<10)
	var hdr [muxHeader]byte
	body := make([]byte, cfg.Size)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n < 4 || n > maxFrame {
			return
		}
		body = growTo(body, int(n)-4)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		_, _ = bw.Write(hdr[:])
		_, _ = bw.Write(body)
		if br.Buffered() == 0 { // the next read would wait: send what is ready
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

// muxClient makes r's round trips on c: workers write their frames through
// one batchWriter, and one reading goroutine hands each reply to its
// worker.
func muxClient(r *Rig, cfg Config, c io.ReadWriter) {
	bw := &batchWriter{w: c}
	payload := bytes.Repeat([]byte{'x'}, cfg.Size)
	frames := make([][]byte, cfg.InFlight)
	replies := make([][]byte, cfg.InFlight)
	done := make([]chan error, cfg.InFlight)
	for i := range frames {
		f := binary.BigEndian.AppendUint32(nil, uint32(4+cfg.Size))
		f = binary.BigEndian.AppendUint32(f, uint32(i))
		frames[i] = append(f, payload...)
		replies[i] = make([]byte, cfg.Size)
		done[i] = make(chan error, 1)
	}
	// The reading goroutine hands each reply to its worker: it copies the
	// body into the worker's buffer, then signals the worker's channel.
	r.wg.Go(func() {
		br := bufio.NewReaderSize(c, 64<<10)
		var hdr [muxHeader]byte
		fail := func(err error) {
			for _, d := range done {
				select {
				case d <- err:
				default:
				}
			}
		}
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				fail(err)
				return
			}
			n, id := binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:])
			if id >= uint32(len(replies)) || int(n)-4 != cfg.Size {
				fail(ErrEcho)
				return
			}
			if _, err := io.ReadFull(br, replies[id]); err != nil {
				fail(err)
				return
			}
			done[id] <- nil
		}
	})
	r.trip = func(w int) error {
		if err := bw.write(frames[w]); err != nil {
			return err
		}
		if err := <-done[w]; err != nil {
			return err
		}
		if !bytes.Equal(replies[w], payload) {
			return ErrEcho
		}
		return nil
	}
}
