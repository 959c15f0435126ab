// Package sidecar is the agent that runs beside each instance of a service:
// it receives envelopes on a mangos REP socket (package reqrep's), hands them to the team's
// handler process over the hop (package hop: multiplexed frames on shared-memory
// pipes offered on a unix socket), registers the instance in etcd,
// and carries the handler's own calls to other services into the mesh.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.nanomsg.org/mangos/v3"
	_ "go.nanomsg.org/mangos/v3/transport/inproc" // registers inproc://
	_ "go.nanomsg.org/mangos/v3/transport/ipc"    // registers ipc://
	_ "go.nanomsg.org/mangos/v3/transport/tcp"    // registers tcp://
	_ "go.nanomsg.org/mangos/v3/transport/tlstcp" // registers tls+tcp://
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/gateway"
	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/metrics"
	"github.com/griddle-mesh/griddle/internal/pluginhost"
	"github.com/griddle-mesh/griddle/internal/pluginproto"
	"github.com/griddle-mesh/griddle/internal/reqrep"
	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/internal/trace"
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

	host      atomic.Pointer[pluginhost.Host]
	reg       *prometheus.Registry
	metrics   *metrics.Sidecar
	requests  *prometheus.CounterVec // metrics.Requests of this service and version, by code
	duration  [6]prometheus.Observer // by status class (status/100)
	inflight  atomic.Int64
	draining  atomic.Bool
	running   running       // the requests in the handler, by id, for cancels
	exchanges exchanges     // the requests served in parts, by id
	slots     chan struct{} // one per request in the handler answered from the reader: at most Concurrency
	slow      chan struct{} // one per request served on a goroutine of its own (waits, bodies that follow): at most Concurrency
	workers   sync.WaitGroup
	bound     atomic.Pointer[string]
	admin     atomic.Pointer[string] // the admin address served on, once Run serves it
	ready     chan struct{}

	storeLink reachability // the store's link, when it can tell (nil: it cannot fail apart)

	eventMetrics *eventMetrics          // the event log's figures (events.go)
	callers      callers                // who is on each connection (authz.go)
	authz        *prometheus.CounterVec // the authorization policy's decisions
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
	// Tracer, when set, makes spans of the requests the sidecar serves and
	// of its handler's outbound calls (nil: none).
	Tracer *trace.Tracer
}

// reachability is a store that tells whether its server answers
// (storehttp.Client); an embedded store has no link to lose.
type reachability interface{ Reachable() bool }

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
	s.eventMetrics = newEventMetrics(s.reg)
	// Service and version never change: bind them once, not per request.
	s.requests = s.metrics.Requests.MustCurryWith(prometheus.Labels{"service": cfg.Service, "version": cfg.Version})
	for st := range s.duration {
		s.duration[st] = s.metrics.Duration.WithLabelValues(cfg.Service, cfg.Version, metrics.Class(st*100))
	}
	s.authz = newAuthzMetric(s.reg)
	s.storeLink, _ = deps.Store.(reachability)
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

// AdminAddress returns the host:port the admin endpoints are served on
// once Run has started them, or "" (none, or not yet).
func (s *Sidecar) AdminAddress() string {
	if a := s.admin.Load(); a != nil {
		return *a
	}
	return ""
}

