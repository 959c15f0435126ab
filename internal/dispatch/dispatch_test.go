package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/rep"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/loopback"
	"github.com/griddle-mesh/griddle/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is a REP socket on 127.0.0.1 served by a pool of workers, each with
// its own mangos context, that answers every wire.Request with a wire.Reply
// echoing the body. Its knobs may be changed while it runs.
type server struct {
	name string
	addr string
	sock mangos.Socket
	stop chan struct{} // closed by kill
	once sync.Once
	wg   sync.WaitGroup

	delay  atomic.Int64 // nanoseconds slept before answering
	code   atomic.Int32 // wire.Code of every reply
	hold   atomic.Bool  // keep requests until killed, never answer
	grpc   atomic.Int32 // > 0: answer as a gRPC server with this status, trailers only
	sick   atomic.Bool  // answer 503 marked Unhealthy, as a sidecar that lost its store does
	served atomic.Int64 // requests received
	got    chan *wire.Request
}

func startServer(t testing.TB, name string, workers int) *server {
	t.Helper()
	sock, err := rep.NewSocket()
	if err != nil {
		t.Fatalf("rep.NewSocket: %v", err)
	}
	l, err := sock.NewListener("tcp://127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("NewListener: %v", err)
	}
	if err := l.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	s := &server{
		name: name,
		addr: l.Address(),
		sock: sock,
		stop: make(chan struct{}),
		got:  make(chan *wire.Request, 1024),
	}
	for range workers {
		c, err := sock.OpenContext()
		if err != nil {
			t.Fatalf("OpenContext: %v", err)
		}
		s.wg.Add(1)
		go s.work(c)
	}
	t.Cleanup(s.kill)
	return s
}

func (s *server) instance(service, version string) discovery.Instance {
	return discovery.Instance{ID: s.name, Service: service, Version: version, Address: s.addr}
}

// kill closes the socket with whatever requests it holds, as kill -9 of the
// sidecar would, and waits for the workers.
func (s *server) kill() {
	s.once.Do(func() {
		close(s.stop)
		_ = s.sock.Close()
		s.wg.Wait()
	})
}

func (s *server) work(c mangos.Context) {
	defer s.wg.Done()
	for {
		m, err := c.RecvMsg()
		if err != nil {
			return // the socket is closed
		}
		req := new(wire.Request)
		err = proto.Unmarshal(m.Body, req)
		m.Free()
		if err != nil {
			continue
		}
		s.served.Add(1)
		select {
		case s.got <- req:
		default:
		}
		if s.hold.Load() {
			<-s.stop
			return
		}
		if d := time.Duration(s.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-s.stop:
				return
			}
		}
		reply := &wire.Reply{
			Id:       req.Id,
			Status:   200,
			Body:     req.Body,
			Code:     wire.Code(s.code.Load()),
			ServedBy: s.name,
		}
		if s.sick.Load() {
			reply.Status, reply.Unhealthy = 503, true
		}
		if g := s.grpc.Load(); g > 0 {
			reply.Body = nil
			reply.Headers = []*wire.Header{{Name: "Content-Type", Values: []string{"application/grpc"}}}
			reply.Trailers = []*wire.Header{{Name: "Grpc-Status", Values: []string{fmt.Sprint(g)}}}
		}
		b, err := proto.Marshal(reply)
		if err != nil {
			panic(err)
		}
		if err := c.Send(b); err != nil {
			return
		}
	}
}

// endpoints is a catalog that tests edit while requests run.
type endpoints struct {
	mu sync.Mutex
	m  map[string][]discovery.Instance
}

func (e *endpoints) Instances(service string) []discovery.Instance {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[service]
}

func (e *endpoints) set(service string, insts ...discovery.Instance) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = make(map[string][]discovery.Instance)
	}
	e.m[service] = insts
}

