// Package shmpipe is a byte stream between two processes of one host over
// shared memory, for the sidecar ↔ handler hop: the same bytes a unix
// socket would carry, without a system call per read or write while both
// sides are busy.
//
// A pipe is two rings, one each way, in one memfd mapped by both
// processes. A writer copies into its ring and publishes the new tail; a
// reader copies out and publishes the new head. Neither makes a system call
// unless the other side sleeps: a reader that finds its ring empty marks
// itself sleeping and waits on an eventfd in Go's poller, and a writer that
// sees the mark rings that eventfd (one 8-byte write); a writer that finds
// its ring full waits the same way for the reader to make room. So a
// crossing costs the writer one eventfd write and the reader one wake-up
// when the reader is idle, and nothing when it is not, against a unix
// socket's write, wake-up, read and empty read (Go's poller reads before it
// waits) every time.
//
// The rings are lock-free single-producer, single-consumer: Read and Write
// each take a lock of their own, so any number of goroutines may call
// them. The eventfds are never read: Go's poller is edge-triggered, and a
// waiter checks its ring, not the eventfd, after arming the wait, so a ring
// that comes between the check and the wait still wakes it.
//
// The unix socket the pipe was offered on stays open beside it as its
// lifeline: when either process closes the pipe or dies, the other's read
// of that socket ends, and its side closes too (a blocked Read returns
// io.EOF once the ring is drained, a blocked Write an error).
package shmpipe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Errors of a pipe and its handshake. Check with errors.Is.
var (
	// ErrClosed reports a Read or Write on a pipe this side closed.
	ErrClosed = errors.New("shmpipe: pipe closed")
	// ErrPeerClosed reports a Write on a pipe the other side closed.
	ErrPeerClosed = errors.New("shmpipe: peer closed the pipe")
	// ErrRefused reports an offer the peer did not accept (a peer that
	// does not speak shmpipe closes the connection).
	ErrRefused = errors.New("shmpipe: offer not accepted")
	// ErrUnsupported reports a system without memfd or eventfd.
	ErrUnsupported = errors.New("shmpipe: shared memory pipes are not supported on this system")
)

// magic opens an offer. Its first byte can never begin a hop frame (a
// length above any frame's limit), so an accepting side tells an offer
// from a plain connection's first frame by it.
const magic = "\xffgriddle-shmpipe/1"

const (
	// DefaultSize is each ring's size: a hop stream's flow-control window.
	DefaultSize = 512 << 10
	minSize     = 4 << 10
	maxSize     = 64 << 20

	// The shared header: a cache line per word the two sides write, so
	// that a writer's tail and a reader's head do not share one.
	line       = 64
	ringHeader = 4 * line // tail, head, reader sleeping, writer waiting
	offClosed  = 2 * ringHeader
	offSize    = offClosed + line
	headerSize = 4096
)

// Offer's file descriptors: the memory, then each ring's data bell and
// space bell (ring i's at 1+2i and 2+2i).
const (
	fdMem = 0
	nFDs  = 5
)

func dataBell(fds []int, ring int) int  { return fds[1+2*ring] }
func spaceBell(fds []int, ring int) int { return fds[2+2*ring] }

// ring is one direction's view of the shared memory.
type ring struct {
	tail     *atomic.Uint64 // bytes ever written; only the writer stores it
	head     *atomic.Uint64 // bytes ever read; only the reader stores it
	sleeping *atomic.Uint32 // 1: the reader waits on the data bell
	waiting  *atomic.Uint32 // 1: the writer waits on the space bell
	data     []byte
	mask     uint64
}

func word64(mem []byte, off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&mem[off]))
}