// Run starts the handler, serves until ctx is done, then drains:
// deregisters, lets edges notice, finishes in-flight work, and stops the
// handler.
func (s *Sidecar) Run(ctx context.Context) error {
	var wg sync.WaitGroup // the goroutines Run starts besides the workers
	defer wg.Wait()

	mesh, storeSrv, pub, stopMesh, err := s.meshHandler()
	if err != nil {
		return err
	}
	defer stopMesh()

	hcfg := pluginhost.Config{
		Path:    s.cfg.Plugin,
		Args:    s.cfg.PluginArgs,
		Mesh:    mesh,
		Env:     s.handlerEnv(),
		PassEnv: s.cfg.HandlerEnv,
		Logger:  s.log,

		PlainSocket: s.cfg.HandlerPlainSocket,
	}
	if storeSrv != nil {
		hcfg.Unary, hcfg.Quick = storeSrv.Op, storeSrv.Quick
	}
	host, err := pluginhost.New(hcfg)
	if err != nil {
		return fmt.Errorf("sidecar: --plugin: %w", err)
	}
	if err := host.Start(ctx); err != nil {
		return fmt.Errorf("sidecar: starting handler: %w", err)
	}
	defer host.Close()
	s.host.Store(host)
	subs := s.subscriptions(host)

	s.slots = make(chan struct{}, s.cfg.Concurrency)
	s.slow = make(chan struct{}, s.cfg.Concurrency)
	defer s.workers.Wait() // after sock.Close, which the drain does first
	sock, err := s.listen()
	if err != nil {
		return err
	}
	defer sock.Close()

	admin, stopAdmin := s.serveAdmin(&wg)
	defer stopAdmin()
	s.admin.Store(&admin)
	reg, err := s.register(ctx, pub, admin)
	if err != nil {
		sock.Close()
		return err
	}
	bctx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	switch {
	case len(subs) > 0 && s.deps.Store == nil:
		s.log.Error("the handler subscribes to events, but this sidecar has no store (--store): nothing will be delivered", "subscriptions", len(subs))
	case len(subs) > 0:
		wg.Go(func() { s.subscribe(bctx, s.deps.Store, subs) })
	}
	if len(s.cfg.Retention) > 0 && s.deps.Store != nil {
		wg.Go(func() { s.retain(bctx, s.deps.Store) })
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

// meshHandler is what serves the handler's own calls into the mesh, which
// arrive on its connections: outbound calls, and, with a store, the store
// (storeSrv, also for its unary calls: one-key reads) and publishing. stop
// closes what it opened.
func (s *Sidecar) meshHandler() (h http.Handler, storeSrv *storehttp.Server, pub *events.Publisher, stop func(), err error) {
	gw, err := gateway.New(gateway.Config{
		Resolve:          resolveHost,
		Dispatcher:       s.deps.Dispatcher,
		Timeout:          s.cfg.OutboundTimeout,
		MaxBodyBytes:     int64(s.cfg.MaxBodyBytes),
		TrustMeshHeaders: true,
		Logger:           s.log,
		Rules:            s.rules(),
		Metrics:          metrics.NewOutbound(s.reg, s.cfg.Service),
		Tracer:           s.deps.Tracer,
	})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	h = gw
	var closers []func() error
	stop = func() {
		for _, c := range slices.Backward(closers) {
			_ = c()
		}
	}
	if s.deps.Store != nil {
		own, err := s.deps.Store.Space(s.cfg.Service)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("sidecar: store: %w", err)
		}
		pub, err = events.NewPublisher(events.PublisherConfig{Name: s.cfg.Service, Log: own, Listen: s.cfg.EventsListen, TLS: s.cfg.TLS, Logger: s.log})
		if err != nil {
			stop()
			return nil, nil, nil, nil, fmt.Errorf("sidecar: --events-listen: %w", err)
		}
		closers = append(closers, pub.Close)
		// Events a handler appends in its transactions are announced as the
		// transaction commits, without a call of its own.
		storeSrv = storehttp.NewServer(s.deps.Store, storehttp.WithSpace(s.cfg.Service), storehttp.WithLogger(s.log),
			storehttp.WithCommitted(pub.AnnounceCommitted()))
		closers = append(closers, storeSrv.Close)
		stats := func(f func(storehttp.Stats) uint64) func() uint64 {
			return func() uint64 { return f(storeSrv.Stats()) }
		}
		metrics.RegisterStore(s.reg, metrics.StoreCounters{
			Commits:        stats(func(st storehttp.Stats) uint64 { return st.Commits }),
			Retries:        stats(func(st storehttp.Stats) uint64 { return st.Retries }),
			Stale:          stats(func(st storehttp.Stats) uint64 { return st.Stale }),
			LogRetries:     stats(func(st storehttp.Stats) uint64 { return st.LogRetries }),
			PublishRetries: pub.Retries,
		})
		h = byHost(map[string]http.Handler{
			pluginstore.Host:   storeSrv,
			plugins.EventsHost: events.Handler(pub, s.log),
		}, gw)
	}
	return tunnels(h, s.log), storeSrv, pub, stop, nil
}

// tunnels serves, beside next, the handler's tunnels (wire.UpgradeTunnel):
// connections over which it speaks HTTP/2 to the mesh, as a gRPC client
// does (plugins.MeshAPI.DialGRPC). Each request on one is served by next.
func tunnels(next http.Handler, log *slog.Logger) http.Handler {
	h2 := &http2.Server{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != wire.UpgradeTunnel {
			next.ServeHTTP(w, r)
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			log.Warn("a tunnel from the handler cannot be taken over", "err", err)
			http.Error(w, "tunnel refused", http.StatusBadRequest)
			return
		}
		// ServeConn returns when the handler closes the tunnel.
		h2.ServeConn(conn, &http2.ServeConnOpts{Handler: next, BaseConfig: &http.Server{ReadHeaderTimeout: 10 * time.Second}})
	})
}

