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
//
// With WithStore the handler also gets what a sidecar with a store gives
// it: its service's key space of an in-memory store (plugins.Mesh(ctx).Store())
// and event publishing (Publish, PublishTx, Announce). The test reads the
// same key space with Server.Store and the published events with
// Server.Events:
//
//	s := plugintest.Start(t, ".", plugintest.WithStore())
//	... // send requests to s.URL()
//	evs := s.Events(t.Context(), "message.sent")
package plugintest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/pluginhost"
	"github.com/griddle-mesh/griddle/internal/pluginproto"
	istore "github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/internal/wire"
	"github.com/griddle-mesh/griddle/plugins"
	"github.com/griddle-mesh/griddle/plugins/store"
	"google.golang.org/protobuf/proto"
)

// Event is one event of a service's log, as Server.Events returns it.
type Event = events.Event

// Option configures Start.
type Option func(*options)

type options struct {
	services map[string]http.Handler
	logger   *slog.Logger
	args     []string
	store    bool
	name     string // the service's name; "": the package directory's base name
}

// WithStore gives the handler a store and event publishing, as a sidecar
// started with --store does: an in-memory store, fresh for each Start, of
// which the handler sees only its service's key space (see
// WithServiceName), served on the mesh socket under host
// plugins/store.Host, and a publisher of that service's events under host
// plugins.EventsHost. Without it the handler's store and publishing calls
// fail with 502.
func WithStore() Option {
	return func(o *options) { o.store = true }
}

