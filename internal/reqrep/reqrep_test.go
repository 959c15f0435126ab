package reqrep_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/rep"
	"go.nanomsg.org/mangos/v3/protocol/req"
	_ "go.nanomsg.org/mangos/v3/transport/inproc"
	_ "go.nanomsg.org/mangos/v3/transport/tcp"
	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/internal/reqrep"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a REP socket that echoes every request with a prefix, ours or
// mangos' own, listening on addr.
type server struct {
	name   string
	listen func(t *testing.T, addr string) string // returns the bound address
}

var servers = []server{
	{"reqrep", func(t *testing.T, addr string) string {
		s := reqrep.NewRep(func(m *mangos.Message, r reqrep.Replier) {
			m.Body = append([]byte("re:"), m.Body...)
			if err := r.Reply(m); err != nil {
				t.Errorf("reply: %v", err)
			}
		})
		t.Cleanup(func() { s.Close() })
		return listen(t, s, addr)
	}},
	{"mangos", func(t *testing.T, addr string) string {
		s, err := rep.NewSocket()
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		t.Cleanup(func() { s.Close(); wg.Wait() })
		for range 8 {
			c, err := s.OpenContext()
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				for {
					m, err := c.RecvMsg()
					if err != nil {
						return
					}
					m.Body = append([]byte("re:"), m.Body...)
					if err := c.SendMsg(m); err != nil {
						return
					}
				}
			})
		}
		return listen(t, s, addr)
	}},
}

// clients are REQ sockets, ours or mangos' own.
var clients = []struct {
	name string
	new  func() (mangos.Socket, error)
}{
	{"reqrep", reqrep.NewReq},
	{"mangos", req.NewSocket},
}

func listen(t *testing.T, s mangos.Socket, addr string) string {
	t.Helper()
	l, err := s.NewListener(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(); err != nil {
		t.Fatal(err)
	}
	return l.Address()
}

// TestInterop runs many requests at once between every pairing of this
// package's sockets and mangos' own, over tcp and inproc: each reply
// answers its own request.
func TestInterop(t *testing.T) {
	for _, tr := range []string{"tcp://127.0.0.1:0", "inproc://interop-%s-%s"} {
		for _, srv := range servers {
			for _, cl := range clients {
				if srv.name == "mangos" && cl.name == "mangos" {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s-to-%s", tr[:3], cl.name, srv.name), func(t *testing.T) {
					addr := tr
					if tr[:3] == "inp" {
						addr = fmt.Sprintf(tr, cl.name, srv.name)
					}
					addr = srv.listen(t, addr)
					sock, err := cl.new()
					if err != nil {
						t.Fatal(err)
					}
					defer sock.Close()
					if err := sock.SetOption(mangos.OptionRetryTime, time.Duration(0)); err != nil {
						t.Fatal(err)
					}
					if err := sock.Dial(addr); err != nil {
						t.Fatal(err)
					}
					var wg sync.WaitGroup
					for w := range 16 {
						c, err := sock.OpenContext()
						if err != nil {
							t.Fatal(err)
						}
						wg.Go(func() {
							defer c.Close()
							for i := range 200 {
								want := fmt.Sprintf("w%d-%d", w, i)
								m := mangos.NewMessage(len(want))
								m.Body = append(m.Body, want...)
								if err := c.SendMsg(m); err != nil {
									t.Errorf("send: %v", err)
									return
								}
								got, err := c.RecvMsg()
								if err != nil {
									t.Errorf("receive: %v", err)
									return
								}
								if string(got.Body) != "re:"+want {
									t.Errorf("got %q, want %q", got.Body, "re:"+want)
								}
								got.Free()
							}
						})
					}
					wg.Wait()
				})
			}
		}
	}
}

