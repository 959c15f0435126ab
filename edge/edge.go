// Package edge is Griddle's HTTP front door: it matches each request to a
// service by path prefix, turns it into an envelope, sends it to an instance
// over mangos and holds the connection until the answer comes back.
package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/griddle-mesh/griddle/internal/admission"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/gateway"
	"github.com/griddle-mesh/griddle/internal/loopback"
	"github.com/griddle-mesh/griddle/internal/metrics"
	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/sample"
	"github.com/griddle-mesh/griddle/internal/trace"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Routes is where the edge learns which paths belong to which service
// (the discovery catalog implements it).
type Routes interface {
	Exposures() []discovery.Exposure
	// Rules returns the routing rules in force; never nil.
	Rules() *routing.Table
	// Changed returns a channel closed at the next change.
	Changed() <-chan struct{}
	Status() discovery.Status
	// Instances returns the live instances of service.
	Instances(service string) []discovery.Instance
}

// Config configures an Edge. Zero durations and sizes select the defaults.
type Config struct {
	Listen string // host:port for end users (required)
	Admin  string // host:port for /status and /healthz; "" disables
	// AdminPublic allows an Admin address beyond loopback: what it serves
	// needs no credentials.
	AdminPublic bool
	// NoPprof leaves /debug/pprof/ off the admin address.
	NoPprof bool

	Timeout           time.Duration // per request, retries included (10s)
	MaxBodyBytes      int64         // larger bodies get 413 (8 MiB)
	MaxHeaderBytes    int           // larger headers get 431 (64 KiB)
	ReadHeaderTimeout time.Duration // slow clients sending headers (5s)
	ReadTimeout       time.Duration // whole request read (30s)
	WriteTimeout      time.Duration // whole response written (60s)
	IdleTimeout       time.Duration // keep-alive idle connections (90s)
	ShutdownTimeout   time.Duration // graceful stop (10s)

	// Admission tunes the adaptive concurrency limit that sheds excess
	// load with a fast 503; NoAdmission turns it off.
	Admission   admission.Config
	NoAdmission bool

	// TrustedProxies are the client addresses (proxies in front of the
	// edge) whose X-Forwarded-* headers are kept and added to.
	TrustedProxies []netip.Prefix

	// PinNetworks are the client addresses whose plain X-Griddle-Pin is
	// honoured (testers' networks; --pin-from). PinKeys are the HMAC keys
	// (--pin-key-file) of signed pin tokens (routing.SignPins), honoured
	// from any client in X-Griddle-Pin or the griddle-pin cookie. Either
	// way a pin only reaches a version with live instances; from anyone
	// else pins are ignored.
	PinNetworks []netip.Prefix
	PinKeys     [][]byte

	// MaxConns caps the client connections held open at once (10,000);
	// MaxBufferedBytes caps the request body bytes held in memory at once
	// across all requests (256 MiB). Past either cap the edge answers 503.
	MaxConns         int
	MaxBufferedBytes int64

	// HTTPSListen, when set, serves end users over TLS (HTTP/2 by ALPN,
	// or HTTP/1.1) with the certificate and key in the PEM files
	// HTTPSCert and HTTPSKey, loaded again when they change. The plain
	// Listen port serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
	HTTPSListen, HTTPSCert, HTTPSKey string

	// Sample sizes the sample of recent requests kept for dry runs of
	// rules (served on the admin address at /sample); NoSample turns it off.
	Sample   sample.Config
	NoSample bool

	// AccessLog, when set, gets a line per request.
	AccessLog *slog.Logger

	Logger *slog.Logger
}