// WithServiceName names the service the handler serves: its key space with
// WithStore, the publisher of its events, and GRIDDLE_SERVICE in its
// environment. Default: the base name of the package's directory (Start(t,
// ".") in services/feed serves "feed").
func WithServiceName(name string) Option {
	return func(o *options) { o.name = name }
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
	t       testing.TB
	host    *pluginhost.Host
	http    *httptest.Server
	bin     string
	service string
	space   istore.Store // nil without WithStore
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

	if o.name == "" {
		o.name = binaryName(pkg)
	}
	if !events.ValidName(o.name) {
		t.Fatalf("plugintest: service name %q: want 1-63 of a-z 0-9 - . not starting with - or . (use WithServiceName)", o.name)
	}
	for _, reserved := range []string{store.Host, plugins.EventsHost} {
		if _, ok := o.services[reserved]; ok && o.store {
			t.Fatalf("plugintest: WithService(%q) conflicts with WithStore, which serves that host", reserved)
		}
	}

	bin := Build(t, pkg)
	s := &Server{t: t, bin: bin, service: o.name}
	services := o.services
	var unary func(context.Context, []byte) []byte
	if o.store {
		services = maps.Clone(o.services)
		s.space, unary = startStore(t, o.name, o.logger, services)
	}
	host, err := pluginhost.New(pluginhost.Config{
		Path:       bin,
		Args:       o.args,
		Env:        []string{pluginproto.EnvService + "=" + o.name},
		Mesh:       meshHandler(services),
		Unary:      unary,
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

	proxy := forward(host, o.name, o.logger)
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	s.host, s.http = host, srv
	return s
}

// startStore opens an in-memory store and adds to services what a sidecar
// serves a handler of service name on its mesh socket: the store, confined
// to name's key space, and name's event publisher. It returns name's key
// space and what answers the handler's one-key reads. t.Cleanup closes
// everything.
func startStore(t testing.TB, name string, logger *slog.Logger, services map[string]http.Handler) (istore.Store, func(context.Context, []byte) []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	backend, err := badgerstore.Open(ctx, badgerstore.Config{InMemory: true, Logger: logger})
	if err != nil {
		t.Fatalf("plugintest: store: %v", err)
	}
	t.Cleanup(func() { _ = backend.Close() })
	own, err := backend.Space(name)
	if err != nil {
		t.Fatalf("plugintest: store: %v", err)
	}
	storeSrv := storehttp.NewServer(backend, storehttp.WithSpace(name), storehttp.WithLogger(logger))
	t.Cleanup(func() { _ = storeSrv.Close() })
	pub, err := events.NewPublisher(events.PublisherConfig{Name: name, Log: own, Listen: "tcp://127.0.0.1:0", Logger: logger})
	if err != nil {
		t.Fatalf("plugintest: events: %v", err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	services[store.Host] = storeSrv
	services[plugins.EventsHost] = events.Handler(pub, logger)
	return own, storeSrv.Op
}

// Service returns the name of the service the handler serves (see
// WithServiceName).
func (s *Server) Service() string { return s.service }

// Store returns the key space the handler's store calls reach, for the
// test to prepare or inspect state directly. It fails the test when Start
// was not given WithStore.
func (s *Server) Store() store.Store {
	s.t.Helper()
	if s.space == nil {
		s.t.Fatalf("plugintest: Server.Store needs Start(..., plugintest.WithStore())")
	}
	return s.space
}

// Events returns every event the handler has published on topic and that
// has committed, in sequence order. It fails the test on an invalid topic,
// a store error, or when Start was not given WithStore.
func (s *Server) Events(ctx context.Context, topic string) []Event {
	s.t.Helper()
	var evs []Event
	err := s.Store().ReadTransact(ctx, func(tx istore.ReadTx) error {
		var err error
		evs, err = events.ScanTx(tx, s.service, topic, 0, 0)
		return err
	})
	if err != nil {
		s.t.Fatalf("plugintest: events of %s/%s: %v", s.service, topic, err)
	}
	return evs
}

// URL returns the base URL (http://127.0.0.1:port, no trailing slash) at
// which the handler is served; any HTTP client can use it.
func (s *Server) URL() string { return s.http.URL }

// Client returns an *http.Client for URL.
func (s *Server) Client() *http.Client { return s.http.Client() }

// DeliveryClient returns an *http.Client whose requests reach the handler
// as its sidecar's event deliveries do (plugins.IsDelivery reports true):
// POST to URL() plus the subscription's path, with the X-Griddle-Event-*
// headers. Requests from Client to a path declared with
// plugins.Subscribe get 404, as those from the edge do.
func (s *Server) DeliveryClient() *http.Client {
	return &http.Client{Transport: deliveryTransport{s.host}}
}

type deliveryTransport struct{ h *pluginhost.Host }

func (d deliveryTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	u := *r.URL
	u.Path, u.RawPath = wire.DeliveryPath(r.URL.Path), ""
	r.URL = &u
	return d.h.RoundTrip(r)
}

// Host returns the host running the handler process, for tests that
// inspect or kill it.
func (s *Server) Host() *pluginhost.Host { return s.host }

// Binary returns the path of the built handler binary.
func (s *Server) Binary() string { return s.bin }

// Build compiles the main package pkg into t.TempDir() and returns the
// binary's path. It fails the test on a build error.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), binaryName(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugintest: go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// binaryName is the base name of the main package pkg's directory, or
// "handler" when it has none.
func binaryName(pkg string) string {
	name := filepath.Base(pkg)
	if abs, err := filepath.Abs(pkg); err == nil && (pkg == "." || strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../")) {
		name = filepath.Base(abs)
	}
	if name == "." || name == string(filepath.Separator) || name == "" {
		name = "handler"
	}
	return name
}

// meshHandler answers the handler's calls into the mesh, dispatching on
// the request's host.
func meshHandler(services map[string]http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.Host
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
		h, ok := services[name]
		if !ok {
			hint := "plugintest.WithService"
			if name == store.Host || name == plugins.EventsHost {
				hint = "plugintest.WithStore"
			}
			http.Error(w, fmt.Sprintf("plugintest: no service %q (use %s)", name, hint), http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// maxBody bounds request and answer bodies, as a sidecar's default does.
const maxBody = 8 << 20

// forward sends each request to the handler as its sidecar does: in an
// envelope with its whole body (wire.NewRequest), answered with the
// handler's reply (wire.Reply.WriteHTTP). The test's client stands where
// the mesh would: the deadline, request id and routing context it sends
// as headers (plugins.HeaderDeadline and the rest) go into the envelope's
// fields, and the other headers, event headers included, reach the handler.
func forward(host *pluginhost.Host, service string, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, "plugintest: reading the request body failed", http.StatusBadRequest)
			return
		}
		h := r.Header
		r.Header = h.Clone()
		for _, name := range []string{wire.HeaderDeadline, wire.HeaderRequestID, wire.HeaderRouting} {
			r.Header.Del(name) // they go into the envelope's fields
		}
		env := wire.NewRequest(r, service, body)
		env.Host = ""
		// The handler answers at its deadline at the latest; the grace
		// lets an answer given right at it through.
		var wait time.Time
		if d, err := strconv.ParseInt(h.Get(wire.HeaderDeadline), 10, 64); err == nil && d > 0 {
			env.DeadlineUnixNano = d
			wait = time.Unix(0, d).Add(5 * time.Second)
		}
		env.Id = h.Get(wire.HeaderRequestID)
		if v := h.Get(wire.HeaderRouting); v != "" {
			rc, err := wire.DecodeRouting(v)
			if err != nil {
				http.Error(w, "plugintest: "+wire.HeaderRouting+": not a routing context as the mesh encodes it", http.StatusBadRequest)
				return
			}
			env.Routing = rc
		}
		if tp := r.Header.Get(wire.HeaderTraceparent); tp != "" {
			env.Trace = &wire.Trace{Traceparent: tp, Tracestate: r.Header.Get(wire.HeaderTracestate)}
		}
		payload, err := proto.Marshal(env)
		if err != nil {
			http.Error(w, "plugintest: "+err.Error(), http.StatusInternalServerError)
			return
		}
		b, err := host.Do(payload, wait, maxBody, r.Context().Done()) // a client that leaves cancels the handler's work
		var reply wire.Reply
		if err == nil {
			err = proto.Unmarshal(b, &reply)
		}
		if err != nil {
			logger.Warn("plugintest: the handler did not answer", "err", err)
			http.Error(w, "plugintest: the handler did not answer", http.StatusBadGateway)
			return
		}
		if reply.GetCode() != wire.Code_CODE_OK {
			logger.Warn("plugintest: the handler failed", "code", reply.GetCode(), "message", reply.GetMessage())
			http.Error(w, "plugintest: "+reply.GetCode().ErrorCode(), reply.GetCode().HTTPStatus())
			return
		}
		if err := reply.WriteHTTP(w); err != nil {
			logger.Warn("plugintest: writing the answer failed", "err", err)
		}
	})
}

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