// silent listens with a REP socket that never answers, and returns its
// address, the socket, and a channel that receives once for each
// connection the socket has taken (its handshake done: mangos' tcp
// listener races with a handshake it closes in the middle of).
func silent(t *testing.T) (string, *reqrep.Rep, <-chan struct{}) {
	t.Helper()
	s := reqrep.NewRep(func(m *mangos.Message, _ reqrep.Replier) { m.Free() })
	up := make(chan struct{}, 16)
	s.SetPipeEventHook(func(ev mangos.PipeEvent, _ mangos.Pipe) {
		if ev == mangos.PipeEventAttached {
			up <- struct{}{}
		}
	})
	t.Cleanup(func() { s.Close() })
	return listen(t, s, "tcp://127.0.0.1:0"), s, up
}

// silentContext is a REQ context connected to a silent socket, once the
// connection is up, and that socket.
func silentContext(t *testing.T, failNoPeers bool) (mangos.Context, *reqrep.Rep) {
	t.Helper()
	addr, srv, up := silent(t)
	c, err := dialReq(t, addr, failNoPeers).OpenContext()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
	}
	return c, srv
}

func dialReq(t *testing.T, addr string, failNoPeers bool) mangos.Socket {
	t.Helper()
	sock, err := reqrep.NewReq()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	if err := sock.SetOption(mangos.OptionFailNoPeers, failNoPeers); err != nil {
		t.Fatal(err)
	}
	if addr != "" {
		if err := sock.Dial(addr); err != nil {
			t.Fatal(err)
		}
	}
	return sock
}

func send(t *testing.T, c mangos.Context, body string) {
	t.Helper()
	m := mangos.NewMessage(len(body))
	m.Body = append(m.Body, body...)
	if err := c.SendMsg(m); err != nil {
		t.Fatal(err)
	}
}