// listen opens the REP socket on --listen, serving with s.serve, and
// records the bound address.
func (s *Sidecar) listen() (*reqrep.Rep, error) {
	sock := reqrep.NewRep(s.serve)
	// Room for the body and the envelope around it. It must be set on the
	// socket: a listener's own option is overwritten by the socket's.
	if err := sock.SetOption(mangos.OptionMaxRecvSize, s.cfg.MaxBodyBytes+1<<20); err != nil {
		sock.Close()
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	s.trackCallers(sock)
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

// register puts the instance in etcd, with its admin address (admin, ""
// for none), and its service's HTTP exposure.
func (s *Sidecar) register(ctx context.Context, pub *events.Publisher, admin string) (*discovery.Registration, error) {
	in := discovery.Instance{ID: s.cfg.ID, Service: s.cfg.Service, Version: s.cfg.Version, Address: s.cfg.Advertise,
		Admin: admin, Started: time.Now().UTC()}
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
		if err := reg.ClaimExposure(ctx, s.cfg.Prefix, exp); errors.Is(err, discovery.ErrPathClaimed) {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = reg.Close(cctx)
			cancel()
			return nil, fmt.Errorf("sidecar: --http-prefix: %w", err)
		} else if err != nil {
			s.log.Warn("publishing HTTP exposure failed; the edge may not route to this service", "err", err)
		}
	}
	return reg, nil
}

// serveAdmin serves /healthz, /readyz, /status, /metrics and pprof on
// --admin, if set (port 0: any free one), and returns the address it
// serves on ("" for none); a listener that fails is logged, not fatal.
func (s *Sidecar) serveAdmin(wg *sync.WaitGroup) (addr string, stop func()) {
	if s.cfg.Admin == "" {
		return "", func() {}
	}
	ln, err := net.Listen("tcp", s.cfg.Admin)
	if err != nil {
		s.log.Error("admin listener failed", "admin", s.cfg.Admin, "err", err)
		return "", func() {}
	}
	srv := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	wg.Go(func() { _ = srv.Serve(ln) })
	return ln.Addr().String(), func() { _ = srv.Close() }
}

// drain deregisters, gives edges DrainGrace to notice, waits (up to
// DrainTimeout) for in-flight work, then closes the socket.
func (s *Sidecar) drain(ctx context.Context, reg *discovery.Registration, sock *reqrep.Rep) {
	s.log.Info("draining")
	s.draining.Store(true)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTimeout)
	defer cancel()
	if err := reg.Close(dctx); err != nil {
		s.log.Warn("deregistering failed; the lease will expire", "err", err)
	}
	time.Sleep(s.cfg.DrainGrace)
	s.exchanges.drain() // event streams and upgrades end now; the rest may finish
	for s.inflight.Load() > 0 && dctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.inflight.Load(); n > 0 {
		s.log.Warn("drain timeout: abandoning in-flight requests", "in_flight", n)
	}
	sock.Close()
	s.log.Info("stopped")
}

