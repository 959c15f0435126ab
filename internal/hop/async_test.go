package hop_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// outcome is what a Pending's function got.
type outcome struct {
	reply []byte
	err   error
}

// goCall sends env with hop.Go and returns the channel its outcome
// arrives on (exactly one; a second would block the test's reader and
// fail it by the check after).
func goCall(t *testing.T, c *hop.Conn, env *wire.Request, deadline time.Time) (*hop.Pending, chan outcome) {
	t.Helper()
	b, err := proto.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan outcome, 2)
	p, err := hop.Go(c, deadline, 16<<20, hop.WholeFunc(func(reply []byte, err error) { got <- outcome{reply, err} }))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(b); err != nil {
		t.Fatal(err)
	}
	return p, got
}

func await(t *testing.T, got chan outcome) outcome {
	t.Helper()
	select {
	case o := <-got:
		select {
		case again := <-got:
			t.Fatalf("the function was called twice: %v, then %v", o.err, again.err)
		case <-time.After(50 * time.Millisecond):
		}
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome")
		return outcome{}
	}
}

// TestGo: the answer reaches the function whole, whether it came in one
// frame or in parts; past the deadline and on Cancel the function gets the
// error and the handler's context ends.
func TestGo(t *testing.T) {
	ended := make(chan error, 4)
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		if r.URL.Path == "/wait" {
			<-r.Context().Done()
			ended <- r.Context().Err()
			return
		}
		echo(w, r, nil)
	})
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: an answer in parts
	for _, body := range [][]byte{[]byte("hello"), big} {
		_, got := goCall(t, d, &wire.Request{Method: "POST", Path: "/echo", Body: body}, time.Now().Add(10*time.Second))
		o := await(t, got)
		if o.err != nil {
			t.Fatal(o.err)
		}
		var reply wire.Reply
		if err := proto.Unmarshal(o.reply, &reply); err != nil {
			t.Fatal(err)
		}
		if reply.Status != 200 || !bytes.Equal(reply.Body, body) {
			t.Fatalf("got %d with %d bytes, want 200 with %d", reply.Status, len(reply.Body), len(body))
		}
	}

	_, got := goCall(t, d, &wire.Request{Method: "GET", Path: "/wait"}, time.Now().Add(50*time.Millisecond))
	if o := await(t, got); !errors.Is(o.err, hop.ErrTimeout) {
		t.Fatalf("past the deadline: got %v, want ErrTimeout", o.err)
	}
	if err := <-ended; !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handler context after the deadline: %v", err)
	}

	p, got := goCall(t, d, &wire.Request{Method: "GET", Path: "/wait"}, time.Time{})
	p.Cancel()
	if o := await(t, got); !errors.Is(o.err, hop.ErrCanceled) {
		t.Fatalf("cancelled: got %v, want ErrCanceled", o.err)
	}
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context after Cancel: %v", err)
	}
}

// TestGoDeadlines: the requests of one connection share one timer, and
// each still ends at its own deadline: a later request with an earlier
// deadline than those before it, requests answered in time among them,
// and a deadline after the timer has gone quiet.
func TestGoDeadlines(t *testing.T) {
	d, _ := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		if r.URL.Path == "/wait" {
			<-r.Context().Done()
			return
		}
		echo(w, r, nil)
	})
	start := time.Now()
	type want struct {
		after time.Duration
		got   chan outcome
	}
	var waits []want
	for _, after := range []time.Duration{400 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond} {
		_, got := goCall(t, d, &wire.Request{Method: "GET", Path: "/wait"}, start.Add(after))
		waits = append(waits, want{after, got})
		// One answered in time between them.
		_, ok := goCall(t, d, &wire.Request{Method: "POST", Path: "/echo", Body: []byte("x")}, start.Add(time.Hour))
		if o := await(t, ok); o.err != nil {
			t.Fatalf("answered request: %v", o.err)
		}
	}
	// Each ends at its deadline, not at one of a later request: in the
	// order of their deadlines.
	ended := make(chan time.Duration, len(waits))
	for _, w := range waits {
		go func() {
			o := <-w.got
			if !errors.Is(o.err, hop.ErrTimeout) {
				t.Errorf("deadline %v: got %v, want ErrTimeout", w.after, o.err)
			}
			if took := time.Since(start); took < w.after {
				t.Errorf("deadline %v: ended after %v, before it", w.after, took)
			}
			ended <- w.after
		}()
	}
	var order []time.Duration
	for range waits {
		select {
		case a := <-ended:
			order = append(order, a)
		case <-time.After(10 * time.Second):
			t.Fatal("a request past its deadline did not end")
		}
	}
	if !slices.IsSorted(order) {
		t.Errorf("ended in the order %v, want the order of their deadlines", order)
	}
	// The heap is empty and the timer quiet: a new deadline arms it again.
	again := time.Now()
	_, got := goCall(t, d, &wire.Request{Method: "GET", Path: "/wait"}, again.Add(50*time.Millisecond))
	if o := await(t, got); !errors.Is(o.err, hop.ErrTimeout) {
		t.Fatalf("after a quiet timer: got %v, want ErrTimeout", o.err)
	}
	if took := time.Since(again); took < 50*time.Millisecond {
		t.Errorf("after a quiet timer: ended after %v, before its deadline", took)
	}
}

// TestGoConnectionLost: a request out when the handler's end closes gets
// ErrClosed, once.
func TestGoConnectionLost(t *testing.T) {
	started := make(chan struct{})
	d, a := pair(t, nil, func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		close(started)
		<-r.Context().Done()
	})
	_, got := goCall(t, d, &wire.Request{Method: "GET", Path: "/"}, time.Now().Add(time.Minute))
	<-started
	a.Close()
	if o := await(t, got); !errors.Is(o.err, hop.ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", o.err)
	}
}

// TestUnaryQuick: unary calls the Quick function picks are answered on the
// connection's reader, the others on workers; both get their answers, and
// a slow call on a worker does not hold up a quick one.
func TestUnaryQuick(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	dc, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	serve := func(ctx context.Context, p []byte) []byte {
		if string(p) == "slow" {
			<-release
		}
		return append([]byte("re:"), p...)
	}
	quick := func(p []byte) bool { return string(p) != "slow" }
	server := hop.New(<-accepted, hop.Config{Accepting: true, Unary: serve, Quick: quick})
	client := hop.New(dc, hop.Config{})
	defer func() { client.Close(); server.Close() }()

	slow := make(chan []byte, 1)
	go func() {
		b, _ := hop.Unary(client, []byte("slow"), nil)
		slow <- b
	}()
	for i := range 100 {
		want := fmt.Sprintf("re:get-%d", i)
		b, err := hop.Unary(client, []byte(want[3:]), nil)
		if err != nil || string(b) != want {
			t.Fatalf("quick call %d: got %q %v, want %q", i, b, err, want)
		}
	}
	close(release)
	if b := <-slow; string(b) != "re:slow" {
		t.Fatalf("slow call: got %q", b)
	}
}
