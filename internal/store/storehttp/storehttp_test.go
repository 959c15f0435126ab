package storehttp_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/internal/store/storetest"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(storeEnv); dir != "" {
		os.Exit(storeProcess(dir)) // the test binary re-executed as a store process
	}
	goleak.VerifyTestMain(m)
}

// serve runs a Server over a fresh in-memory Badger on a real HTTP server;
// everything stops at the end of the test.
func serve(t testing.TB, opts ...storehttp.Option) (*storehttp.Client, store.Backend) {
	t.Helper()
	b, err := badgerstore.Open(context.Background(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := storehttp.NewServer(b, opts...)
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
		b.Close()
	})
	hc := ts.Client()
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	return storehttp.NewClient(hc, ts.URL), b
}

// serveThrough is serve with each request going through h, which hands it
// to the Server (srv) or answers it itself.
func serveThrough(t *testing.T, h func(srv http.Handler, w http.ResponseWriter, r *http.Request), opts ...storehttp.Option) *httptest.Server {
	t.Helper()
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := storehttp.NewServer(b, opts...)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(srv, w, r) }))
	t.Cleanup(func() { ts.Close(); srv.Close(); b.Close() })
	return ts
}

// The Client over real HTTP is the third backend of the suite.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Backend {
		c, _ := serve(t)
		return c
	})
}

func TestWithSpaceConfines(t *testing.T) {
	c, b := serve(t, storehttp.WithSpace("profiles"))
	ctx := t.Context()
	other, err := c.Space("billing")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []store.Store{c.Own(), other} {
		if err := s.Transact(ctx, func(tx store.Tx) error {
			return tx.Set([]byte("k"), []byte("v"))
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		space string
		want  string
	}{{"profiles", "v"}, {"billing", ""}} {
		s, err := b.Space(c.space)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		if err := s.ReadTransact(ctx, func(tx store.ReadTx) error {
			got, err = tx.Get([]byte("k"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("space %s: k = %q, want %q", c.space, got, c.want)
		}
	}
}

func TestOwnNeedsWithSpace(t *testing.T) {
	c, _ := serve(t)
	err := c.Own().Transact(t.Context(), func(tx store.Tx) error { return tx.Set([]byte("k"), []byte("v")) })
	if !errors.Is(err, store.ErrSpace) {
		t.Errorf("Own() without WithSpace: Transact = %v, want %v", err, store.ErrSpace)
	}
}

// Requests that a Client would not send are answered with codes, not
// panics or Go error text.
func TestBadRequests(t *testing.T) {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := storehttp.NewServer(b)
	defer srv.Close()
	for _, c := range []struct {
		name, path, body string
		want             int
	}{
		{"unknown txn", "/v1/txns/nope/get", "", http.StatusGone},
		{"unknown op", "/v1/txns/nope/explode", "", http.StatusBadRequest},
		{"garbage body", "/v1/txns/nope/get", "\xff\xff\xff", http.StatusBadRequest},
		{"bad space", "/v1/spaces/Bad_Space/txns", "", http.StatusForbidden},
		{"no such path", "/v2/x", "", http.StatusNotFound},
	} {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(c.body)))
		if w.Code != c.want {
			t.Errorf("%s: POST %s = %d, want %d", c.name, c.path, w.Code, c.want)
		}
		if strings.Contains(w.Body.String(), "goroutine") {
			t.Errorf("%s: answer leaks a stack", c.name)
		}
	}
}

// Close ends open transactions: their next operation fails with ErrClosed.
func TestServerClose(t *testing.T) {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := storehttp.NewServer(b)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	s, err := storehttp.NewClient(ts.Client(), ts.URL).Space("svc")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Transact(t.Context(), func(tx store.Tx) error {
		srv.Close()
		return tx.Set([]byte("k"), []byte("v"))
	})
	if !errors.Is(err, store.ErrClosed) {
		t.Errorf("Transact across Server.Close = %v, want %v", err, store.ErrClosed)
	}
}

// unixClient serves srv on a unix socket, as a sidecar does.
func unixClient(tb testing.TB, h http.Handler) *http.Client {
	sock := filepath.Join(tb.TempDir(), "store.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(l)
	}()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 64,
	}
	tb.Cleanup(func() {
		tr.CloseIdleConnections()
		hs.Close()
		<-done
	})
	return &http.Client{Transport: tr}
}

func BenchmarkHTTPGet(b *testing.B) {
	bk, err := badgerstore.Open(context.Background(), badgerstore.Config{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	srv := storehttp.NewServer(bk, storehttp.WithSpace("profiles"))
	b.Cleanup(func() {
		srv.Close()
		bk.Close()
	})
	s := storehttp.NewClient(unixClient(b, srv), "http://griddle-store").Own()
	ctx := context.Background()
	value := []byte(strings.Repeat("p", 200))
	if err := s.Transact(ctx, func(tx store.Tx) error { return tx.Set([]byte("profile/42"), value) }); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		err := s.ReadTransact(ctx, func(tx store.ReadTx) error {
			v, err := tx.Get([]byte("profile/42"))
			if err == nil && len(v) != len(value) {
				err = errors.New("wrong value")
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHTTPSingleGet is the uncached read's path: store.Get, one round
// trip (BenchmarkHTTPGet is the same read as a transaction: three).
func BenchmarkHTTPSingleGet(b *testing.B) {
	bk, err := badgerstore.Open(context.Background(), badgerstore.Config{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	srv := storehttp.NewServer(bk, storehttp.WithSpace("profiles"))
	b.Cleanup(func() {
		srv.Close()
		bk.Close()
	})
	s := storehttp.NewClient(unixClient(b, srv), "http://griddle-store").Own()
	ctx := context.Background()
	value := []byte(strings.Repeat("p", 200))
	if err := s.Transact(ctx, func(tx store.Tx) error { return tx.Set([]byte("profile/42"), value) }); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		v, err := store.Get(ctx, s, []byte("profile/42"))
		if err != nil || len(v) != len(value) {
			b.Fatalf("Get = %d bytes, %v", len(v), err)
		}
	}
}

// TestReachable: a Client reports its Server unreachable once three
// requests in a row got no HTTP answer, and reachable again at the next
// answer; a store error is an answer.
func TestReachable(t *testing.T) {
	var down atomic.Bool
	ts := serveThrough(t, func(srv http.Handler, w http.ResponseWriter, r *http.Request) {
		if down.Load() { // the connection breaks without an answer
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		srv.ServeHTTP(w, r)
	})
	c := storehttp.NewClient(ts.Client(), ts.URL, storehttp.HTTPOnly())
	s, err := c.Space("profiles")
	if err != nil {
		t.Fatal(err)
	}
	get := func() error {
		return s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
			_, err := tx.Get([]byte("k"))
			return err
		})
	}
	if err := get(); err != nil || !c.Reachable() {
		t.Fatalf("healthy: err %v, Reachable %v; want nil, true", err, c.Reachable())
	}
	down.Store(true)
	for i := range 3 {
		if !c.Reachable() {
			t.Fatalf("unreachable after %d failures, want 3", i)
		}
		if err := get(); err == nil {
			t.Fatal("a read through a broken connection succeeded")
		}
	}
	if c.Reachable() {
		t.Error("Reachable after 3 requests in a row got no answer")
	}
	down.Store(false)
	if err := get(); err != nil || !c.Reachable() {
		t.Errorf("back: err %v, Reachable %v; want nil, true", err, c.Reachable())
	}
}