func newDispatcher(t testing.TB, cfg Config) *Dispatcher {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// deadAddress returns a tcp address on which nothing listens.
func deadAddress(t *testing.T) string {
	t.Helper()
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return "tcp://" + addr
}

func request(method, body string) *wire.Request {
	return &wire.Request{Id: body, Service: "profiles", Method: method, Path: "/p", Body: []byte(body)}
}

func TestConfigValidate(t *testing.T) {
	eps := &endpoints{}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Endpoints: eps}, true},
		{"no endpoints", Config{}, false},
		{"negative attempts", Config{Endpoints: eps, MaxAttempts: -1}, false},
		{"too many attempts", Config{Endpoints: eps, MaxAttempts: 11}, false},
		{"negative eject after", Config{Endpoints: eps, EjectAfter: -1}, false},
		{"negative eject for", Config{Endpoints: eps, EjectFor: -time.Second}, false},
		{"negative timeout", Config{Endpoints: eps, DefaultTimeout: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate: got %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate: got %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestConcurrentRequestsUseBothServers(t *testing.T) {
	a, b := startServer(t, "a", 32), startServer(t, "b", 32)
	a.delay.Store(int64(time.Millisecond))
	b.delay.Store(int64(time.Millisecond))
	eps := &endpoints{}
	eps.set("profiles", a.instance("profiles", "v1"), b.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})

	const n = 1000
	var wg sync.WaitGroup
	var perServer sync.Map
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			body := fmt.Sprintf("req-%d", i)
			reply, err := d.Do(ctx, request("GET", body))
			if err != nil {
				errs <- fmt.Errorf("%s: %w", body, err)
				return
			}
			if got := string(reply.Body); got != body || reply.Id != body || reply.Code != wire.Code_CODE_OK {
				errs <- fmt.Errorf("got reply %q id %q code %v, want %q OK", got, reply.Id, reply.Code, body)
				return
			}
			c, _ := perServer.LoadOrStore(reply.ServedBy, new(atomic.Int64))
			c.(*atomic.Int64).Add(1)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, name := range []string{"a", "b"} {
		c, ok := perServer.Load(name)
		if !ok || c.(*atomic.Int64).Load() == 0 {
			t.Errorf("server %s answered no request", name)
		} else {
			t.Logf("server %s answered %d", name, c.(*atomic.Int64).Load())
		}
	}
}

func TestRetryOnRefusingReply(t *testing.T) {
	for _, code := range []wire.Code{wire.Code_CODE_UNAVAILABLE, wire.Code_CODE_OVERLOADED} {
		t.Run(code.String(), func(t *testing.T) {
			bad, good := startServer(t, "bad", 4), startServer(t, "good", 4)
			bad.code.Store(int32(code))
			eps := &endpoints{}
			eps.set("profiles", bad.instance("profiles", "v1"), good.instance("profiles", "v1"))
			d := newDispatcher(t, Config{Endpoints: eps})
			retried := 0
			for i := range 30 {
				req := request("POST", fmt.Sprint(i))
				reply, err := d.Do(t.Context(), req)
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if reply.Code != wire.Code_CODE_OK || reply.ServedBy != "good" {
					t.Fatalf("got code %v from %q, want OK from good", reply.Code, reply.ServedBy)
				}
				if req.Attempt > 1 {
					retried++
				}
			}
			if bad.served.Load() == 0 || retried == 0 {
				t.Fatalf("bad server saw %d requests, %d retried: the retry path was not exercised", bad.served.Load(), retried)
			}
		})
	}
}

// TestGRPCUnavailableRetried: a gRPC call answered UNAVAILABLE with
// nothing else goes to another instance, only where the policy allows the
// method's repetition and retries on "unavailable"; the instance counts a
// failure either way.
func TestGRPCUnavailableRetried(t *testing.T) {
	for _, c := range []struct {
		name  string
		pol   Policy
		retry bool
	}{
		{"not allowed", Policy{Attempts: 3}, false},
		{"allowed", Policy{Attempts: 3, OnUnavailable: true, NonIdempotent: true}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad, good := startServer(t, "bad", 4), startServer(t, "good", 4)
			bad.grpc.Store(14)
			eps := &endpoints{}
			eps.set("profiles", bad.instance("profiles", "v1"), good.instance("profiles", "v1"))
			d := newDispatcher(t, Config{Endpoints: eps})
			sawBad, retried := false, false
			for i := range 40 {
				req := request("POST", fmt.Sprint(i))
				reply, err := d.DoPolicy(t.Context(), req, c.pol)
				if err != nil {
					t.Fatal(err)
				}
				if req.Attempt > 1 {
					retried = true
				}
				if reply.ServedBy == "bad" {
					sawBad = true
					if st, _ := wire.GRPCStatus(reply.Headers, reply.Trailers); st != 14 {
						t.Fatalf("bad's answer lost its status: %v", reply.Trailers)
					}
				}
			}
			if retried != c.retry {
				t.Errorf("retried %v, want %v", retried, c.retry)
			}
			if c.retry && sawBad {
				t.Error("an UNAVAILABLE reached the caller though another instance could serve")
			}
			if !c.retry && !sawBad {
				t.Error("no call went to the failing instance: the case was not exercised")
			}
		})
	}
}