// Validate reports the first invalid field, named as on the command line.
func (c Config) Validate() error {
	if c.Listen == "" {
		return errors.New("edge: --listen: required")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("edge: --listen: %w", err)
	}
	if err := loopback.CheckAdmin("edge: --admin", c.Admin, c.AdminPublic, "--admin-public"); err != nil {
		return err
	}
	for name, d := range map[string]time.Duration{"--timeout": c.Timeout, "ReadHeaderTimeout": c.ReadHeaderTimeout,
		"ReadTimeout": c.ReadTimeout, "WriteTimeout": c.WriteTimeout, "IdleTimeout": c.IdleTimeout, "ShutdownTimeout": c.ShutdownTimeout} {
		if d < 0 {
			return fmt.Errorf("edge: %s: %v is negative", name, d)
		}
	}
	if err := c.Admission.Validate(); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	if err := c.Sample.Validate(); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	if c.MaxBodyBytes < 0 || c.MaxHeaderBytes < 0 {
		return errors.New("edge: --max-body-bytes, MaxHeaderBytes: must not be negative")
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("edge: --max-conns: %d is negative", c.MaxConns)
	}
	if c.MaxBufferedBytes < 0 {
		return fmt.Errorf("edge: --max-buffered-bytes: %d is negative", c.MaxBufferedBytes)
	}
	for i, k := range c.PinKeys {
		if len(k) < routing.MinPinKeyBytes {
			return fmt.Errorf("edge: --pin-key-file[%d]: key of %d bytes, want at least %d", i, len(k), routing.MinPinKeyBytes)
		}
	}
	if c.HTTPSListen != "" {
		if _, _, err := net.SplitHostPort(c.HTTPSListen); err != nil {
			return fmt.Errorf("edge: --https-listen: %w", err)
		}
		if c.HTTPSCert == "" || c.HTTPSKey == "" {
			return errors.New("edge: --https-listen: needs --https-cert and --https-key")
		}
	} else if c.HTTPSCert != "" || c.HTTPSKey != "" {
		return errors.New("edge: --https-cert, --https-key: need --https-listen")
	}
	return nil
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Timeout, 10*time.Second)
	def(&c.ReadHeaderTimeout, 5*time.Second)
	def(&c.ReadTimeout, 30*time.Second)
	def(&c.WriteTimeout, 60*time.Second)
	def(&c.IdleTimeout, 90*time.Second)
	def(&c.ShutdownTimeout, 10*time.Second)
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxConns == 0 {
		c.MaxConns = 10000
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = 256 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Edge serves end users. Create it with New, run it with Run.
type Edge struct {
	cfg    Config
	routes Routes
	deps   Deps
	gw     *gateway.Gateway
	table  atomic.Pointer[routeTable]
	addr   atomic.Pointer[string]
	// httpsAddr is the HTTPS listener's address once bound.
	httpsAddr atomic.Pointer[string]
	ready     chan struct{}

	reg       *prometheus.Registry
	metrics   *metrics.Gateway
	admission *admission.Fair // nil: no limit
	conns     *connLimit
	certs     *certReloader   // nil: no HTTPS
	sample    *sample.Sampler // nil: none kept
}

// Deps are the shared parts an edge uses; the caller owns them.
type Deps struct {
	Routes     Routes             // required
	Dispatcher gateway.Dispatcher // required
	// Etcd, when set, is where the edge registers itself (under Prefix) so
	// that operators see which rule revision it runs.
	Etcd   *clientv3.Client
	Prefix string
	// Tracer, when set, makes a span of each request (nil: none).
	Tracer *trace.Tracer
}

// New validates cfg and builds an Edge; it does no I/O.
func New(cfg Config, deps Deps) (*Edge, error) {
	routes, d := deps.Routes, deps.Dispatcher
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if routes == nil || d == nil {
		return nil, errors.New("edge: routes and dispatcher are required")
	}
	cfg.setDefaults()
	e := &Edge{cfg: cfg, routes: routes, deps: deps, ready: make(chan struct{}), reg: metrics.NewRegistry()}
	e.metrics = metrics.NewGateway(e.reg, "edge")
	if !cfg.NoAdmission {
		lim, err := admission.NewFair(cfg.Admission)
		if err != nil {
			return nil, fmt.Errorf("edge: %w", err)
		}
		e.admission = lim
	}
	bodies, err := admission.NewBytes(cfg.MaxBufferedBytes)
	if err != nil {
		return nil, fmt.Errorf("edge: --max-buffered-bytes: %w", err)
	}
	e.conns = &connLimit{max: int64(cfg.MaxConns)}
	if !cfg.NoSample {
		smp, err := sample.New(cfg.Sample)
		if err != nil {
			return nil, fmt.Errorf("edge: %w", err)
		}
		e.sample = smp
	}
	gw, err := gateway.New(gateway.Config{
		Resolve:      e.resolve,
		Dispatcher:   d,
		Timeout:      cfg.Timeout,
		MaxBodyBytes: cfg.MaxBodyBytes,
		Logger:       cfg.Logger,
		Admission:    e.admission,
		Bodies:       bodies,
		Pins:         e.pins,
		Metrics:      e.metrics,
		Rules:        routes.Rules,
		Sample:       e.sample,
		AccessLog:    cfg.AccessLog,
		Tracer:       deps.Tracer,

		TrustedProxies: cfg.TrustedProxies,
	})
	if err != nil {
		return nil, err
	}
	e.gw = gw
	e.table.Store(newRouteTable(nil))
	return e, nil
}

// Handler returns the edge's public HTTP handler.
func (e *Edge) Handler() http.Handler { return e.gw }

// Ready returns a channel closed once the edge accepts connections.
func (e *Edge) Ready() <-chan struct{} { return e.ready }

// Addr returns the address the public listener is bound to once Run has
// started it, or "".
func (e *Edge) Addr() string {
	if a := e.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// Run serves until ctx is done, then shuts down gracefully: in-flight
// requests are answered within ShutdownTimeout.
func (e *Edge) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", e.cfg.Listen)
	if err != nil {
		return fmt.Errorf("edge: --listen: %w", err)
	}
	addr := ln.Addr().String()
	e.addr.Store(&addr)
	// HTTP/1.1 and, on the same port, HTTP/2 with prior knowledge (h2c), as
	// gRPC clients speak it without TLS.
	var plain http.Protocols
	plain.SetHTTP1(true)
	plain.SetUnencryptedHTTP2(true)
	srv := e.publicServer(&plain)
	servers := []*http.Server{srv}
	srv.ConnContext = withGuard
	listeners := []net.Listener{guardListener{Listener: &limitListener{Listener: ln, lim: e.conns, plain: true}, maxHeaderBytes: e.cfg.MaxHeaderBytes}}
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	if e.cfg.HTTPSListen != "" {
		certs, err := newCertReloader(e.cfg.HTTPSCert, e.cfg.HTTPSKey, e.cfg.Logger)
		if err != nil {
			closeAll()
			return err
		}
		e.certs = certs
		tln, err := net.Listen("tcp", e.cfg.HTTPSListen)
		if err != nil {
			closeAll()
			return fmt.Errorf("edge: --https-listen: %w", err)
		}
		taddr := tln.Addr().String()
		e.httpsAddr.Store(&taddr)
		var tlsProtos http.Protocols
		tlsProtos.SetHTTP1(true)
		tlsProtos.SetHTTP2(true)
		ts := e.publicServer(&tlsProtos)
		ts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
		ts.ConnContext = withGuard
		servers = append(servers, ts)
		listeners = append(listeners, newTLSEntry(&limitListener{Listener: tln, lim: e.conns}, ts.TLSConfig, e.cfg.MaxHeaderBytes, e.cfg.ReadHeaderTimeout))
	}
	if e.cfg.Admin != "" {
		aln, err := net.Listen("tcp", e.cfg.Admin)
		if err != nil {
			closeAll()
			return fmt.Errorf("edge: --admin: %w", err)
		}
		servers = append(servers, &http.Server{Handler: e.adminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute})
		listeners = append(listeners, aln)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2*len(servers))
	var wg sync.WaitGroup
	wg.Go(func() { e.watchRoutes(ctx) })
	for i, s := range servers {
		wg.Go(func() {
			if err := s.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("edge: serve: %w", err)
				cancel()
			}
		})
	}
	if e.deps.Etcd != nil {
		reg, err := e.register(ctx, addr)
		if err != nil {
			e.cfg.Logger.Warn("registering the edge failed; it serves, but operators will not see it", "err", err)
		} else {
			defer func() {
				dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer dcancel()
				_ = reg.Close(dctx)
			}()
			wg.Go(func() { discovery.TrackRuleRevision(ctx, reg, e.routes.Rules, e.routes.Changed, nil) })
		}
	}
	e.cfg.Logger.Info("edge serving", "listen", addr, "https", e.HTTPSAddr(), "admin", e.cfg.Admin)
	close(e.ready)

	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.ShutdownTimeout)
	defer scancel()
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			errc <- fmt.Errorf("edge: shutdown: %w", err)
		}
	}
	wg.Wait()
	close(errc)
	return <-errc // the first error, or nil
}