// serve takes one request, on the reader of the connection it came on
// (reqrep.Handler), and answers through r. A request whose body is whole
// goes to the handler from here and is answered from the handler
// connection's reader (startUnary); a cancel is done here; the rest, which
// may wait (parts, bodies that follow, upgrades), runs on a goroutine of
// its own. The envelope goes to the handler as it came, the handler's
// answer back with this instance's name and version added: neither is
// decoded whole.
func (s *Sidecar) serve(msg *mangos.Message, r reqrep.Replier) {
	s.inflight.Add(1)
	s.metrics.InFlight.Inc()
	start := time.Now()
	head, err := wire.PeekRequest(msg.Body)
	allowed := s.authorized(msg.Pipe)
	switch {
	case allowed && err == nil && head.Part != wire.Part_PART_NONE:
		// A part may wait long (a PULL for the handler to write, a DATA
		// for it to read), for parts that come on this same connection:
		// it takes no slot.
		s.workers.Go(func() {
			msg.Body = append(msg.Body[:0], s.part(head, msg.Body)...)
			if err := r.Reply(msg); err != nil {
				s.log.Debug("sending reply failed", "err", err)
			}
			s.metrics.InFlight.Dec()
			s.inflight.Add(-1)
		})
	case allowed && err == nil && !head.Cancel && !head.BodyFollows && !head.Upgrade:
		s.startUnary(r, msg, head, start)
	case !allowed:
		reply, status := s.forbidden(msg.Body)
		s.reply(r, msg, reply, status, start)
	case err != nil || head.Cancel:
		reply, status := s.handle(head, err, msg.Body, start.Add(s.cfg.ClockOffset), nil)
		s.reply(r, msg, reply, status, start)
	default:
		s.workers.Go(func() {
			s.slow <- struct{}{}
			defer func() { <-s.slow }()
			reply, status := s.handle(head, nil, msg.Body, start.Add(s.cfg.ClockOffset), make(cancelChan))
			s.reply(r, msg, reply, status, start)
		})
	}
}

// reply sends the marshalled reply to the request msg, which arrived at
// start, through r, and counts it; a nil reply (work past its deadline) is
// dropped.
func (s *Sidecar) reply(r reqrep.Replier, msg *mangos.Message, reply []byte, status int, start time.Time) {
	s.metrics.InFlight.Dec()
	defer s.inflight.Add(-1)
	if reply == nil { // past its deadline: nobody waits for the answer
		msg.Free()
		s.metrics.Dropped.Inc()
		return
	}
	if status != 0 { // 0: a cancel, not a request
		s.requests.WithLabelValues(metrics.Code(status)).Inc()
		s.duration[min(max(status/100, 0), 5)].Observe(time.Since(start).Seconds())
	}
	msg.Body = append(msg.Body[:0], reply...)
	if err := r.Reply(msg); err != nil {
		s.log.Debug("sending reply failed", "err", err)
	}
}

// unary is a request whose whole answer goes back from the handler
// connection's reader (startUnary): no goroutine waits for it.
type unary struct {
	s       *Sidecar
	r       reqrep.Replier
	msg     *mangos.Message
	head    wire.Head // of msg.Body, which stays untouched until the reply
	key     runKey    // in s.running, for a request with an id, once it is sent
	start   time.Time
	dl      time.Time // the deadline on the clock of now (ClockOffset)
	wait    time.Time // the same on this process's clock
	spans   trace.Hop
	pending hop.Pending // in this allocation
}

// startUnary sends an envelope whose body is whole to the handler; its
// reply goes out through r from the handler connection's reader (an answer
// in parts, where the edge accepts them, goes on as an exchange from its
// head), or at once for a request past its deadline or a handler that
// cannot be reached.
func (s *Sidecar) startUnary(r reqrep.Replier, msg *mangos.Message, head wire.Head, start time.Time) {
	now := start.Add(s.cfg.ClockOffset)
	deadline := s.deadline(head, now)
	if !deadline.After(now) {
		s.reply(r, msg, nil, 0, start)
		return
	}
	u := &unary{s: s, r: r, msg: msg, head: head, start: start, dl: deadline, wait: time.Now().Add(deadline.Sub(now))}
	body := wire.AppendDeadline(msg.Body, deadline, now)
	body, u.spans = s.deps.Tracer.Hop(body, s.cfg.Service, s.cfg.Version)
	s.slots <- struct{}{} // given back by ended
	var err error
	if head.AcceptParts {
		err = s.host.Load().GoParts(&u.pending, u.wait, u)
	} else {
		err = s.host.Load().Go(&u.pending, u.wait, s.cfg.MaxBodyBytes, u)
	}
	if err == nil {
		if len(u.head.ID) > 0 {
			u.key = s.running.add(u.head.ID, u)
		}
		err = u.pending.Start(body)
	}
	if err != nil {
		s.ended(u, nil, err)
		reply, status := s.hopFailure(u.head.ID, err)
		s.reply(r, msg, reply, status, start)
	}
}