// TestUnhealthyAnswer: an answer its instance marks Unhealthy counts as
// a failure of the instance, which is ejected; a request that may be
// repeated goes to another instance, one that may not gets the answer.
func TestUnhealthyAnswer(t *testing.T) {
	bad, good := startServer(t, "bad", 4), startServer(t, "good", 4)
	bad.sick.Store(true)
	eps := &endpoints{}
	eps.set("profiles", bad.instance("profiles", "v1"), good.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})
	for i := range 40 {
		reply, err := d.Do(t.Context(), request("GET", fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		if reply.ServedBy != "good" || reply.Status != 200 {
			t.Fatalf("GET %d: got %d from %q, want 200 from good", i, reply.Status, reply.ServedBy)
		}
	}
	if bad.served.Load() == 0 {
		t.Fatal("no request went to the unhealthy instance: the case was not exercised")
	}
	ejected := false
	for _, st := range d.Stats() {
		if st.Address == bad.addr {
			ejected = !st.EjectedUntil.IsZero()
		}
	}
	if !ejected {
		t.Error("the instance whose answers say it is unhealthy is not ejected")
	}

	// A POST is not repeated: sent to the unhealthy instance alone, it
	// gets that instance's answer.
	eps.set("profiles", bad.instance("profiles", "v1"))
	reply, err := d.Do(t.Context(), request("POST", "once"))
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status != 503 || !reply.Unhealthy || reply.ServedBy != "bad" {
		t.Errorf("POST: got %d (unhealthy %v) from %q, want bad's 503", reply.Status, reply.Unhealthy, reply.ServedBy)
	}
}

// TestTrialIsBounded: a trial request to an ejected instance that then
// holds it waits trialLimit, not the request's deadline, and is answered
// by another instance.
func TestTrialIsBounded(t *testing.T) {
	bad, good := startServer(t, "bad", 4), startServer(t, "good", 4)
	bad.code.Store(int32(wire.Code_CODE_UNAVAILABLE))
	eps := &endpoints{}
	eps.set("profiles", bad.instance("profiles", "v1"), good.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})
	for i := 0; bad.served.Load() < DefaultEjectAfter; i++ {
		if i > 200 {
			t.Fatal("the failing instance got too few requests to be ejected")
		}
		if _, err := d.Do(t.Context(), request("GET", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	bad.hold.Store(true) // from now on it takes requests and never answers
	time.Sleep(trialEvery + 50*time.Millisecond)
	before := bad.served.Load()
	start := time.Now()
	req := request("GET", "trial")
	req.DeadlineUnixNano = time.Now().Add(10 * time.Second).UnixNano()
	reply, err := d.Do(t.Context(), req)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if bad.served.Load() == before {
		t.Fatal("no trial went to the ejected instance: the case was not exercised")
	}
	if reply.ServedBy != "good" {
		t.Errorf("answered by %q, want good", reply.ServedBy)
	}
	if took > 5*time.Second {
		t.Errorf("the trial's request took %v: it waited for its deadline, not trialLimit (%v)", took, minHung)
	}
}

func TestAllRefusingReturnsLastReply(t *testing.T) {
	s := startServer(t, "s", 2)
	s.code.Store(int32(wire.Code_CODE_OVERLOADED))
	eps := &endpoints{}
	eps.set("profiles", s.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps, MaxAttempts: 2})
	req := request("GET", "x")
	reply, err := d.Do(t.Context(), req)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if reply.Code != wire.Code_CODE_OVERLOADED || req.Attempt != 2 {
		t.Fatalf("got code %v after %d attempts, want OVERLOADED after 2", reply.Code, req.Attempt)
	}
}

func TestServerKilledMidRequest(t *testing.T) {
	tests := []struct {
		method  string
		wantErr error // nil: served by the survivor
	}{
		{"GET", nil},
		{"PUT", nil},
		{"POST", ErrUnavailable},
		{"PATCH", ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			victim, survivor := startServer(t, "victim", 2), startServer(t, "survivor", 2)
			victim.hold.Store(true)
			eps := &endpoints{}
			eps.set("profiles", victim.instance("profiles", "v1"))
			d := newDispatcher(t, Config{Endpoints: eps})

			type result struct {
				reply *wire.Reply
				err   error
			}
			res := make(chan result, 1)
			start := time.Now()
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				reply, err := d.Do(ctx, request(tt.method, "x"))
				res <- result{reply, err}
			}()
			select {
			case <-victim.got:
			case <-time.After(5 * time.Second):
				t.Fatal("the victim never received the request")
			}
			eps.set("profiles", victim.instance("profiles", "v1"), survivor.instance("profiles", "v1"))
			victim.kill()

			var r result
			select {
			case r = <-res:
			case <-time.After(5 * time.Second):
				t.Fatal("Do did not return after the victim died")
			}
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("Do took %v, want well under the 10s deadline", elapsed)
			}
			if tt.wantErr != nil {
				if !errors.Is(r.err, tt.wantErr) {
					t.Fatalf("got %v, %v; want error %v", r.reply, r.err, tt.wantErr)
				}
				t.Logf("%s: %v", tt.method, r.err)
				if survivor.served.Load() != 0 {
					t.Fatalf("survivor saw %d requests, want 0: %s is not idempotent", survivor.served.Load(), tt.method)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("Do: %v", r.err)
			}
			if r.reply.ServedBy != "survivor" {
				t.Fatalf("served by %q, want survivor", r.reply.ServedBy)
			}
		})
	}
}