func word32(mem []byte, off int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

func newRing(mem []byte, i, size int) ring {
	h := i * ringHeader
	start := headerSize + i*size
	return ring{
		tail:     word64(mem, h),
		head:     word64(mem, h+line),
		sleeping: word32(mem, h+2*line),
		waiting:  word32(mem, h+3*line),
		data:     mem[start : start+size : start+size],
		mask:     uint64(size - 1),
	}
}

// copyOut copies what lies between head and tail, as much as b holds.
func (r *ring) copyOut(b []byte, head, tail uint64) int {
	// Clamped to the ring: the peer's counters are not to be trusted.
	n := min(uint64(len(b)), tail-head, r.mask+1)
	off := head & r.mask
	c := copy(b[:n], r.data[off:])
	copy(b[c:n], r.data)
	return int(n)
}

// copyIn copies as much of b as free bytes hold, at tail.
func (r *ring) copyIn(b []byte, tail, free uint64) int {
	n := min(uint64(len(b)), free, r.mask+1)
	off := tail & r.mask
	c := copy(r.data[off:], b[:n])
	copy(r.data, b[c:n])
	return int(n)
}

// bell is one of the eventfds: one side waits on it in the poller, the
// other rings it with a raw write, so that ringing does not wake the
// ringer's own poller.
type bell struct {
	wait *os.File        // this side waits on it (nil if it rings it)
	rc   syscall.RawConn // wait's
	fd   int             // this side rings it (-1 if it waits on it)
}

var one = [8]byte{1}

// waitOn is a bell this side waits on: a dup of fd, non-blocking, in Go's
// poller.
func waitOn(fd int) (bell, error) {
	b, err := ringOn(fd)
	if err != nil {
		return b, err
	}
	if err := syscall.SetNonblock(b.fd, true); err != nil {
		_ = syscall.Close(b.fd)
		return bell{fd: -1}, fmt.Errorf("shmpipe: %w", err)
	}
	b.wait = os.NewFile(uintptr(b.fd), "shmpipe-bell")
	b.fd = -1
	if b.rc, err = b.wait.SyscallConn(); err != nil {
		return b, fmt.Errorf("shmpipe: %w", err)
	}
	return b, nil
}

// ringOn is a bell this side rings: a dup of fd.
func ringOn(fd int) (bell, error) {
	dup, err := syscall.Dup(fd)
	if err != nil {
		return bell{fd: -1}, fmt.Errorf("shmpipe: %w", err)
	}
	syscall.CloseOnExec(dup)
	return bell{fd: dup}, nil
}

func (b *bell) ring() { _, _ = syscall.Write(b.fd, one[:]) }

// wake rings a bell this side waits on, to wake its own waiter; it does
// nothing once the bell is closed.
func (b *bell) wake() {
	_ = b.rc.Write(func(fd uintptr) bool {
		_, _ = syscall.Write(int(fd), one[:])
		return true
	})
}

// Pipe is one side of a shared-memory pipe. It implements
// io.ReadWriteCloser; its methods are safe for concurrent use.
type Pipe struct {
	mem     []byte
	rx, tx  ring
	closedW *atomic.Uint32 // shared: set by whichever side closes first

	rxData, rxSpace bell // rx ring's: this side waits for data, rings for space
	txData, txSpace bell // tx ring's: this side rings for data, waits for space

	// The waits' conditions, made once (a closure per wait would be an
	// allocation), and the counter each compares against: rxSeen, the
	// head of an empty rx ring, under rmu; txSeen, the head of a full tx
	// ring, under wmu.
	rxReady, txReady func(uintptr) bool
	rxSeen, txSeen   uint64

	lifeline *net.UnixConn
	watched  chan struct{} // closed when watch has returned
	rmu, wmu sync.Mutex
	closed   atomic.Bool // this side's Close has begun
	once     sync.Once
}

// Offer makes a pipe with rings of size bytes (0: DefaultSize; a power of
// two) and offers it to the peer on c, waiting up to timeout for it to
// accept. The pipe takes c over as its lifeline, also when the offer
// fails: ErrRefused then means the peer does not speak shmpipe, and a plain
// connection must be dialled afresh.
func Offer(c *net.UnixConn, size int, timeout time.Duration) (*Pipe, error) {
	if size == 0 {
		size = DefaultSize
	}
	if size < minSize || size > maxSize || size&(size-1) != 0 {
		_ = c.Close()
		return nil, fmt.Errorf("shmpipe: ring size %d: not a power of two from %d to %d", size, minSize, maxSize)
	}
	fds, err := create(size)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	defer closeAll(fds)
	msg := make([]byte, 0, len(magic)+8)
	msg = append(msg, magic...)
	msg = binary.BigEndian.AppendUint64(msg, uint64(size))
	if _, _, err := c.WriteMsgUnix(msg, syscall.UnixRights(fds...), nil); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("shmpipe: offer: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 1 {
		_ = c.Close()
		if err == nil {
			err = fmt.Errorf("answer %#x", ack[0])
		}
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	p, err := open(fds, size, 0, c)
	if err != nil {
		_ = c.Close()
	}
	return p, err
}

// Accept reads what the peer sends first on c. An offer is accepted: it
// returns the pipe, which takes c over as its lifeline. Anything else is
// a plain connection: it returns a nil pipe and the bytes it read, which
// come before the rest of c's. An offering side sends its offer as soon as
// it connects, so a connection that sends nothing for wait is a plain one
// whose peer has nothing to say yet: Accept returns it with no prefix.
// After an error, c is the caller's to close.
func Accept(c *net.UnixConn, wait time.Duration) (p *Pipe, prefix []byte, err error) {
	buf := make([]byte, 0, len(magic)+8)
	oob := make([]byte, syscall.CmsgSpace(nFDs*4))
	var fds []int
	defer func() { closeAll(fds) }()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	for len(buf) < cap(buf) {
		n, oobn, _, _, err := c.ReadMsgUnix(buf[len(buf):cap(buf)], oob)
		n, oobn = max(n, 0), max(oobn, 0) // -1 with some errors
		if oobn > 0 {
			got, perr := parseRights(oob[:oobn])
			fds = append(fds, got...)
			if perr != nil {
				return nil, nil, perr
			}
		}
		buf = buf[:len(buf)+n]
		if err != nil {
			switch {
			case len(buf) == 0 && errors.Is(err, os.ErrDeadlineExceeded):
				_ = c.SetReadDeadline(time.Time{})
				return nil, nil, nil // quiet: a plain connection
			case len(buf) > 0 && errors.Is(err, io.EOF):
			default:
				return nil, buf, err
			}
			break
		}
		if !bytes.HasPrefix([]byte(magic), buf[:min(len(buf), len(magic))]) {
			_ = c.SetReadDeadline(time.Time{})
			return nil, buf, nil // the first bytes of a plain connection
		}
		// The rest of an offer comes at once.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	// Before open: the lifeline's watcher reads c without a deadline.
	_ = c.SetReadDeadline(time.Time{})
	if !bytes.HasPrefix(buf, []byte(magic)) {
		return nil, buf, nil
	}
	size := int(binary.BigEndian.Uint64(buf[len(magic):]))
	if len(fds) != nFDs {
		return nil, nil, fmt.Errorf("shmpipe: offer with %d file descriptors, want %d", len(fds), nFDs)
	}
	if size < minSize || size > maxSize || size&(size-1) != 0 {
		return nil, nil, fmt.Errorf("shmpipe: offer of rings of %d bytes", size)
	}
	p, err = open(fds, size, 1, c)
	if err != nil {
		return nil, nil, err
	}
	if _, err := c.Write([]byte{1}); err != nil {
		_ = p.Close()
		return nil, nil, fmt.Errorf("shmpipe: accept: %w", err)
	}
	return p, nil, nil
}

// open maps the pipe in fds as side (0: the offering side, which writes
// ring 0; 1: the accepting side, which writes ring 1). It dups what it
// keeps: fds stay the caller's.
func open(fds []int, size, side int, lifeline *net.UnixConn) (_ *Pipe, err error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fds[fdMem], &st); err != nil {
		return nil, fmt.Errorf("shmpipe: %w", err)
	}
	total := headerSize + 2*size
	if st.Size != int64(total) {
		return nil, fmt.Errorf("shmpipe: shared memory of %d bytes, want %d", st.Size, total)
	}
	mem, err := syscall.Mmap(fds[fdMem], 0, total, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shmpipe: mmap: %w", err)
	}
	p := &Pipe{mem: mem, closedW: word32(mem, offClosed), lifeline: lifeline, watched: make(chan struct{})}
	for _, b := range []*bell{&p.rxData, &p.rxSpace, &p.txData, &p.txSpace} {
		b.fd = -1
	}
	if got := word64(mem, offSize).Load(); got != uint64(size) {
		_ = syscall.Munmap(mem)
		return nil, fmt.Errorf("shmpipe: shared memory made for rings of %d bytes, offered as %d", got, size)
	}
	defer func() {
		if err != nil {
			p.closeFiles()
			_ = syscall.Munmap(mem)
		}
	}()
	rx, tx := 1-side, side
	p.rx, p.tx = newRing(mem, rx, size), newRing(mem, tx, size)
	if p.rxData, err = waitOn(dataBell(fds, rx)); err != nil {
		return nil, err
	}
	if p.txSpace, err = waitOn(spaceBell(fds, tx)); err != nil {
		return nil, err
	}
	if p.rxSpace, err = ringOn(spaceBell(fds, rx)); err != nil {
		return nil, err
	}
	if p.txData, err = ringOn(dataBell(fds, tx)); err != nil {
		return nil, err
	}
	// Each marks its side waiting before it checks, so that the other side
	// either sees the mark and rings, or has already moved the counter.
	p.rxReady = func(uintptr) bool {
		p.rx.sleeping.Store(1)
		return p.rx.tail.Load() != p.rxSeen || p.peerGone() || p.closed.Load()
	}
	p.txReady = func(uintptr) bool {
		p.tx.waiting.Store(1)
		return p.tx.head.Load() != p.txSeen || p.peerGone() || p.closed.Load()
	}
	go p.watch()
	return p, nil
}

// watch marks the peer gone once the lifeline ends (it closed or died),
// so that this side's Read drains the ring and then returns io.EOF.
func (p *Pipe) watch() {
	defer close(p.watched)
	var b [1]byte
	_, _ = p.lifeline.Read(b[:])
	p.closedW.Store(1)
	p.rxData.wake()
	p.txSpace.wake()
}

func (p *Pipe) peerGone() bool { return p.closedW.Load() != 0 }

// Read reads what the peer wrote, waiting while there is none. Once the
// peer has closed and everything it wrote is read, it returns io.EOF.
func (p *Pipe) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	r := &p.rx
	for {
		if p.closed.Load() {
			return 0, ErrClosed
		}
		head, tail := r.head.Load(), r.tail.Load()
		if tail != head {
			raceAcquire()
			n := r.copyOut(b, head, tail)
			r.head.Store(head + uint64(n))
			if r.waiting.Load() != 0 && r.waiting.CompareAndSwap(1, 0) {
				p.rxSpace.ring()
			}
			return n, nil
		}
		if p.peerGone() {
			return 0, io.EOF
		}
		p.rxSeen = head
		err := p.rxData.rc.Read(p.rxReady)
		r.sleeping.Store(0)
		if err != nil {
			return 0, ErrClosed
		}
	}
}

// Write writes all of b, waiting while the ring is full.
func (p *Pipe) Write(b []byte) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	r := &p.tx
	written := 0
	for len(b) > 0 {
		if p.closed.Load() {
			return written, ErrClosed
		}
		if p.peerGone() {
			return written, ErrPeerClosed
		}
		tail, head := r.tail.Load(), r.head.Load()
		free := uint64(len(r.data)) - (tail - head)
		if free == 0 {
			p.txSeen = head
			err := p.txSpace.rc.Read(p.txReady)
			r.waiting.Store(0)
			if err != nil {
				return written, ErrClosed
			}
			continue
		}
		n := r.copyIn(b, tail, free)
		raceReleaseMerge()
		r.tail.Store(tail + uint64(n))
		b, written = b[n:], written+n
		if r.sleeping.Load() != 0 && r.sleeping.CompareAndSwap(1, 0) {
			p.txData.ring()
		}
	}
	return written, nil
}