// Cancel stops the request in the handler: a cancel from the edge.
func (u *unary) Cancel() { u.pending.Cancel() }

// Whole takes the handler's whole answer (or why there is none): hop.Whole.
func (u *unary) Whole(answer []byte, err error) {
	u.s.ended(u, answer, err)
	switch {
	case err == nil && !time.Now().Before(u.wait):
		// An answer at or past the deadline (a handler that answers when
		// its context expires) is a deadline missed, whichever timer won.
		u.finish(u.s.codeReply(u.head.ID, wire.Code_CODE_DEADLINE_EXCEEDED, "answered past the deadline"))
	case err != nil:
		u.finish(u.s.hopFailure(u.head.ID, err))
	default:
		u.finish(u.s.answer(u.head.ID, answer))
	}
}

// First takes the first frame of an answer that may come in parts (or
// why there is none): hop.First.
func (u *unary) First(f hop.Frame, err error) {
	u.s.ended(u, f.Payload, err)
	if err != nil {
		u.finish(u.s.hopFailure(u.head.ID, err))
		return
	}
	if f.End {
		u.reply(f)
		return
	}
	// The head of an answer in parts: the exchange starts off the reader,
	// which meanwhile reads on what follows the head (it goes with the
	// head when it has arrived: see Sidecar.head).
	go u.reply(f)
}

// reply answers with the answer's first frame f (Sidecar.first). It passes
// no envelope: that serves only upgrades, which never come this way.
func (u *unary) reply(f hop.Frame) {
	u.finish(u.s.first(u.head, u.pending.Stream(), f, u.dl, u.wait, nil))
}

// ended records that the handler's part of u is over: its answer (or its
// head) has come, or it failed.
func (s *Sidecar) ended(u *unary, answer []byte, err error) {
	if len(u.head.ID) > 0 { // a no-op when it never went in
		s.running.remove(u.key, u)
	}
	<-s.slots
	u.spans.End(answer, err)
}

// finish replies to the request.
func (u *unary) finish(reply []byte, status int) {
	u.s.reply(u.r, u.msg, reply, status, u.start)
}

// deadline is when the request with head, received at now, must be
// answered by. The budget left when the edge sent it counts from now, on
// this machine's clock (wire.ReceivedDeadline). A long-lived request has
// none: its answer's head may take up to the idle timeout.
func (s *Sidecar) deadline(head wire.Head, now time.Time) time.Time {
	deadline, ok := wire.ReceivedDeadline(head.Deadline, head.Timeout, now)
	switch {
	case head.LongLived:
		return now.Add(head.IdleTimeout())
	case !ok:
		return now.Add(s.cfg.OutboundTimeout)
	}
	return deadline
}