func TestNoInstance(t *testing.T) {
	s := startServer(t, "s", 1)
	eps := &endpoints{}
	eps.set("profiles", s.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})
	tests := []struct {
		name string
		req  *wire.Request
	}{
		{"unknown service", &wire.Request{Service: "feed", Method: "GET"}},
		{"unknown version", &wire.Request{Service: "profiles", Version: "v2", Method: "GET"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := d.Do(t.Context(), tt.req); !errors.Is(err, ErrNoInstance) {
				t.Fatalf("got %v, want ErrNoInstance", err)
			}
		})
	}
	reply, err := d.Do(t.Context(), &wire.Request{Service: "profiles", Version: "v1", Method: "GET"})
	if err != nil || reply.ServedBy != "s" {
		t.Fatalf("matching version: got %v, %v; want a reply from s", reply, err)
	}
}

func TestDeadline(t *testing.T) {
	s := startServer(t, "slow", 4)
	s.delay.Store(int64(5 * time.Second))
	eps := &endpoints{}
	eps.set("profiles", s.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})

	tests := []struct {
		name string
		do   func() error
	}{
		{"ctx deadline", func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
			defer cancel()
			_, err := d.Do(ctx, request("GET", "x"))
			return err
		}},
		{"request deadline", func() error {
			req := request("GET", "x")
			req.DeadlineUnixNano = time.Now().Add(150 * time.Millisecond).UnixNano()
			_, err := d.Do(t.Context(), req)
			return err
		}},
		{"already past", func() error {
			req := request("GET", "x")
			req.DeadlineUnixNano = time.Now().Add(-time.Second).UnixNano()
			_, err := d.Do(t.Context(), req)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := tt.do()
			if !errors.Is(err, ErrDeadline) {
				t.Fatalf("got %v, want ErrDeadline", err)
			}
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Fatalf("Do returned after %v, want about 150ms", elapsed)
			}
		})
	}
}

