package shmpipe_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/shmpipe"
)

// socketpair returns both ends of a connected unix stream socket.
func socketpair(t testing.TB) (a, b *net.UnixConn) {
	t.Helper()
	ends, err := shmpipe.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	return ends[0], ends[1]
}

// pair makes both sides of a pipe in this process.
func pair(t testing.TB, size int) (offered, accepted *shmpipe.Pipe) {
	t.Helper()
	a, b, err := shmpipe.Pair(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

func TestRoundTrips(t *testing.T) {
	a, b := pair(t, 0)
	buf := make([]byte, 64)
	for i := range 1000 {
		msg := fmt.Appendf(nil, "request %d", i)
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		n, err := b.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, msg)
		}
		reply := append([]byte("reply to "), msg...)
		if _, err := b.Write(reply); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(a, buf[:len(reply)]); err != nil || !bytes.Equal(buf[:len(reply)], reply) {
			t.Fatalf("read %q, %v; want %q", buf[:len(reply)], err, reply)
		}
	}
}

// TestFullDuplexThroughSmallRings sends 4 MiB each way at once, in writes
// and reads of random sizes through 4 KiB rings: every byte arrives, in
// order, through wrap-arounds and full rings on both sides.
func TestFullDuplexThroughSmallRings(t *testing.T) {
	a, b := pair(t, 4<<10)
	const total = 4 << 20
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(p *shmpipe.Pipe, seed uint64) [32]byte {
		rng := rand.New(rand.NewPCG(seed, 1))
		data := make([]byte, total)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		wg.Go(func() {
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(20<<10))
				if _, err := p.Write(rest[:n]); err != nil {
					errs <- err
					return
				}
				rest = rest[n:]
			}
		})
		return sha256.Sum256(data)
	}
	recv := func(p *shmpipe.Pipe, want [32]byte) {
		wg.Go(func() {
			h := sha256.New()
			buf := make([]byte, 30<<10)
			for got := 0; got < total; {
				n, err := p.Read(buf[:1+rand.IntN(len(buf))])
				if err != nil {
					errs <- err
					return
				}
				h.Write(buf[:n])
				got += n
			}
			if sum := h.Sum(nil); !bytes.Equal(sum, want[:]) {
				errs <- errors.New("the bytes read differ from those written")
			}
		})
	}
	recv(b, send(a, 1))
	recv(a, send(b, 2))
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestCloseDrainsThenEOF: the peer reads what was written before Close,
// then io.EOF; its writes fail; this side's calls fail with ErrClosed.
func TestCloseDrainsThenEOF(t *testing.T) {
	a, b := pair(t, 0)
	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v; want the last words, then EOF", got, err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, shmpipe.ErrPeerClosed) {
		t.Fatalf("write to a closed peer: %v, want ErrPeerClosed", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, shmpipe.ErrClosed) {
		t.Fatalf("read after Close: %v, want ErrClosed", err)
	}
}

// TestCloseWakesBlockedCalls: a Read waiting for data and a Write waiting
// for room both return once their own side closes.
func TestCloseWakesBlockedCalls(t *testing.T) {
	a, _ := pair(t, 4<<10)
	done := make(chan error, 2)
	go func() {
		_, err := a.Read(make([]byte, 1))
		done <- err
	}()
	go func() {
		_, err := a.Write(make([]byte, 64<<10)) // more than the ring: blocks
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	a.Close()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, shmpipe.ErrClosed) {
				t.Errorf("blocked call ended with %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a blocked call did not return after Close")
		}
	}
}

// TestAcceptPlainConnection: the first bytes of a connection that is not an
// offer come back as the prefix of a plain connection.
func TestAcceptPlainConnection(t *testing.T) {
	a, b := socketpair(t)
	defer a.Close()
	defer b.Close()
	frame := []byte{0, 0, 0, 3, 1, 1, 0, 0, 0, 1, 'a', 'b', 'c'}
	if _, err := a.Write(frame); err != nil {
		t.Fatal(err)
	}
	p, prefix, err := shmpipe.Accept(b, 5*time.Second)
	if err != nil || p != nil {
		t.Fatalf("Accept of a plain connection: pipe %v, error %v", p, err)
	}
	rest := make([]byte, len(frame)-len(prefix))
	if _, err := io.ReadFull(b, rest); err != nil {
		t.Fatal(err)
	}
	if got := append(prefix, rest...); !bytes.Equal(got, frame) {
		t.Fatalf("prefix and rest %q, want %q", got, frame)
	}
}

