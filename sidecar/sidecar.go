// Package sidecar is the agent that runs beside each instance of a service:
// it receives envelopes on a mangos REP socket, hands them to the team's
// handler process over HTTP on a unix socket, registers the instance in etcd,
// and carries the handler's own calls to other services into the mesh.
package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/rep"
	_ "go.nanomsg.org/mangos/v3/transport/ipc"    // registers ipc://
	_ "go.nanomsg.org/mangos/v3/transport/tcp"    // registers tcp://
	_ "go.nanomsg.org/mangos/v3/transport/tlstcp" // registers tls+tcp://
	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/gateway"
	"github.com/griddle-mesh/griddle/internal/metrics"
	"github.com/griddle-mesh/griddle/internal/pluginhost"
	"github.com/griddle-mesh/griddle/internal/pluginproto"
	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/internal/wire"
	"github.com/griddle-mesh/griddle/plugins"
	pluginstore "github.com/griddle-mesh/griddle/plugins/store"
)

// Sidecar is one running instance of a service. Create it with New, run it
// with Run.
type Sidecar struct {
	cfg  Config
	log  *slog.Logger
	deps Deps

	host     atomic.Pointer[pluginhost.Host]
	reg      *prometheus.Registry
	metrics  *metrics.Sidecar
	requests *prometheus.CounterVec // metrics.Requests of this service and version, by code
	duration prometheus.Observer
	inflight atomic.Int64
	bound    atomic.Pointer[string]
	ready    chan struct{}
	// versionHeader is the value of the version header on every answer.
	versionHeader []string
	bufs          sync.Pool // *bytes.Buffer for reply bodies
	// plainHost is true when http.NewRequest takes the service name over
	// as the host of http://<service>/ unchanged (see newRequest).
	plainHost bool
}

// Deps are the shared parts a sidecar uses; the caller owns them.
type Deps struct {
	Etcd       *clientv3.Client   // where the instance registers (required)
	Dispatcher gateway.Dispatcher // carries the handler's calls to other services (required)
	// Catalog is discovery's view: etcd's status and the routing rules
	// that outbound calls follow (optional: without it, no rules).
	Catalog Catalog
	// Store is where the service's state and events live (optional:
	// without it the handler's store and publishing calls fail).
	Store store.Backend
}

// Catalog is what the sidecar reads of discovery (discovery.Catalog).
type Catalog interface {
	Status() discovery.Status
	Instances(service string) []discovery.Instance
	Rules() *routing.Table
	Changed() <-chan struct{}
}

// New validates cfg and builds a Sidecar; it does no I/O.
func New(cfg Config, deps Deps) (*Sidecar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Etcd == nil || deps.Dispatcher == nil {
		return nil, errors.New("sidecar: Deps.Etcd and Deps.Dispatcher are required")
	}
	cfg.setDefaults()
	s := &Sidecar{cfg: cfg, log: cfg.Logger, deps: deps, ready: make(chan struct{}), reg: metrics.NewRegistry()}
	s.metrics = metrics.NewSidecar(s.reg)
	// Service and version never change: bind them once, not per request.
	s.requests = s.metrics.Requests.MustCurryWith(prometheus.Labels{"service": cfg.Service, "version": cfg.Version})
	s.duration = s.metrics.Duration.WithLabelValues(cfg.Service, cfg.Version)
	s.versionHeader = []string{cfg.Version}
	s.plainHost = plainHost(cfg.Service)
	s.bufs.New = func() any { return new(bytes.Buffer) }
	return s, nil
}

// Ready returns a channel closed once the sidecar serves and is registered.
func (s *Sidecar) Ready() <-chan struct{} { return s.ready }

// Address returns the mangos URL the REP socket is bound to once Run has
// started it, or "".
func (s *Sidecar) Address() string {
	if a := s.bound.Load(); a != nil {
		return *a
	}
	return ""
}

