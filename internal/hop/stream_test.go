package hop_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// start opens a stream on c with env as its Request frame.
func start(t *testing.T, c *hop.Conn, env *wire.Request, end bool) *hop.Stream {
	t.Helper()
	b, err := proto.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	s, err := hop.Start(c, b, end)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recvReply reads a Reply frame from s and decodes it.
func recvReply(t *testing.T, s *hop.Stream) (*wire.Reply, bool) {
	t.Helper()
	f, err := s.Recv(time.Now().Add(10*time.Second), nil)
	if err != nil || f.Type != hop.TypeReply {
		t.Fatalf("want a reply frame, got type %d, %v", f.Type, err)
	}
	var r wire.Reply
	if err := proto.Unmarshal(f.Payload, &r); err != nil {
		t.Fatal(err)
	}
	return &r, f.End
}

// TestFlowControl: a handler writing faster than its caller reads is held
// back once the window is full, and nothing is lost.
func TestFlowControl(t *testing.T) {
	var written atomic.Int64
	const total = 16 << 20
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		chunk := bytes.Repeat([]byte{'x'}, 32<<10)
		for written.Load() < total {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	})
	s := start(t, d, &wire.Request{Method: "GET", Path: "/"}, true)
	defer s.Close()
	if _, end := recvReply(t, s); end {
		t.Fatal("a 16 MiB answer came whole")
	}
	time.Sleep(200 * time.Millisecond) // the handler runs ahead while nobody reads
	if n := written.Load(); n > 2<<20 {
		t.Fatalf("handler wrote %d bytes with none read: the window does not hold it back", n)
	}
	got := 0
	for {
		f, err := s.Recv(time.Now().Add(10*time.Second), nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got += len(f.Payload)
		if f.End {
			break
		}
	}
	if got != total {
		t.Fatalf("read %d bytes, want %d", got, total)
	}
}

// TestTrailersBothWays: request trailers reach r.Trailer after the body;
// the answer's trailers end its stream.
func TestTrailersBothWays(t *testing.T) {
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		if _, ok := r.Trailer["X-Checksum"]; !ok {
			http.Error(w, "trailer not declared", 400)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Echo")
		_, _ = w.Write(body)
		w.Header().Set("X-Echo", r.Trailer.Get("X-Checksum"))
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	env := &wire.Request{Method: "POST", Path: "/", Body: []byte("part1;"), BodyFollows: true,
		Headers: []*wire.Header{{Name: "Trailer", Values: []string{"X-Checksum"}}}}
	s := start(t, d, env, false)
	defer s.Close()
	if err := s.Send(hop.TypeData, false, []byte("part2")); err != nil {
		t.Fatal(err)
	}
	if err := hop.SendTrailers(s, http.Header{"X-Checksum": {"abc"}}); err != nil {
		t.Fatal(err)
	}
	// A small answer with trailers is one frame; a larger one is its head,
	// Data and a Trailers frame.
	reply, end := recvReply(t, s)
	if !end || reply.Status != 200 {
		t.Fatalf("reply %d end=%v, want 200 in one frame", reply.Status, end)
	}
	body := string(reply.Body)
	trailers := http.Header{}
	for _, h := range reply.Trailers {
		trailers[h.Name] = h.Values
	}
	if body != "part1;part2" {
		t.Errorf("body %q, want part1;part2", body)
	}
	if trailers.Get("X-Echo") != "abc" || trailers.Get("X-Late") != "late" {
		t.Errorf("trailers %v, want X-Echo: abc and X-Late: late", trailers)
	}
}

// TestTrailersAfterLargeBody: trailers after a body in parts end the
// stream in a frame of their own.
func TestTrailersAfterLargeBody(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 20000)
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		_, _ = w.Write(big)
	})
	s := start(t, d, &wire.Request{Method: "GET", Path: "/"}, true)
	defer s.Close()
	if _, end := recvReply(t, s); end {
		t.Fatal("200 KB came in one frame")
	}
	var got []byte
	for {
		f, err := s.Recv(time.Now().Add(10*time.Second), nil)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == hop.TypeTrailers {
			var tr wire.Reply
			if err := proto.Unmarshal(f.Payload, &tr); err != nil || len(tr.Trailers) != 1 || tr.Trailers[0].Name != "Grpc-Status" {
				t.Fatalf("trailers %v, %v", tr.Trailers, err)
			}
			if !f.End {
				t.Error("the Trailers frame does not end the stream")
			}
			break
		}
		got = append(got, f.Payload...)
	}
	if !bytes.Equal(got, big) {
		t.Errorf("body: %d bytes, want %d", len(got), len(big))
	}
}