// TestContextErrors checks each way a request fails, with the error the
// dispatcher tells apart.
func TestContextErrors(t *testing.T) {
	t.Run("close ends a receive", func(t *testing.T) {
		c, _ := silentContext(t, true)
		send(t, c, "x")
		go func() { time.Sleep(50 * time.Millisecond); c.Close() }()
		if _, err := c.RecvMsg(); !errors.Is(err, mangos.ErrClosed) {
			t.Errorf("got %v, want ErrClosed", err)
		}
		if err := c.SendMsg(mangos.NewMessage(1)); !errors.Is(err, mangos.ErrClosed) {
			t.Errorf("send after close: got %v, want ErrClosed", err)
		}
	})
	t.Run("lost connection cancels the request", func(t *testing.T) {
		c, srv := silentContext(t, false)
		send(t, c, "x")
		time.Sleep(50 * time.Millisecond) // the request is out
		srv.Close()
		if _, err := c.RecvMsg(); !errors.Is(err, mangos.ErrCanceled) {
			t.Errorf("got %v, want ErrCanceled", err)
		}
	})
	t.Run("lost last connection with FailNoPeers", func(t *testing.T) {
		c, srv := silentContext(t, true)
		send(t, c, "x")
		time.Sleep(50 * time.Millisecond)
		srv.Close()
		if _, err := c.RecvMsg(); !errors.Is(err, mangos.ErrNoPeers) {
			t.Errorf("got %v, want ErrNoPeers", err)
		}
	})
	t.Run("no peers", func(t *testing.T) {
		c, _ := dialReq(t, "", true).OpenContext()
		if err := c.SendMsg(mangos.NewMessage(1)); !errors.Is(err, mangos.ErrNoPeers) {
			t.Errorf("got %v, want ErrNoPeers", err)
		}
	})
	t.Run("send deadline without peers", func(t *testing.T) {
		c, _ := dialReq(t, "", false).OpenContext()
		if err := c.SetOption(mangos.OptionSendDeadline, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if err := c.SendMsg(mangos.NewMessage(1)); !errors.Is(err, mangos.ErrSendTimeout) {
			t.Errorf("got %v, want ErrSendTimeout", err)
		}
	})
	t.Run("receive deadline", func(t *testing.T) {
		c, _ := silentContext(t, true)
		if err := c.SetOption(mangos.OptionRecvDeadline, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		send(t, c, "x")
		if _, err := c.RecvMsg(); !errors.Is(err, mangos.ErrRecvTimeout) {
			t.Errorf("got %v, want ErrRecvTimeout", err)
		}
	})
	t.Run("receive without a request", func(t *testing.T) {
		c, _ := silentContext(t, true)
		if _, err := c.RecvMsg(); !errors.Is(err, mangos.ErrProtoState) {
			t.Errorf("got %v, want ErrProtoState", err)
		}
	})
	t.Run("resend refused", func(t *testing.T) {
		sock := dialReq(t, "", true)
		if err := sock.SetOption(mangos.OptionRetryTime, time.Second); !errors.Is(err, mangos.ErrBadValue) {
			t.Errorf("got %v, want ErrBadValue", err)
		}
	})
}

// TestReplyAfterNewRequest checks that a context that sends again before
// the last reply came never gets the old reply for the new request.
func TestReplyAfterNewRequest(t *testing.T) {
	delay := make(chan struct{})
	s := reqrep.NewRep(func(m *mangos.Message, r reqrep.Replier) {
		if string(m.Body) == "slow" {
			go func() { <-delay; _ = r.Reply(m) }()
			return
		}
		_ = r.Reply(m)
	})
	defer s.Close()
	addr := listen(t, s, "tcp://127.0.0.1:0")
	c, _ := dialReq(t, addr, true).OpenContext()
	send(t, c, "slow")
	send(t, c, "fast") // gives up on "slow"
	close(delay)
	got, err := c.RecvMsg()
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Body) != "fast" {
		t.Errorf("got %q, want the reply to the second request", got.Body)
	}
}

// TestStalledPeer checks that a sender blocked writing to a peer that has
// stopped reading returns once its context is closed: the pipe is closed
// after StallTimeout.
func TestStalledPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		// The SP handshake of a REP peer, then no more reading.
		_, _ = conn.Write([]byte{0, 'S', 'P', 0, 0, 0x31, 0, 0})
		_, _ = io.ReadFull(conn, make([]byte, 8))
		accepted <- conn
	}()
	sock := dialReq(t, "tcp://"+ln.Addr().String(), true)
	conn := <-accepted
	defer conn.Close()
	big := bytes.Repeat([]byte{'x'}, 4<<20)
	c, _ := sock.OpenContext()
	done := make(chan error, 1)
	go func() {
		for {
			m := mangos.NewMessage(len(big))
			m.Body = append(m.Body, big...)
			if err := c.SendMsg(m); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the socket buffers fill
	closed := time.Now()
	c.Close()
	select {
	case err := <-done:
		if took := time.Since(closed); took < reqrep.StallTimeout/2 {
			t.Errorf("returned %v after the close, before the stall timeout %v", took, reqrep.StallTimeout)
		}
		if err == nil {
			t.Error("got no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sender is still blocked 10 s after its context closed")
	}
}

// TestGarbled checks that a request too short to carry its id is dropped
// and the connection serves the next.
func TestGarbled(t *testing.T) {
	s := reqrep.NewRep(func(m *mangos.Message, r reqrep.Replier) { _ = r.Reply(m) })
	defer s.Close()
	addr := listen(t, s, "tcp://127.0.0.1:0")
	conn, err := net.Dial("tcp", addr[len("tcp://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte{0, 'S', 'P', 0, 0, 0x30, 0, 0})
	if _, err := io.ReadFull(conn, make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	// A 2-byte message, then a request with id 0x80000001 and body "ok".
	_, _ = conn.Write([]byte{0, 0, 0, 0, 0, 0, 0, 2, 'n', 'o'})
	_, _ = conn.Write([]byte{0, 0, 0, 0, 0, 0, 0, 6, 0x80, 0, 0, 1, 'o', 'k'})
	got := make([]byte, 14)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatal(err)
	}
	if want := []byte{0, 0, 0, 0, 0, 0, 0, 6, 0x80, 0, 0, 1, 'o', 'k'}; !bytes.Equal(got, want) {
		t.Errorf("got % x, want % x", got, want)
	}
}