// Run starts the handler, serves until ctx is done, then drains:
// deregisters, lets edges notice, finishes in-flight work, and stops the
// handler.
func (s *Sidecar) Run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "griddle-sidecar-")
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	defer os.RemoveAll(dir)
	var wg sync.WaitGroup // the goroutines Run starts besides the workers
	defer wg.Wait()

	meshSocket := filepath.Join(dir, "mesh.sock")
	pub, stopMesh, err := s.serveMesh(meshSocket, &wg)
	if err != nil {
		return err
	}
	defer stopMesh()

	host, err := pluginhost.New(pluginhost.Config{
		Path:       s.cfg.Plugin,
		Args:       s.cfg.PluginArgs,
		MeshSocket: meshSocket,
		Env:        []string{pluginproto.EnvService + "=" + s.cfg.Service},
		Logger:     s.log,
		MaxConns:   s.cfg.Concurrency,
	})
	if err != nil {
		return fmt.Errorf("sidecar: --plugin: %w", err)
	}
	if err := host.Start(ctx); err != nil {
		return fmt.Errorf("sidecar: starting handler: %w", err)
	}
	defer host.Close()
	s.host.Store(host)
	subs := s.subscriptions(host)

	sock, err := s.listen()
	if err != nil {
		return err
	}
	defer sock.Close()
	var workers sync.WaitGroup
	for range s.cfg.Concurrency {
		mc, err := sock.OpenContext()
		if err != nil {
			return fmt.Errorf("sidecar: %w", err)
		}
		workers.Go(func() { s.serve(mc) })
	}
	defer workers.Wait() // after sock.Close, which the drain does first

	reg, err := s.register(ctx, pub)
	if err != nil {
		sock.Close()
		return err
	}
	stopAdmin := s.serveAdmin(&wg)
	defer stopAdmin()
	bctx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	switch {
	case len(subs) > 0 && s.deps.Store == nil:
		s.log.Error("the handler subscribes to events, but this sidecar has no store (--store): nothing will be delivered", "subscriptions", len(subs))
	case len(subs) > 0:
		wg.Go(func() { s.subscribe(bctx, s.deps.Store, subs) })
	}
	if c := s.deps.Catalog; c != nil {
		wg.Go(func() {
			discovery.TrackRuleRevision(bctx, reg, c.Rules, c.Changed, func(rev int64) { s.metrics.Rule.Set(float64(rev)) })
		})
	}
	s.log.Info("sidecar serving", "listen", s.Address(), "handler_pid", host.PID())
	close(s.ready)

	<-ctx.Done()
	s.drain(ctx, reg, sock)
	return nil
}

// subscriptions are the event subscriptions of the configuration and those
// the handler declared; for a topic in both, the configuration's path wins.
func (s *Sidecar) subscriptions(host *pluginhost.Host) []Subscription {
	subs := slices.Clone(s.cfg.Subscriptions)
	for _, d := range host.Subscriptions() {
		if !slices.ContainsFunc(subs, func(c Subscription) bool { return c.Publisher == d.Publisher && c.Topic == d.Topic }) {
			subs = append(subs, Subscription{Publisher: d.Publisher, Topic: d.Topic, Path: d.Path})
		}
	}
	return subs
}