// TestAcceptQuietConnection: a connection that sends nothing within the
// wait is a plain one with no prefix, and what its peer sends later is
// read from it as usual (no deadline left behind).
func TestAcceptQuietConnection(t *testing.T) {
	a, b := socketpair(t)
	defer a.Close()
	defer b.Close()
	start := time.Now()
	p, prefix, err := shmpipe.Accept(b, 50*time.Millisecond)
	if err != nil || p != nil || len(prefix) != 0 {
		t.Fatalf("Accept of a quiet connection: pipe %v, prefix %q, error %v", p, prefix, err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("Accept returned after %v, before its wait", waited)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := a.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "late" {
		t.Fatalf("read %q, %v after a quiet Accept", got, err)
	}
}

// TestOfferRefused: a peer that does not speak shmpipe (it takes the offer
// for a frame too large and closes) refuses the offer.
func TestOfferRefused(t *testing.T) {
	a, b := socketpair(t)
	go func() {
		buf := make([]byte, 10)
		_, _ = io.ReadFull(b, buf)
		b.Close()
	}()
	if _, err := shmpipe.Offer(a, 0, 5*time.Second); !errors.Is(err, shmpipe.ErrRefused) {
		t.Fatalf("Offer to a peer that closed: %v, want ErrRefused", err)
	}
}

func TestOfferValidatesSize(t *testing.T) {
	for _, size := range []int{1000, 3 << 10, 12 << 10, 128 << 20} {
		a, _ := socketpair(t)
		if _, err := shmpipe.Offer(a, size, time.Second); err == nil {
			t.Errorf("Offer with rings of %d bytes succeeded", size)
		}
	}
}

// The helper process: it accepts the pipe offered on fd 3 and echoes what
// it reads, or, over plain unix, echoes on fd 3.
func TestMain(m *testing.M) {
	if mode := os.Getenv("SHMPIPE_ECHO"); mode != "" {
		os.Exit(echo(mode))
	}
	os.Exit(m.Run())
}

func echo(mode string) int {
	f := os.NewFile(3, "lifeline")
	c, err := net.FileConn(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var rw io.ReadWriter = c
	if mode == "shm" {
		p, _, err := shmpipe.Accept(c.(*net.UnixConn), 10*time.Second)
		if err != nil || p == nil {
			fmt.Fprintln(os.Stderr, "accept:", p, err)
			return 1
		}
		rw = p
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := rw.Read(buf)
		if err != nil {
			return 0
		}
		if _, err := rw.Write(buf[:n]); err != nil {
			return 0
		}
	}
}

// child starts the echo helper over one end of a socketpair and returns
// the other end.
func child(t testing.TB, mode string) (*exec.Cmd, *net.UnixConn) {
	t.Helper()
	a, b := socketpair(t)
	bf, err := b.File()
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SHMPIPE_ECHO="+mode)
	cmd.ExtraFiles = []*os.File{bf}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bf.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, a
}

// TestPeerKilled: between two processes, the pipe echoes; once the peer is
// killed (no Close, no chance to mark anything), a Read waiting on it
// returns io.EOF and a Write fails.
func TestPeerKilled(t *testing.T) {
	cmd, c := child(t, "shm")
	p, err := shmpipe.Offer(c, 0, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	buf := make([]byte, 5)
	for range 100 {
		if _, err := p.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("echo %q, %v", buf, err)
		}
	}
	read := make(chan error, 1)
	go func() {
		_, err := p.Read(buf)
		read <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("read from a killed peer: %v, want io.EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read from a killed peer did not return")
	}
	if _, err := p.Write([]byte("anyone?")); err == nil {
		t.Fatal("a write to a killed peer succeeded")
	}
}

// BenchmarkPingPong is one round trip at a time to an echo process: the
// cost of two crossings between processes with the peer idle between them,
// as at low rates. CPU µs per round trip counts both processes.
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []string{"unix", "shm"} {
		b.Run(mode, func(b *testing.B) {
			cmd, c := child(b, mode)
			var rw io.ReadWriter = c
			if mode == "shm" {
				p, err := shmpipe.Offer(c, 0, 10*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				rw = p
			}
			msg := make([]byte, 200)
			buf := make([]byte, len(msg))
			before := cpu(b, os.Getpid()) + cpu(b, cmd.Process.Pid)
			b.ResetTimer()
			for range b.N {
				if _, err := rw.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(rw, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			used := cpu(b, os.Getpid()) + cpu(b, cmd.Process.Pid) - before
			b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// cpu is a process's CPU time from /proc (clock ticks of 10 ms).
func cpu(tb testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	fields := bytes.Fields(raw[bytes.LastIndexByte(raw, ')')+2:])
	var utime, stime int64
	fmt.Sscan(string(fields[11]), &utime)
	fmt.Sscan(string(fields[12]), &stime)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