func TestContextCanceled(t *testing.T) {
	s := startServer(t, "slow", 2)
	s.hold.Store(true)
	eps := &endpoints{}
	eps.set("profiles", s.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-s.got
		cancel()
	}()
	start := time.Now()
	_, err := d.Do(ctx, request("GET", "x"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("Do returned after %v, want promptly", elapsed)
	}
}

func TestDeadAddressIsEjected(t *testing.T) {
	live := startServer(t, "live", 4)
	dead := deadAddress(t)
	eps := &endpoints{}
	eps.set("profiles",
		discovery.Instance{ID: "dead", Service: "profiles", Version: "v1", Address: dead},
		live.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps, EjectAfter: 2, EjectFor: time.Minute})

	for i := range 50 {
		reply, err := d.Do(t.Context(), request("POST", fmt.Sprint(i)))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if reply.ServedBy != "live" {
			t.Fatalf("request %d served by %q, want live", i, reply.ServedBy)
		}
	}
	var found bool
	for _, st := range d.Stats() {
		if st.Address != dead {
			continue
		}
		found = true
		if st.EjectedUntil.IsZero() || st.ConsecutiveFailures < 2 || st.Connected {
			t.Fatalf("dead address stats %+v, want ejected with at least 2 failures", st)
		}
		if left := time.Until(st.EjectedUntil); left < 50*time.Second {
			t.Fatalf("ejected for %v more, want about a minute", left)
		}
	}
	if !found {
		t.Fatalf("dead address missing from Stats: %+v", d.Stats())
	}
}

func TestEjectionBackoff(t *testing.T) {
	p := newPeer("tcp://127.0.0.1:1", DefaultMaxReplyBytes, nil)
	var got []time.Duration
	for range 6 {
		p.ejectedUntil.Store(0) // the previous ejection ended
		until, ok := p.failure(1, time.Second)
		if !ok {
			t.Fatal("failure past the threshold did not eject")
		}
		got = append(got, time.Until(until).Round(time.Second))
	}
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("ejection periods %v, want %v seconds", got, want)
		}
	}
	if _, ok := p.failure(1, time.Second); ok {
		t.Fatal("an ejected peer was ejected again")
	}
	p.success(0, time.Second)
	p.ejectedUntil.Store(0)
	if until, _ := p.failure(3, time.Second); !until.IsZero() {
		t.Fatal("a failure after a success ejected before the threshold")
	}
}

func TestCloseUnblocksInFlight(t *testing.T) {
	s := startServer(t, "holder", 16)
	s.hold.Store(true)
	eps := &endpoints{}
	eps.set("profiles", s.instance("profiles", "v1"))
	d, err := New(Config{Endpoints: eps, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	const n = 10
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := d.Do(context.Background(), request("GET", fmt.Sprint(i)))
			errs <- err
		}()
	}
	for range n {
		select {
		case <-s.got:
		case <-time.After(5 * time.Second):
			t.Fatal("requests did not reach the server")
		}
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("got %v, want ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Do still blocked after Close")
		}
	}
	t.Logf("in-flight calls returned %v after Close", time.Since(start))
	if _, err := d.Do(context.Background(), request("GET", "late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close: got %v, want ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSweepClosesVanishedAddresses(t *testing.T) {
	a, b := startServer(t, "a", 2), startServer(t, "b", 2)
	eps := &endpoints{}
	eps.set("profiles", a.instance("profiles", "v1"), b.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})
	for i := range 20 {
		if _, err := d.Do(t.Context(), request("GET", fmt.Sprint(i))); err != nil {
			t.Fatalf("Do: %v", err)
		}
	}
	eps.set("profiles", b.instance("profiles", "v1"))
	d.sweep()
	stats := d.Stats()
	if len(stats) != 1 || stats[0].Address != b.addr {
		t.Fatalf("after sweep got %+v, want only %s", stats, b.addr)
	}
	eps.set("profiles")
	d.sweep()
	if stats := d.Stats(); len(stats) != 0 {
		t.Fatalf("after the service vanished got %+v, want none", stats)
	}
	if _, err := d.Do(t.Context(), request("GET", "x")); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("got %v, want ErrNoInstance", err)
	}
}