// serveMesh serves the handler's side of the mesh on a unix socket at
// path: its outbound calls, and, with a store, the store and publishing.
// stop closes what it opened.
func (s *Sidecar) serveMesh(path string, wg *sync.WaitGroup) (pub *events.Publisher, stop func(), err error) {
	gw, err := gateway.New(gateway.Config{
		Resolve:          resolveHost,
		Dispatcher:       s.deps.Dispatcher,
		Timeout:          s.cfg.OutboundTimeout,
		MaxBodyBytes:     int64(s.cfg.MaxBodyBytes),
		TrustMeshHeaders: true,
		Logger:           s.log,
		Rules:            s.rules(),
	})
	if err != nil {
		return nil, nil, err
	}
	handler := http.Handler(gw)
	var closers []func() error
	stop = func() {
		for _, c := range slices.Backward(closers) {
			_ = c()
		}
	}
	if s.deps.Store != nil {
		own, err := s.deps.Store.Space(s.cfg.Service)
		if err != nil {
			return nil, nil, fmt.Errorf("sidecar: store: %w", err)
		}
		storeSrv := storehttp.NewServer(s.deps.Store, storehttp.WithSpace(s.cfg.Service), storehttp.WithLogger(s.log))
		closers = append(closers, storeSrv.Close)
		pub, err = events.NewPublisher(events.PublisherConfig{Name: s.cfg.Service, Log: own, Listen: s.cfg.EventsListen, Logger: s.log})
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("sidecar: --events-listen: %w", err)
		}
		closers = append(closers, pub.Close)
		handler = byHost(map[string]http.Handler{
			pluginstore.Host:   storeSrv,
			plugins.EventsHost: events.Handler(pub, s.log),
		}, gw)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("sidecar: mesh socket: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	wg.Go(func() { _ = srv.Serve(ln) })
	closers = append(closers, srv.Close)
	return pub, stop, nil
}

// listen opens the REP socket on --listen and records the bound address.
func (s *Sidecar) listen() (mangos.Socket, error) {
	sock, err := rep.NewSocket()
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	// Room for the body and the envelope around it. It must be set on the
	// socket: a listener's own option is overwritten by the socket's.
	if err := sock.SetOption(mangos.OptionMaxRecvSize, s.cfg.MaxBodyBytes+1<<20); err != nil {
		sock.Close()
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	var opts map[string]any
	if s.cfg.TLS != nil {
		opts = map[string]any{mangos.OptionTLSConfig: s.cfg.TLS}
	}
	ln, err := sock.NewListener(s.cfg.Listen, opts)
	if err == nil {
		err = ln.Listen()
	}
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("sidecar: --listen: %w", err)
	}
	bound := ln.Address()
	s.bound.Store(&bound)
	return sock, nil
}

// register puts the instance in etcd, and its service's HTTP exposure.
func (s *Sidecar) register(ctx context.Context, pub *events.Publisher) (*discovery.Registration, error) {
	in := discovery.Instance{ID: s.cfg.ID, Service: s.cfg.Service, Version: s.cfg.Version, Address: s.cfg.Advertise,
		Admin: s.cfg.Admin, Started: time.Now().UTC()}
	if in.Address == "" {
		in.Address = s.Address()
	}
	if pub != nil {
		in.Events = pub.Addr()
	}
	reg, err := discovery.Register(ctx, s.deps.Etcd, s.cfg.Prefix, in, s.cfg.TTL, s.log)
	if err != nil {
		return nil, fmt.Errorf("sidecar: registering: %w", err)
	}
	if len(s.cfg.HTTPPrefixes) > 0 {
		exp := discovery.Exposure{Service: s.cfg.Service, PathPrefixes: s.cfg.HTTPPrefixes}
		if err := discovery.PutExposure(ctx, s.deps.Etcd, s.cfg.Prefix, exp); err != nil {
			s.log.Warn("publishing HTTP exposure failed; the edge may not route to this service", "err", err)
		}
	}
	return reg, nil
}

// serveAdmin serves /healthz, /status, /metrics and pprof on --admin, if
// set; a listener that fails is logged, not fatal.
func (s *Sidecar) serveAdmin(wg *sync.WaitGroup) (stop func()) {
	if s.cfg.Admin == "" {
		return func() {}
	}
	ln, err := net.Listen("tcp", s.cfg.Admin)
	if err != nil {
		s.log.Error("admin listener failed", "admin", s.cfg.Admin, "err", err)
		return func() {}
	}
	srv := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	wg.Go(func() { _ = srv.Serve(ln) })
	return func() { _ = srv.Close() }
}

// drain deregisters, gives edges DrainGrace to notice, waits (up to
// DrainTimeout) for in-flight work, then closes the socket.
func (s *Sidecar) drain(ctx context.Context, reg *discovery.Registration, sock mangos.Socket) {
	s.log.Info("draining")
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTimeout)
	defer cancel()
	if err := reg.Close(dctx); err != nil {
		s.log.Warn("deregistering failed; the lease will expire", "err", err)
	}
	time.Sleep(s.cfg.DrainGrace)
	for s.inflight.Load() > 0 && dctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.inflight.Load(); n > 0 {
		s.log.Warn("drain timeout: abandoning in-flight requests", "in_flight", n)
	}
	sock.Close()
	s.log.Info("stopped")
}