// handle runs one marshalled envelope, received at now, through the handler
// and returns the marshalled reply and the status it stands for. It
// returns nil for work whose deadline has already passed. A cancel for the
// request closes cancel, which must be open.
func (s *Sidecar) handle(head wire.Head, err error, body []byte, now time.Time, cancel cancelChan) ([]byte, int) {
	if err != nil {
		return s.codeReply(nil, wire.Code_CODE_BAD_REQUEST, "undecodable envelope")
	}
	id := head.ID
	if head.Cancel { // the caller went away: stop the request in the handler
		s.running.cancel(id)
		s.exchanges.cancel(id)
		b, _ := s.codeReply(id, wire.Code_CODE_OK, "")
		return b, 0
	}
	deadline := s.deadline(head, now)
	if !deadline.After(now) {
		return nil, 0
	}
	body = wire.AppendDeadline(body, deadline, now)
	var canceled <-chan struct{}
	if len(id) > 0 {
		key := s.running.add(id, cancel)
		defer s.running.remove(key, cancel)
		canceled = cancel
	}
	// The wait is timed on the process's own clock, whatever now says.
	wait := time.Now().Add(deadline.Sub(now))
	body, spans := s.deps.Tracer.Hop(body, s.cfg.Service, s.cfg.Version)
	if head.BodyFollows || head.AcceptParts || head.Upgrade {
		reply, status := s.openParts(head, body, deadline, wait, canceled)
		spans.End(reply, nil) // an answer in parts: at its head
		return reply, status
	}
	reply, err := s.host.Load().Do(body, wait, s.cfg.MaxBodyBytes, canceled)
	spans.End(reply, err)
	if err == nil && !time.Now().Before(wait) {
		// An answer at or past the deadline (a handler that answers when
		// its context expires) is a deadline missed, whichever timer won.
		return s.codeReply(id, wire.Code_CODE_DEADLINE_EXCEEDED, "answered past the deadline")
	}
	if err != nil {
		return s.hopFailure(id, err)
	}
	return s.answer(id, reply)
}

// codeReply is a marshalled reply with a mesh error instead of an answer.
func (s *Sidecar) codeReply(id []byte, code wire.Code, msg string) ([]byte, int) {
	b, _ := proto.Marshal(&wire.Reply{Id: string(id), Code: code, Message: msg, ServedBy: s.cfg.ID})
	return b, code.HTTPStatus()
}

// rules returns the catalog's rule accessor, or nil without a catalog.
func (s *Sidecar) rules() func() *routing.Table {
	if s.deps.Catalog == nil {
		return nil
	}
	return s.deps.Catalog.Rules
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

// running are the requests in the handler that a cancel from the edge can
// reach, by request id.
type running struct {
	mu sync.Mutex
	m  map[runKey]canceler
}

// runKey is a request id as a key of running: an id of up to 32 bytes
// (the edge's have 16) is kept in the key itself, so that keying a request
// costs no allocation; a longer one as a string.
type runKey struct {
	n    uint8
	b    [32]byte
	long string
}

func keyOf(id []byte) runKey {
	var k runKey
	if len(id) <= len(k.b) {
		k.n = uint8(len(id))
		copy(k.b[:], id)
	} else {
		k.long = string(id)
	}
	return k
}

// canceler is a request in the handler that a cancel from the edge stops.
type canceler interface{ Cancel() }

// cancelChan is a request served on a goroutine of its own: a cancel closes it.
type cancelChan chan struct{}

func (c cancelChan) Cancel() { close(c) }

// add registers the request id, whose cancel c stops, and returns its
// key. A retry that arrives while an earlier try of the same request still
// runs here takes its place.
func (r *running) add(id []byte, c canceler) runKey {
	key := keyOf(id)
	r.mu.Lock()
	if r.m == nil {
		r.m = make(map[runKey]canceler)
	}
	r.m[key] = c
	r.mu.Unlock()
	return key
}

// remove forgets the request, unless a later try has taken its place.
func (r *running) remove(key runKey, c canceler) {
	r.mu.Lock()
	if r.m[key] == c {
		delete(r.m, key)
	}
	r.mu.Unlock()
}

// cancel stops the request with id, if it runs here. A worker's channel
// is closed under the lock, so a worker that has removed its request since
// finds it closed or untouched, never closed later for its next one.
func (r *running) cancel(id []byte) {
	key := keyOf(id)
	r.mu.Lock()
	c := r.m[key]
	delete(r.m, key)
	if ch, ok := c.(cancelChan); ok {
		close(ch)
		c = nil
	}
	r.mu.Unlock()
	if c != nil {
		c.Cancel() // outside the lock: it ends the request, which removes itself
	}
}

// handlerEnv is what the sidecar adds to its handler's environment.
func (s *Sidecar) handlerEnv() []string {
	env := []string{pluginproto.EnvService + "=" + s.cfg.Service}
	if s.cfg.HandlerProcs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(s.cfg.HandlerProcs))
	}
	return env
}