// publicServer is an http.Server for end users speaking protos.
func (e *Edge) publicServer(protos *http.Protocols) *http.Server {
	return &http.Server{
		Handler:           refuseFraming(e.gw),
		MaxHeaderBytes:    e.cfg.MaxHeaderBytes,
		ReadHeaderTimeout: e.cfg.ReadHeaderTimeout,
		ReadTimeout:       e.cfg.ReadTimeout,
		WriteTimeout:      e.cfg.WriteTimeout,
		IdleTimeout:       e.cfg.IdleTimeout,
		Protocols:         protos,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          250,
			MaxReceiveBufferPerConnection: 1 << 20,
			MaxReceiveBufferPerStream:     1 << 20,
		},
		ErrorLog: slog.NewLogLogger(e.cfg.Logger.Handler(), slog.LevelDebug),
	}
}

// HTTPSAddr returns the address the HTTPS listener is bound to once Run
// has started it, or "".
func (e *Edge) HTTPSAddr() string {
	if a := e.httpsAddr.Load(); a != nil {
		return *a
	}
	return ""
}

// register puts the edge in etcd under a lease; its id is derived from
// the host and the listening address.
func (e *Edge) register(ctx context.Context, addr string) (*discovery.Registration, error) {
	host, _ := os.Hostname()
	id := strings.ToLower(strings.NewReplacer(":", "-", ".", "-", "[", "", "]", "").Replace(host + "-" + addr))
	return discovery.RegisterEdge(ctx, e.deps.Etcd, e.deps.Prefix, discovery.Edge{
		ID: id, Address: addr, Admin: e.cfg.Admin, Started: time.Now().UTC(), RuleRevision: e.routes.Rules().Revision(),
	}, 5*time.Second, e.cfg.Logger)
}

