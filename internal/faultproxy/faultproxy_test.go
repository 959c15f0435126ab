package faultproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/faultproxy"
)

// echoServer echoes every line it reads on each connection until the test
// ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *faultproxy.Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and reads it back, returning how long it took.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return 0, err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if strings.TrimSpace(got) != line {
		t.Fatalf("echo: got %q, want %q", got, line)
	}
	return time.Since(start), nil
}

func TestForwardsUnchanged(t *testing.T) {
	p := start(t)
	c, r := dial(t, p)
	for i := range 10 {
		if _, err := roundTrip(t, c, r, strings.Repeat("x", i*1000)); err != nil {
			t.Fatal(err)
		}
	}
	if st := p.Stats(); st.Accepted != 1 || st.Open != 1 || st.Forwarded == 0 {
		t.Errorf("stats %+v: want one open connection and bytes forwarded", st)
	}
}

func TestLatency(t *testing.T) {
	p := start(t)
	c, r := dial(t, p)
	if err := p.Set(faultproxy.Faults{Latency: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	took, err := roundTrip(t, c, r, "slow")
	if err != nil {
		t.Fatal(err)
	}
	// Both directions are delayed: at least 200 ms a round trip.
	if took < 200*time.Millisecond {
		t.Errorf("round trip took %v with 100ms latency each way, want at least 200ms", took)
	}
	p.Heal()
	if took, err := roundTrip(t, c, r, "fast"); err != nil || took > 150*time.Millisecond {
		t.Errorf("after Heal: round trip %v, %v; want well under the latency", took, err)
	}
}

func TestBandwidth(t *testing.T) {
	p := start(t)
	c, r := dial(t, p)
	const bw = 100 << 10 // 100 KiB/s
	if err := p.Set(faultproxy.Faults{Bandwidth: bw}); err != nil {
		t.Fatal(err)
	}
	// 50 KiB each way at 100 KiB/s: about half a second.
	took, err := roundTrip(t, c, r, strings.Repeat("b", 50<<10))
	if err != nil {
		t.Fatal(err)
	}
	if took < 400*time.Millisecond {
		t.Errorf("50 KiB at 100 KiB/s took %v, want at least 400ms", took)
	}
}

func TestBlackhole(t *testing.T) {
	p := start(t)
	c, r := dial(t, p)
	if err := p.Set(faultproxy.Faults{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := roundTrip(t, c, r, "lost")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("through a blackhole: %v, want a read timeout (nothing answers, nothing closes)", err)
	}
	if st := p.Stats(); st.Dropped == 0 || st.Open != 1 {
		t.Errorf("stats %+v: want bytes dropped and the connection still open", st)
	}
	p.Heal()
	_ = c.SetReadDeadline(time.Time{})
	if _, err := roundTrip(t, c, r, "back"); err != nil {
		t.Errorf("after Heal the same connection: %v", err)
	}
}

func TestReset(t *testing.T) {
	p := start(t)
	c, r := dial(t, p)
	if _, err := roundTrip(t, c, r, "before"); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(faultproxy.Faults{Reset: true}); err != nil {
		t.Fatal(err)
	}
	_, err := roundTrip(t, c, r, "after")
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("an open connection after Reset: %v, want a reset", err)
	}
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		defer c2.Close()
		if _, err := roundTrip(t, c2, bufio.NewReader(c2), "new"); err == nil {
			t.Fatal("a new connection while Reset is set was served")
		}
	}
	p.Heal()
	c3, r3 := dial(t, p)
	if _, err := roundTrip(t, c3, r3, "healed"); err != nil {
		t.Errorf("after Heal: %v", err)
	}
}

func TestHalfClose(t *testing.T) {
	p := start(t)
	c, r := dial(t, p)
	if err := p.Set(faultproxy.Faults{HalfClose: true}); err != nil {
		t.Fatal(err)
	}
	// The client's bytes still go out; what comes back is dropped and the
	// client reads EOF.
	if _, err := io.WriteString(c, "one way\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("reading through a half-closed link: %v, want EOF", err)
	}
}

func TestInvalid(t *testing.T) {
	p := start(t)
	for _, f := range []faultproxy.Faults{{Latency: -time.Second}, {Bandwidth: -1}} {
		if err := p.Set(f); !errors.Is(err, faultproxy.ErrInvalid) {
			t.Errorf("Set(%+v) = %v, want ErrInvalid", f, err)
		}
	}
	if _, err := faultproxy.New("127.0.0.1:0", ""); !errors.Is(err, faultproxy.ErrInvalid) || !strings.Contains(err.Error(), "target") {
		t.Errorf("New without a target: %v, want ErrInvalid naming target", err)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	p := start(t)
	c, r := dial(t, p)
	if _, err := roundTrip(t, c, r, "x"); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a connection outlived Close")
	}
}