// Close closes this side: the peer reads what was written before it, then
// io.EOF. Blocked calls on this side return ErrClosed.
func (p *Pipe) Close() error {
	p.once.Do(func() {
		p.closed.Store(true)
		p.closedW.Store(1)
		// Wake the peer's waits and this side's; the latter also end as
		// their files close.
		p.txData.ring()
		p.rxSpace.ring()
		_ = p.rxData.wait.Close()
		_ = p.txSpace.wait.Close()
		_ = p.lifeline.Close()
		<-p.watched
		p.rmu.Lock()
		p.wmu.Lock()
		p.closeFiles()
		_ = syscall.Munmap(p.mem)
		p.wmu.Unlock()
		p.rmu.Unlock()
	})
	return nil
}

func (p *Pipe) closeFiles() {
	for _, b := range []*bell{&p.rxData, &p.rxSpace, &p.txData, &p.txSpace} {
		if b.wait != nil {
			_ = b.wait.Close()
		}
		if b.fd >= 0 {
			_ = syscall.Close(b.fd)
			b.fd = -1
		}
	}
}

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("shmpipe: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := syscall.ParseUnixRights(&m)
		if err != nil {
			return fds, fmt.Errorf("shmpipe: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// Pair makes both sides of a pipe in this process, over a socketpair: for
// tests and for measuring the pipe itself.
func Pair(size int) (offered, accepted *Pipe, err error) {
	ends, err := socketpair()
	if err != nil {
		return nil, nil, err
	}
	type result struct {
		p   *Pipe
		err error
	}
	got := make(chan result, 1)
	go func() {
		p, _, err := Accept(ends[1], 5*time.Second)
		if err == nil && p == nil {
			err = errors.New("shmpipe: no offer read")
		}
		if err != nil {
			_ = ends[1].Close()
		}
		got <- result{p, err}
	}()
	offered, err = Offer(ends[0], size, 5*time.Second)
	r := <-got
	if err != nil || r.err != nil {
		if offered != nil {
			_ = offered.Close()
		}
		if r.p != nil {
			_ = r.p.Close()
		}
		return nil, nil, errors.Join(err, r.err)
	}
	return offered, r.p, nil
}

// socketpair is both ends of a connected unix stream socket.
func socketpair() (ends [2]*net.UnixConn, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return ends, fmt.Errorf("shmpipe: %w", err)
	}
	syscall.CloseOnExec(fds[0])
	syscall.CloseOnExec(fds[1])
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "shmpipe-socketpair")
		c, err := net.FileConn(f)
		_ = f.Close()
		if err != nil {
			if i == 0 {
				_ = syscall.Close(fds[1])
			} else {
				_ = ends[0].Close()
			}
			return [2]*net.UnixConn{}, fmt.Errorf("shmpipe: %w", err)
		}
		ends[i] = c.(*net.UnixConn)
	}
	return ends, nil
}