// watchRoutes rebuilds the route table whenever the exposures change.
func (e *Edge) watchRoutes(ctx context.Context) {
	for {
		changed := e.routes.Changed()
		e.table.Store(newRouteTable(e.routes.Exposures()))
		e.metrics.RuleRevision.Set(float64(e.routes.Rules().Revision()))
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// resolve names the service of r: by the rules' http routes first, then by
// the exposures of services that have no rules (once a service has rules,
// its rule routes are all it exposes).
func (e *Edge) resolve(r *http.Request) (string, bool) {
	rules := e.routes.Rules()
	if svc, ok := rules.Route(r.URL.Path, r.Method); ok {
		return svc, true
	}
	svc, ok := e.table.Load().match(r.URL.Path)
	if !ok || rules.Service(svc) != nil {
		return "", false
	}
	return svc, true
}

func (e *Edge) adminHandler() http.Handler {
	mux := http.NewServeMux()
	if !e.cfg.NoPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", metrics.Handler(e.reg))
	if e.sample != nil {
		mux.Handle("GET /sample", e.sample.Handler())
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		st := e.routes.Status()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		var adm map[string]admission.Stats
		if e.admission != nil {
			adm = e.admission.Stats()
		}
		exps := e.routes.Exposures()
		instances := make(map[string][]discovery.Instance, len(exps))
		for _, x := range exps {
			instances[x.Service] = e.routes.Instances(x.Service)
		}
		_ = enc.Encode(Status{"edge", st, exps, instances, adm, struct{ Open, Refused int64 }{e.conns.open.Load(), e.conns.denied.Load()}})
	})
	return mux
}

// Status is what an edge's /status answers.
type Status struct {
	Component string                          `json:"component"`
	Etcd      discovery.Status                `json:"etcd"`
	Routes    []discovery.Exposure            `json:"routes"`
	Instances map[string][]discovery.Instance `json:"instances"` // of the routes' services, with their admin addresses
	Admission map[string]admission.Stats      `json:"admission,omitempty"`
	Conns     struct{ Open, Refused int64 }
}

// routeTable maps path prefixes to services, longest prefix first. It is
// immutable once built.
type routeTable struct {
	entries []routeEntry
}

type routeEntry struct {
	prefix, service string
}

func newRouteTable(exps []discovery.Exposure) *routeTable {
	t := &routeTable{}
	for _, e := range exps {
		for _, p := range e.PathPrefixes {
			t.entries = append(t.entries, routeEntry{prefix: p, service: e.Service})
		}
	}
	sort.SliceStable(t.entries, func(i, j int) bool { return len(t.entries[i].prefix) > len(t.entries[j].prefix) })
	return t
}

func (t *routeTable) match(path string) (string, bool) {
	for _, e := range t.entries {
		if strings.HasPrefix(path, e.prefix) {
			return e.service, true
		}
	}
	return "", false
}