// TestHijack: a handler that takes an upgrade's connection over writes its
// own answer and exchanges raw bytes with the caller.
func TestHijack(t *testing.T) {
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, env *wire.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "no upgrade header", 400)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		go func() { // as many handlers do: the conn outlives the call
			defer c.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n")
			_ = brw.Flush()
			buf := make([]byte, 64)
			for {
				n, err := brw.Read(buf)
				if err != nil {
					return
				}
				_, _ = c.Write(bytes.ToUpper(buf[:n]))
			}
		}()
	})
	env := &wire.Request{Method: "GET", Path: "/ws", Upgrade: true, BodyFollows: true,
		Headers: []*wire.Header{{Name: "Upgrade", Values: []string{"echo"}}, {Name: "Connection", Values: []string{"Upgrade"}}}}
	s := start(t, d, env, false)
	defer s.Close()
	reply, _ := recvReply(t, s)
	if !reply.Hijacked {
		t.Fatalf("reply %d %q, want the connection hijacked", reply.Status, reply.Body)
	}
	next := func() string {
		f, err := s.Recv(time.Now().Add(5*time.Second), nil)
		if err != nil {
			t.Fatal(err)
		}
		return string(f.Payload)
	}
	if got := next(); !strings.HasPrefix(got, "HTTP/1.1 101 ") {
		t.Fatalf("first bytes %q, want the handler's 101", got)
	}
	for _, m := range []string{"hello", "world"} {
		if err := s.Send(hop.TypeData, false, []byte(m)); err != nil {
			t.Fatal(err)
		}
		if got := next(); got != strings.ToUpper(m) {
			t.Fatalf("echo %q, want %q", got, strings.ToUpper(m))
		}
	}
	if err := s.Send(hop.TypeData, true, nil); err != nil { // the client closes
		t.Fatal(err)
	}
	f, err := s.Recv(time.Now().Add(5*time.Second), nil)
	if err != nil && !errors.Is(err, io.EOF) || err == nil && !f.End {
		t.Fatalf("after the client closed: %v end=%v, want the stream ended", err, f.End)
	}
}

// TestHijackRefusedWithoutUpgrade: only an upgrade the route allows can
// take the connection.
func TestHijackRefusedWithoutUpgrade(t *testing.T) {
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		if _, _, err := w.(http.Hijacker).Hijack(); err == nil {
			t.Error("hijack of a plain request succeeded")
		}
		w.WriteHeader(204)
	})
	reply, err := call(t, d, &wire.Request{Method: "GET", Path: "/"}, time.Now().Add(5*time.Second))
	if err != nil || reply.Status != 204 {
		t.Fatalf("got %v %v, want 204", reply, err)
	}
}

// TestEventStreamOutlivesDeadline: an answer of server-sent events goes on
// past the request's deadline while it streams.
func TestEventStreamOutlivesDeadline(t *testing.T) {
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 8 {
			if _, err := io.WriteString(w, "data: "+string(rune('0'+i))+"\n\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	env := &wire.Request{Method: "GET", Path: "/events"}
	env.SetDeadline(time.Now().Add(120*time.Millisecond), time.Now())
	s := start(t, d, env, true)
	defer s.Close()
	if _, end := recvReply(t, s); end {
		t.Fatal("the event stream came whole")
	}
	var events strings.Builder
	for {
		f, err := s.Recv(time.Now().Add(5*time.Second), nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		events.Write(f.Payload)
		if f.End {
			break
		}
	}
	if n := strings.Count(events.String(), "data: "); n != 8 {
		t.Fatalf("got %d events (%q), want all 8, the last ~400 ms after a 120 ms deadline", n, events.String())
	}
}

// TestOneLargeWrite: a body written in one call goes out in frames of a
// bounded size, so that no part of it outgrows what the mesh carries.
func TestOneLargeWrite(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 10<<20)
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		w.Header().Set("Content-Length", "10485760")
		_, _ = w.Write(big)
	})
	s := start(t, d, &wire.Request{Method: "GET", Path: "/"}, true)
	defer s.Close()
	recvReply(t, s)
	got := 0
	for {
		f, err := s.Recv(time.Now().Add(10*time.Second), nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Payload) > 64<<10 {
			t.Fatalf("a frame of %d bytes", len(f.Payload))
		}
		got += len(f.Payload)
		if f.End {
			break
		}
	}
	if got != len(big) {
		t.Fatalf("got %d bytes, want %d", got, len(big))
	}
}

// TestHijackAfter101: a handler that writes its 101 with WriteHeader
// before hijacking (as net/http allows) has it sent with its header, and
// reads the client's bytes even though it replaced r.Body.
func TestHijackAfter101(t *testing.T) {
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, env *wire.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20) // as middleware does
		w.Header().Set("Upgrade", "echo")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write(buf)
		}
	})
	env := &wire.Request{Method: "GET", Path: "/ws", Upgrade: true, BodyFollows: true}
	s := start(t, d, env, false)
	defer s.Close()
	if reply, _ := recvReply(t, s); !reply.Hijacked {
		t.Fatal("not hijacked")
	}
	f, err := s.Recv(time.Now().Add(5*time.Second), nil)
	if err != nil || !strings.HasPrefix(string(f.Payload), "HTTP/1.1 101 Switching Protocols\r\n") || !strings.Contains(string(f.Payload), "Upgrade: echo\r\n") {
		t.Fatalf("first bytes %q %v, want the 101 with its header", f.Payload, err)
	}
	if err := s.Send(hop.TypeData, false, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if f, err = s.Recv(time.Now().Add(5*time.Second), nil); err != nil || string(f.Payload) != "hello" {
		t.Fatalf("echo %q %v", f.Payload, err)
	}
}