func TestBadRequest(t *testing.T) {
	s := startServer(t, "s", 1)
	eps := &endpoints{}
	eps.set("profiles", s.instance("profiles", "v1"))
	d := newDispatcher(t, Config{Endpoints: eps})
	req := request("GET", "x")
	req.Path = "/\xff" // proto3 strings must be valid UTF-8
	if _, err := d.Do(t.Context(), req); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("got %v, want ErrBadRequest", err)
	}
}

func BenchmarkDo(b *testing.B) {
	s := startServer(b, "s", 64)
	eps := &endpoints{}
	eps.set("profiles", s.instance("profiles", "v1"))
	d := newDispatcher(b, Config{Endpoints: eps})
	body := make([]byte, 100)
	// Warm up the connection.
	if _, err := d.Do(context.Background(), &wire.Request{Service: "profiles", Method: "GET", Body: body}); err != nil {
		b.Fatalf("Do: %v", err)
	}
	b.ReportAllocs()
	b.SetParallelism(8) // 16 requests in flight on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := &wire.Request{Service: "profiles", Method: "GET", Path: "/profiles/1", Body: body}
		for pb.Next() {
			req.DeadlineUnixNano = 0
			if _, err := d.Do(context.Background(), req); err != nil {
				b.Errorf("Do: %v", err)
				return
			}
		}
	})
}

// TestHungPeer: an instance with requests outstanding and no answer for
// many times its usual answer time is hung; one that answers, or has
// nothing outstanding, is not.
func TestHungPeer(t *testing.T) {
	p := newPeer("tcp://127.0.0.1:1", 1<<20, nil)
	now := time.Now()
	if p.hung(now.UnixNano()) {
		t.Fatal("idle peer is hung")
	}
	p.inflight.Add(1)
	p.sent(now)
	if p.hung(now.Add(900 * time.Millisecond).UnixNano()) {
		t.Error("hung before noAnswerHung without any answer yet")
	}
	if !p.hung(now.Add(1100 * time.Millisecond).UnixNano()) {
		t.Error("not hung after noAnswerHung without an answer")
	}
	p.answered(10 * time.Millisecond) // usual answers take 10ms: the limit is minHung
	at := time.Now()
	if p.hung(at.Add(400 * time.Millisecond).UnixNano()) {
		t.Error("hung 400ms after its last answer")
	}
	if !p.hung(at.Add(600 * time.Millisecond).UnixNano()) {
		t.Error("not hung 600ms after its last answer with requests outstanding")
	}
	p.inflight.Add(-1)
	if p.hung(at.Add(time.Hour).UnixNano()) {
		t.Error("hung with nothing outstanding")
	}
}

// TestPeerComesBack: an ejected instance gets one trial request at a time
// unless it was ejected for answering nothing; an answer ends the
// ejection; a new instance at the same address starts afresh.
func TestPeerComesBack(t *testing.T) {
	p := newPeer("tcp://127.0.0.1:1", 1<<20, nil)
	p.restarted(1)
	for range DefaultEjectAfter {
		p.failure(DefaultEjectAfter, time.Minute)
	}
	now := time.Now().UnixNano()
	if p.ejectedUntil.Load() <= now {
		t.Fatal("not ejected after EjectAfter failures")
	}
	if !p.onTrial(now) {
		t.Error("no trial for an instance ejected for failures")
	}
	if p.onTrial(now + int64(trialEvery/2)) {
		t.Error("a second trial within trialEvery")
	}
	p.success(0, time.Second)
	if p.ejectedUntil.Load() != 0 {
		t.Error("still ejected after an answer")
	}

	d := &Dispatcher{cfg: Config{EjectFor: time.Minute}.withDefaults()}
	d.ejectHung(p, false)
	if p.onTrial(time.Now().Add(time.Hour).UnixNano()) {
		t.Error("a trial for an instance ejected for answering nothing")
	}
	p.restarted(2) // a new instance registered at the address
	if p.ejectedUntil.Load() != 0 || p.silent.Load() {
		t.Error("a restarted instance inherits the old one's ejection")
	}
}