// serve is one worker: it owns mc and answers one request at a time.
func (s *Sidecar) serve(mc mangos.Context) {
	for {
		msg, err := mc.RecvMsg()
		if err != nil {
			if errors.Is(err, mangos.ErrClosed) {
				return
			}
			continue
		}
		s.inflight.Add(1)
		s.metrics.InFlight.Inc()
		start := time.Now()
		// buf holds the handler's answer until it is marshalled into msg.
		buf := s.bufs.Get().(*bytes.Buffer)
		buf.Reset()
		reply := s.handle(msg.Body, buf)
		s.metrics.InFlight.Dec()
		if reply == nil { // past its deadline: nobody waits for the answer
			s.putBuf(buf)
			msg.Free()
			s.inflight.Add(-1)
			s.metrics.Dropped.Inc()
			continue
		}
		s.requests.WithLabelValues(metrics.Code(replyStatus(reply))).Inc()
		s.duration.Observe(time.Since(start).Seconds())
		msg.Body = msg.Body[:0]
		msg.Body, err = proto.MarshalOptions{}.MarshalAppend(msg.Body, reply)
		s.putBuf(buf) // reply.Body is copied into msg: the buffer is free again
		if err == nil {
			err = mc.SendMsg(msg)
		}
		if err != nil {
			msg.Free()
			s.log.Debug("sending reply failed", "err", err)
		}
		s.inflight.Add(-1)
	}
}

// putBuf returns a reply buffer to the pool, unless it grew so big that
// keeping it would pin memory.
func (s *Sidecar) putBuf(buf *bytes.Buffer) {
	if buf.Cap() <= 1<<20 {
		s.bufs.Put(buf)
	}
}

// handle runs one envelope through the handler, reading its answer into
// buf, which the returned reply's Body aliases: the caller owns buf and
// must not reuse it before the reply is marshalled. It returns nil for
// work whose deadline has already passed.
func (s *Sidecar) handle(body []byte, buf *bytes.Buffer) *wire.Reply {
	var req wire.Request
	if err := proto.Unmarshal(body, &req); err != nil {
		return &wire.Reply{Code: wire.Code_CODE_BAD_REQUEST, Message: "undecodable envelope", ServedBy: s.cfg.ID}
	}
	reply := &wire.Reply{Id: req.GetId(), ServedBy: s.cfg.ID}
	deadline := time.Unix(0, req.GetDeadlineUnixNano())
	if req.GetDeadlineUnixNano() == 0 {
		deadline = time.Now().Add(s.cfg.OutboundTimeout)
	} else if !time.Now().Before(deadline) {
		return nil
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	hreq, err := s.newRequest(ctx, &req)
	if err != nil {
		reply.Code, reply.Message = wire.Code_CODE_BAD_REQUEST, "invalid method or path"
		return reply
	}
	wire.DecodeHeader(hreq.Header, req.GetHeaders())
	if req.GetHost() != "" {
		hreq.Host = req.GetHost()
	}
	hreq.Header.Set(gateway.HeaderDeadline, strconv.FormatInt(deadline.UnixNano(), 10))
	hreq.Header.Set(gateway.HeaderRequestID, req.GetId())
	if rc := wire.EncodeRouting(req.GetRouting()); rc != "" {
		hreq.Header.Set(gateway.HeaderRouting, rc)
	}
	if t := req.GetTrace(); t != nil && t.GetTraceparent() != "" {
		hreq.Header.Set("Traceparent", t.GetTraceparent())
		if t.GetTracestate() != "" {
			hreq.Header.Set("Tracestate", t.GetTracestate())
		}
	}

	resp, err := s.host.Load().RoundTrip(hreq)
	if err != nil {
		switch {
		case errors.Is(err, pluginhost.ErrUnavailable):
			reply.Code, reply.Message = wire.Code_CODE_UNAVAILABLE, "handler unavailable"
		case ctx.Err() != nil:
			reply.Code, reply.Message = wire.Code_CODE_DEADLINE_EXCEEDED, "deadline exceeded in handler"
		default:
			reply.Code, reply.Message = wire.Code_CODE_INTERNAL, "handler failed without an answer"
		}
		s.log.Debug("handler round trip failed", "request", req.GetId(), "err", err)
		return reply
	}
	defer resp.Body.Close()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, int64(s.cfg.MaxBodyBytes)+1)); err != nil {
		if ctx.Err() != nil {
			reply.Code, reply.Message = wire.Code_CODE_DEADLINE_EXCEEDED, "deadline exceeded reading the handler's answer"
		} else {
			reply.Code, reply.Message = wire.Code_CODE_INTERNAL, "handler's answer broke off"
			s.log.Debug("reading the handler's answer failed", "request", req.GetId(), "err", err)
		}
		return reply
	}
	if buf.Len() > s.cfg.MaxBodyBytes {
		reply.Code, reply.Message = wire.Code_CODE_INTERNAL, "handler's answer exceeds the body limit"
		return reply
	}
	reply.Status = int32(resp.StatusCode)
	resp.Header[gateway.HeaderVersion] = s.versionHeader
	reply.Headers = wire.EncodeHeader(resp.Header)
	reply.Body = buf.Bytes()
	return reply
}

