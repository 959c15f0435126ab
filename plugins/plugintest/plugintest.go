// Package plugintest runs a Griddle handler inside go test over the real
// plugin protocol: it builds the handler's main package, starts it through
// the same host the sidecar uses, and exposes it on a local HTTP URL.
//
//	func TestGreet(t *testing.T) {
//		s := plugintest.Start(t, ".")
//		resp, err := s.Client().Get(s.URL() + "/hello/greet?name=ada")
//		...
//	}
//
// Outbound calls the handler makes through plugins.Mesh are answered by the
// handlers given with WithService; calls to any other service get 502.
package plugintest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/pluginhost"
)

// Option configures Start.
type Option func(*options)

type options struct {
	services map[string]http.Handler
	logger   *slog.Logger
	args     []string
}

// WithService answers the handler's outbound calls to http://<name>/... with
// h. Requests reach h as the sidecar would forward them: r.Host is name and
// the propagated headers (plugins.HeaderDeadline and the rest) are set.
func WithService(name string, h http.Handler) Option {
	return func(o *options) { o.services[name] = h }
}

// WithLogger sends the host's events and the handler's log output to l.
// Default: the test's log (t.Log).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithArgs passes args to the handler binary.
func WithArgs(args ...string) Option {
	return func(o *options) { o.args = args }
}

// Server is a running handler. It is stopped by the test's cleanup.
type Server struct {
	host *pluginhost.Host
	http *httptest.Server
	bin  string
}

// Start builds the main package pkg (a directory such as "." or an import
// path, resolved like `go build` from the test's working directory), starts
// it through pluginhost and registers its shutdown with t.Cleanup. It fails
// the test if the build or the start fails.
func Start(t testing.TB, pkg string, opts ...Option) *Server {
	t.Helper()
	o := options{services: map[string]http.Handler{}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		w := &testWriter{t: t}
		t.Cleanup(w.stop) // registered first, so it runs after every other cleanup
		o.logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}

	bin := Build(t, pkg)
	mesh := startMesh(t, o.services)

	host, err := pluginhost.New(pluginhost.Config{
		Path:       bin,
		Args:       o.args,
		MeshSocket: mesh,
		Logger:     o.logger,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := host.Start(ctx); err != nil {
		_ = host.Close()
		t.Fatalf("plugintest: %v", err)
	}
	t.Cleanup(func() { _ = host.Close() })

	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "handler"
			pr.Out.Host = pr.In.Host
		},
		Transport:  host,
		BufferPool: newBufferPool(),
		ErrorLog:   slog.NewLogLogger(o.logger.Handler(), slog.LevelWarn),
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return &Server{host: host, http: srv, bin: bin}
}

// URL returns the base URL (http://127.0.0.1:port, no trailing slash) at
// which the handler is served; any HTTP client can use it.
func (s *Server) URL() string { return s.http.URL }

// Client returns an *http.Client for URL.
func (s *Server) Client() *http.Client { return s.http.Client() }

// Host returns the host running the handler process, for tests that
// inspect or kill it.
func (s *Server) Host() *pluginhost.Host { return s.host }

// Binary returns the path of the built handler binary.
func (s *Server) Binary() string { return s.bin }

// Build compiles the main package pkg into t.TempDir() and returns the
// binary's path. It fails the test on a build error.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	name := filepath.Base(pkg)
	if abs, err := filepath.Abs(pkg); err == nil && (pkg == "." || strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../")) {
		name = filepath.Base(abs)
	}
	if name == "." || name == string(filepath.Separator) || name == "" {
		name = "handler"
	}
	bin := filepath.Join(t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugintest: go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// startMesh serves services on a unix socket, dispatching on the request's
// host, and returns the socket path. t.Cleanup stops it.
func startMesh(t testing.TB, services map[string]http.Handler) string {
	t.Helper()
	// t.TempDir paths can exceed the unix socket path limit.
	dir, err := os.MkdirTemp("", "plugintest-")
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "mesh.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("plugintest: mesh socket: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.Host
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
		h, ok := services[name]
		if !ok {
			http.Error(w, fmt.Sprintf("plugintest: no service %q (use plugintest.WithService)", name), http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	t.Cleanup(func() {
		_ = srv.Close()
		wg.Wait()
	})
	return sock
}

// bufferPool is an httputil.BufferPool of 32 KiB copy buffers.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(s []byte) { b.p.Put(&s) }

// testWriter writes log lines to t.Log until the test has finished.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// stop discards further writes: t.Log must not be called after the test.
func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
