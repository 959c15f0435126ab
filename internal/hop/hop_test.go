package hop_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// pair connects two Conns over a real unix socket: dialer (the sidecar's
// side) and acceptor (the handler's), each serving what the other opens
// with its handler.
func pair(t testing.TB, dialerH, acceptorH hop.Handler) (dialer, acceptor *hop.Conn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	dc, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ac, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	quiet := slog.New(slog.DiscardHandler)
	cfg := func(h hop.Handler, accepting bool) hop.Config {
		c := hop.Config{Accepting: accepting}
		if h != nil {
			srv := &hop.Server{Handler: h, Host: "svc", Logger: quiet}
			c.Serve = srv.Serve
		}
		return c
	}
	dialer, acceptor = hop.New(dc, cfg(dialerH, false)), hop.New(ac, cfg(acceptorH, true))
	t.Cleanup(func() { dialer.Close(); acceptor.Close() })
	return dialer, acceptor
}

// call sends env on c with hop.Call and decodes the reply.
func call(t testing.TB, c *hop.Conn, env *wire.Request, deadline time.Time) (*wire.Reply, error) {
	t.Helper()
	b, err := proto.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	rb, _, err := hop.Call(c, b, deadline, 16<<20, nil)
	if err != nil {
		return nil, err
	}
	var reply wire.Reply
	if err := proto.Unmarshal(rb, &reply); err != nil {
		t.Fatal(err)
	}
	return &reply, nil
}

func echo(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
	w.Header()["X-Path"] = []string{r.URL.Path}
	w.Header()["X-Seen"] = r.Header["X-Multi"]
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = io.Copy(w, r.Body)
}

func TestCallBodies(t *testing.T) {
	d, _ := pair(t, nil, echo)
	big := make([]byte, 1<<20+7)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"small", []byte("hello")},
		{"1 MiB, in parts", big},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := &wire.Request{Method: "POST", Path: "/a%2Fb", Body: c.body,
				Headers: []*wire.Header{{Name: "X-Multi", Values: []string{"1", "2"}}}}
			reply, err := call(t, d, env, time.Now().Add(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if reply.Status != 200 || !bytes.Equal(reply.Body, c.body) {
				t.Fatalf("got %d with %d bytes, want 200 with %d bytes, equal", reply.Status, len(reply.Body), len(c.body))
			}
			h := http.Header{}
			wire.DecodeHeader(h, reply.Headers)
			if got := h["X-Seen"]; len(got) != 2 || got[0] != "1" || got[1] != "2" {
				t.Errorf("repeated header: got %q, want [1 2]", got)
			}
			if got := h.Get("X-Path"); got != "/a/b" {
				t.Errorf("path: got %q, want /a/b", got)
			}
		})
	}
}

func TestConcurrentCallsBothWays(t *testing.T) {
	d, a := pair(t, echo, echo)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		c := d
		if i%2 == 1 {
			c = a // the handler's own calls go the other way on the same connection
		}
		wg.Go(func() {
			body := fmt.Appendf(nil, "request %d", i)
			reply, err := call(t, c, &wire.Request{Method: "POST", Path: "/", Body: body}, time.Now().Add(10*time.Second))
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(reply.Body, body) {
				errs <- fmt.Errorf("request %d: got %q", i, reply.Body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := d.InFlight() + a.InFlight(); n != 0 {
		t.Errorf("in flight after all answers: %d, want 0", n)
	}
}

// TestFlush: a flushed head and first chunk reach the caller while the
// handler is still at work.
func TestFlush(t *testing.T) {
	release := make(chan struct{})
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "first;")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "second")
	})
	req, _ := http.NewRequest("GET", "http://svc/stream", nil)
	resp, err := hop.RoundTrip(d, req, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202", resp.StatusCode)
	}
	first := make([]byte, len("first;"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first;" {
		t.Fatalf("first chunk: got %q %v", first, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest: got %q %v, want second", rest, err)
	}
}

// TestDeadlineCancels: past the deadline the caller gets ErrTimeout and the
// handler's context is cancelled.
func TestDeadlineCancels(t *testing.T) {
	cancelled := make(chan error, 1)
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		select {
		case <-r.Context().Done():
			cancelled <- r.Context().Err()
		case <-time.After(10 * time.Second):
			cancelled <- errors.New("never cancelled")
		}
	})
	_, err := call(t, d, &wire.Request{Method: "GET", Path: "/"}, time.Now().Add(50*time.Millisecond))
	if !errors.Is(err, hop.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if err := <-cancelled; !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handler context: %v", err)
	}
}

func TestCloseFailsInFlight(t *testing.T) {
	started := make(chan struct{})
	d, a := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		close(started)
		<-r.Context().Done()
	})
	done := make(chan error, 1)
	go func() {
		_, err := call(t, d, &wire.Request{Method: "GET", Path: "/"}, time.Time{})
		done <- err
	}()
	<-started
	a.Close() // the handler process goes away
	if err := <-done; !errors.Is(err, hop.ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	if _, err := d.Open(); !errors.Is(err, hop.ErrClosed) {
		t.Fatalf("Open after close: got %v, want ErrClosed", err)
	}
}

func TestPanicAndBadRequests(t *testing.T) {
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		panic("boom")
	})
	reply, err := call(t, d, &wire.Request{Method: "GET", Path: "/"}, time.Now().Add(5*time.Second))
	if err != nil || reply.Code != wire.Code_CODE_INTERNAL {
		t.Fatalf("panic: got %v %v, want CODE_INTERNAL", reply, err)
	}
	reply, err = call(t, d, &wire.Request{Method: "BAD METHOD", Path: "/"}, time.Now().Add(5*time.Second))
	if err != nil || reply.Code != wire.Code_CODE_BAD_REQUEST {
		t.Fatalf("bad method: got %v %v, want CODE_BAD_REQUEST", reply, err)
	}
	rb, _, err := hop.Call(d, []byte{0xff, 0xff}, time.Now().Add(5*time.Second), 1<<20, nil)
	var r wire.Reply
	if err != nil || proto.Unmarshal(rb, &r) != nil || r.Code != wire.Code_CODE_BAD_REQUEST {
		t.Fatalf("garbage envelope: got %v %v, want CODE_BAD_REQUEST", &r, err)
	}
}

// TestOversizeFrame: a frame over the reader's limit closes the connection
// instead of allocating it.
func TestOversizeFrame(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// length 2^31, type Request, stream 1
		_, _ = c.Write([]byte{0x80, 0, 0, 0, 1, 1, 0, 0, 0, 1})
		time.Sleep(time.Second)
		c.Close()
	}()
	nc, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := hop.New(nc, hop.Config{MaxFrame: 1 << 20})
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open after an oversize frame")
	}
	if !errors.Is(c.Err(), hop.ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", c.Err())
	}
}

// BenchmarkCall is one small request and answer over a hop connection
// pair on a unix socket, both ends in this process, 16 in flight on two
// cores: the floor of the sidecar ↔ handler hop.
func BenchmarkCall(b *testing.B) {
	d, _ := pair(b, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		_, _ = io.WriteString(w, "hello, x")
	})
	payload, _ := proto.Marshal(&wire.Request{Method: "GET", Path: "/hello/greet", RawQuery: "name=x",
		Headers: []*wire.Header{{Name: "Accept", Values: []string{"*/*"}}, {Name: "User-Agent", Values: []string{"bench"}}}})
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := hop.Call(d, payload, time.Now().Add(10*time.Second), 1<<20, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