// newRequest builds the handler's request for the envelope req: method,
// http://<service> with req's path and query, and body (no headers yet).
// It fails for an invalid method, path or query, just as
// http.NewRequestWithContext of that URL does (which it calls when the
// path or query holds anything it cannot take over verbatim), but it parses
// nothing in the common case.
func (s *Sidecar) newRequest(ctx context.Context, req *wire.Request) (*http.Request, error) {
	path, query := req.GetPath(), req.GetRawQuery()
	if path == "" {
		path = "/"
	}
	var body io.Reader
	if n := len(req.GetBody()); n > 0 {
		body = bytes.NewReader(req.GetBody())
	}
	if !s.plainHost || !plainTarget(path, query) {
		hreq, err := http.NewRequestWithContext(ctx, req.GetMethod(), "http://"+s.cfg.Service+req.RequestURI(), body)
		if err != nil {
			return nil, err
		}
		if body == nil {
			hreq.Body = http.NoBody
		}
		return hreq, nil
	}
	// An empty URL, filled in below, is what NewRequestWithContext would
	// parse out of http://<service><path>?<query> for such a target.
	hreq, err := http.NewRequestWithContext(ctx, req.GetMethod(), "", body)
	if err != nil {
		return nil, err
	}
	if body == nil {
		hreq.Body = http.NoBody
	}
	hreq.URL.Scheme, hreq.URL.Host, hreq.URL.Path, hreq.URL.RawQuery = "http", s.cfg.Service, path, query
	if hreq.URL.EscapedPath() != path { // as url.URL.setPath keeps it
		hreq.URL.RawPath = path
	}
	hreq.Host = s.cfg.Service
	return hreq, nil
}

// plainHost reports whether http.NewRequest takes service over unchanged as
// the host of http://<service>/.
func plainHost(service string) bool {
	r, err := http.NewRequest(http.MethodGet, "http://"+service+"/", nil)
	return err == nil && r.URL.Host == service && r.Host == service && r.URL.Path == "/" && r.URL.User == nil
}

// plainTarget reports whether url.Parse would take the path and query of
// http://host<path>?<query> over as they are: path starts with / and
// neither holds a control byte, a '#' (a fragment) or, in the path, a '?'
// or a '%' (an escape, which Parse decodes).
func plainTarget(path, query string) bool {
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?%") {
		return false
	}
	for _, p := range [...]string{path, query} {
		for i := range len(p) {
			if c := p[i]; c < 0x20 || c == 0x7f || c == '#' {
				return false
			}
		}
	}
	return true
}

// rules returns the catalog's rule accessor, or nil without a catalog.
func (s *Sidecar) rules() func() *routing.Table {
	if s.deps.Catalog == nil {
		return nil
	}
	return s.deps.Catalog.Rules
}

// replyStatus is the HTTP status a reply stands for, for metrics: the
// handler's, or the status the edge answers for a mesh error.
func replyStatus(r *wire.Reply) int {
	switch r.GetCode() {
	case wire.Code_CODE_OK:
		return int(r.GetStatus())
	case wire.Code_CODE_DEADLINE_EXCEEDED:
		return http.StatusGatewayTimeout
	case wire.Code_CODE_UNAVAILABLE, wire.Code_CODE_OVERLOADED:
		return http.StatusServiceUnavailable
	case wire.Code_CODE_BAD_REQUEST:
		return http.StatusBadRequest
	default:
		return http.StatusBadGateway
	}
}

// byHost sends requests for the named hosts to their handlers, the rest to
// fallback.
func byHost(hosts map[string]http.Handler, fallback http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := hosts[r.Host]; ok {
			h.ServeHTTP(w, r)
			return
		}
		fallback.ServeHTTP(w, r)
	})
}

// resolveHost names the service of a handler's outbound call: the host of
// http://<service>/path.
func resolveHost(r *http.Request) (string, bool) {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return h, h != ""
}
