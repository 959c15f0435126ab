package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/edge"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/dispatch"
	"github.com/griddle-mesh/griddle/internal/etcdembed/etcdtest"
	"github.com/griddle-mesh/griddle/plugins/plugintest"
)

// BenchmarkPath runs the whole request path but the handler in this
// process: a keep-alive client → the edge (gateway with admission and
// metrics, on a real net/http server) → mangos REQ/REP over tcp on
// 127.0.0.1 → this sidecar → the hello handler process over its unix
// socket. allocs/op therefore count client, edge and sidecar together per
// request. Connections opened during the timed part are reported as
// client-dials and handler-dials: both should stay 0 (no churn).
// startPath runs the whole request path but the client in this process:
// an embedded etcd, a catalog and a dispatcher, a real sidecar with the
// hello handler plugin, and an edge. It returns the edge's address and the
// sidecar; everything stops at the end of the test.
func startPath(tb testing.TB) (string, *Sidecar) {
	tb.Helper()
	quiet := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())

	etcd := etcdtest.Run(tb)
	cli, err := etcd.Client(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	cat := discovery.NewCatalog(cli, discovery.DefaultPrefix, quiet)
	catDone := make(chan struct{})
	go func() { defer close(catDone); _ = cat.Run(ctx) }()
	d, err := dispatch.New(dispatch.Config{Endpoints: cat, Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}

	s, err := New(Config{
		Service: "hello", Version: "v1", Listen: "tcp://127.0.0.1:0",
		Plugin: plugintest.Build(tb, "../services/hello"), HTTPPrefixes: []string{"/hello/"},
		DrainGrace: time.Millisecond, Logger: quiet,
	}, Deps{Etcd: cli, Dispatcher: d, Catalog: cat})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := edge.New(edge.Config{Listen: "127.0.0.1:0", Logger: quiet, NoAdmission: true}, edge.Deps{Routes: cat, Dispatcher: d})
	if err != nil {
		tb.Fatal(err)
	}
	sDone, eDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(sDone); _ = s.Run(ctx) }()
	go func() { defer close(eDone); _ = e.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		<-eDone
		<-sDone
		<-catDone
		d.Close()
		cli.Close()
	})
	for _, ready := range []<-chan struct{}{s.Ready(), e.Ready()} {
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			tb.Fatal("mesh did not start")
		}
	}

	// Wait for the edge to learn the route and the instance.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + e.Addr() + "/hello/greet?name=x")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no answer through the edge: %v", err)
		}
	}
	return e.Addr(), s
}

func BenchmarkPath(b *testing.B) {
	addr, s := startPath(b)
	var clientDials atomic.Int64
	dialer := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			clientDials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + addr + "/hello/greet?name=x"
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return &statusError{resp.StatusCode}
		}
		return nil
	}
	// Open the connections the timed part needs, so that any dial in it
	// is churn.
	const inFlight = 8 // per GOMAXPROCS: 16 requests in flight on 2 cores
	warm := make(chan error, inFlight*2)
	for range cap(warm) {
		go func() {
			var err error
			for range 50 {
				if err = get(); err != nil {
					break
				}
			}
			warm <- err
		}()
	}
	for range cap(warm) {
		if err := <-warm; err != nil {
			b.Fatal(err)
		}
	}

	b.SetParallelism(inFlight)
	host := s.host.Load()
	clientBefore, handlerBefore := clientDials.Load(), host.Dials()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(clientDials.Load()-clientBefore), "client-dials")
	b.ReportMetric(float64(host.Dials()-handlerBefore), "handler-dials")
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "status " + strings.TrimSpace(http.StatusText(e.code)) }

// TestConcurrentAnswersStayIntact sends many different bodies at once
// through the whole path: each answer must be its own request's, byte for
// byte, however the sidecar's workers share their buffers.
func TestConcurrentAnswersStayIntact(t *testing.T) {
	addr, _ := startPath(t)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	url := "http://" + addr + "/hello/echo"
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := range 20 {
				body := bytes.Repeat([]byte(fmt.Sprintf("%d.%d;", w, i)), 4096)
				resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
					t.Errorf("worker %d request %d: status %d, %d bytes back (%.100q), equal %v, err %v", w, i, resp.StatusCode, len(got), got, bytes.Equal(got, body), err)
					return
				}
			}
		})
	}
	wg.Wait()
}
