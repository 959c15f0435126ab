package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
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

// BenchmarkPath runs the whole request path: raw keep-alive HTTP/1.1
// clients that allocate nothing → the edge (gateway and metrics, on a real
// net/http server) → mangos REQ/REP over tcp on 127.0.0.1 → this sidecar →
// the hello handler process over its hop connections. allocs/op count the
// edge and the sidecar, which run in this process; handler-allocs/op the
// handler process's own (from its runtime metrics). handler-dials, the
// connections opened to the handler during the timed part, must stay 0.
// startPath runs the whole request path but the client in this process:
// an embedded etcd, a catalog and a dispatcher, a real sidecar with the
// hello handler plugin, and an edge. It returns the edge's address and the
// sidecar; everything stops at the end of the test.
func startPath(tb testing.TB) (string, *Sidecar) { return startPathOn(tb, "tcp://127.0.0.1:0") }

// startPathOn is startPath with the sidecar listening on listen: tcp as
// deployed, inproc as in griddle up; edits change the edge's configuration.
func startPathOn(tb testing.TB, listen string, edits ...func(*edge.Config)) (string, *Sidecar) {
	tb.Helper()
	return startMesh(tb, meshSpec{listen: listen, plugin: "../services/hello", service: "hello", prefixes: []string{"/hello/"},
		probe: "/hello/greet?name=x", edits: edits})
}

// meshSpec says what startMesh runs: one service's handler plugin (a
// package path) exposed at prefixes, its sidecar listening on listen, the
// edge's configuration changed by edits; probe is a path that answers 200
// once the edge can reach the service, or with probeAny any answer but
// 404 and 5xx.
type meshSpec struct {
	listen, plugin, service, probe string
	probeAny                       bool
	prefixes                       []string
	edits                          []func(*edge.Config)
	// also are more services, each with a sidecar of its own.
	also []meshSpec
}

// startMesh runs the whole request path for spec but the client in this
// process, and returns the edge's address and the sidecar.
func startMesh(tb testing.TB, spec meshSpec) (string, *Sidecar) {
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

	var sidecars []*Sidecar
	for _, sp := range append([]meshSpec{spec}, spec.also...) {
		if sp.listen == "" {
			sp.listen = "tcp://127.0.0.1:0"
		}
		sc, err := New(Config{
			Service: sp.service, Version: "v1", Listen: sp.listen,
			Plugin: plugintest.Build(tb, sp.plugin), HTTPPrefixes: sp.prefixes,
			DrainGrace: time.Millisecond, Logger: quiet,
		}, Deps{Etcd: cli, Dispatcher: d, Catalog: cat})
		if err != nil {
			tb.Fatal(err)
		}
		sidecars = append(sidecars, sc)
	}
	s := sidecars[0]
	ecfg := edge.Config{Listen: "127.0.0.1:0", Logger: quiet, NoAdmission: true}
	for _, edit := range spec.edits {
		edit(&ecfg)
	}
	e, err := edge.New(ecfg, edge.Deps{Routes: cat, Dispatcher: d})
	if err != nil {
		tb.Fatal(err)
	}
	var running sync.WaitGroup
	eDone := make(chan struct{})
	for _, sc := range sidecars {
		running.Go(func() { _ = sc.Run(ctx) })
	}
	go func() { defer close(eDone); _ = e.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		<-eDone
		running.Wait()
		<-catDone
		d.Close()
		cli.Close()
	})
	readies := []<-chan struct{}{e.Ready()}
	for _, sc := range sidecars {
		readies = append(readies, sc.Ready())
	}
	for _, ready := range readies {
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			tb.Fatal("mesh did not start")
		}
	}

	// Wait for the edge to learn the route and the instance.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + e.Addr() + spec.probe)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || spec.probeAny && resp.StatusCode != 404 && resp.StatusCode < 500 {
				break
			}
		}
		if time.Now().After(deadline) {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			tb.Fatalf("no answer through the edge: %d %v", status, err)
		}
	}
	return e.Addr(), s
}

func BenchmarkPath(b *testing.B) {
	for _, c := range []struct{ name, listen string }{
		{"tcp", "tcp://127.0.0.1:0"},      // edge and sidecar apart, as deployed
		{"inproc", "inproc://bench-path"}, // one process, as griddle up runs them
	} {
		b.Run(c.name, func(b *testing.B) { benchmarkPath(b, c.listen) })
	}
}

func benchmarkPath(b *testing.B, listen string) {
	addr, s := startPathOn(b, listen)
	const inFlight = 8 // per GOMAXPROCS: 16 requests in flight on 2 cores
	var clients []*rawClient
	for range inFlight * runtime.GOMAXPROCS(0) {
		c, err := dialRaw(addr, "/hello/greet?name=x")
		if err != nil {
			b.Fatal(err)
		}
		defer c.close()
		for range 50 { // warm up the connections and the handler
			if err := c.get(); err != nil {
				b.Fatal(err)
			}
		}
		clients = append(clients, c)
	}
	var next atomic.Int64
	host := s.host.Load()
	ctx := context.Background()
	before, err := host.Stats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	handlerDials := host.Dials()
	b.SetParallelism(inFlight)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := clients[next.Add(1)-1]
		for pb.Next() {
			if err := c.get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	after, err := host.Stats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(after.Allocs-before.Allocs)/float64(b.N), "handler-allocs/op")
	b.ReportMetric(float64(host.Dials()-handlerDials), "handler-dials")
}

// rawClient sends one fixed GET at a time on a keep-alive connection and
// reads the answer without allocating, so that a benchmark's allocations
// are the server side's.
type rawClient struct {
	c   net.Conn
	r   *bufio.Reader
	req []byte
}

func dialRaw(addr, target string) (*rawClient, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawClient{c: c, r: bufio.NewReaderSize(c, 16<<10),
		req: []byte("GET " + target + " HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n")}, nil
}

func (c *rawClient) close() { _ = c.c.Close() }

// get sends the request and reads the answer, which must be a 200 with a
// Content-Length.
func (c *rawClient) get() error {
	if _, err := c.c.Write(c.req); err != nil {
		return err
	}
	status, err := c.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("status line %q", status)
	}
	n := -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n = 0
			for _, d := range bytes.TrimSpace(v) {
				n = n*10 + int(d-'0')
			}
		}
	}
	if n < 0 {
		return errors.New("answer without Content-Length")
	}
	_, err = c.r.Discard(n)
	return err
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
