// Package gateway turns HTTP requests into envelopes, sends them into the
// mesh and writes the answers back. The edge runs it for end users; every
// sidecar runs it on a unix socket for its handler's outbound calls.
package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/griddle-mesh/griddle/internal/admission"
	"github.com/griddle-mesh/griddle/internal/dispatch"
	"github.com/griddle-mesh/griddle/internal/logging"
	"github.com/griddle-mesh/griddle/internal/metrics"
	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/sample"
	"github.com/griddle-mesh/griddle/internal/trace"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// Dispatcher sends one envelope to some instance of its service. The
// envelope's DeadlineUnixNano bounds the call; ctx is the client's request
// context, which carries no deadline of its own and is cancelled when the
// client goes away. When the reply says more parts follow, the exchange
// carries them (see dispatch.Dispatcher.DoExchange).
type Dispatcher interface {
	DoExchange(ctx context.Context, req *wire.Request, pol dispatch.Policy) (*wire.Reply, *dispatch.Exchange, error)
}

var _ Dispatcher = (*dispatch.Dispatcher)(nil)

// Config configures a Gateway. The zero value of each limit selects its default.
type Config struct {
	// Resolve names the service a request is for; ok false answers 404.
	Resolve func(r *http.Request) (service string, ok bool)
	// Dispatcher sends envelopes; required.
	Dispatcher Dispatcher
	// Timeout bounds each request, retries included (0: 10s).
	Timeout time.Duration
	// MaxBodyBytes bounds request bodies, streamed or not; larger ones get
	// 413 (0: 1 GiB). At most 1 MiB of a body is held in memory.
	MaxBodyBytes int64
	// TrustMeshHeaders makes the gateway honour X-Griddle-Deadline,
	// X-Griddle-Request-Id and X-Griddle-Routing from the client. Only the
	// sidecar's socket for its own handler sets it; the edge strips them.
	TrustMeshHeaders bool
	// Logger receives one line per failed request, with its error id (nil: slog.Default()).
	Logger *slog.Logger
	// Admission, when set, limits the requests in flight per service; the
	// rest get a fast 503 with Retry-After. A request is admitted before
	// its body is read, and its slot is given back once the answer has
	// arrived, before a slow client reads it.
	Admission *admission.Fair
	// Bodies, when set, bounds the bytes of bodies sent whole (up to 1 MiB
	// each; longer ones stream in parts) held in memory at once; a body
	// that does not fit gets a 503.
	Bodies *admission.Bytes
	// Pins, when set, returns the version pins a request may carry (nil:
	// none); the edge honours them only from trusted sources. Without it
	// (and without TrustMeshHeaders) no pin is honoured.
	Pins func(r *http.Request) map[string]string
	// Metrics, when set, records every request.
	Metrics *metrics.Gateway
	// Rules returns the routing rules in force (nil: no rules; every
	// service then gets the default timeout and retry behaviour).
	Rules func() *routing.Table
	// TrustedProxies are the client addresses whose X-Forwarded-For,
	// -Proto and -Host are kept and added to (proxies in front of the
	// edge); any other client's are replaced by what the edge sees. Only
	// without TrustMeshHeaders.
	TrustedProxies []netip.Prefix
	// Tracer, when set, makes a span of each request (trace.Tracer.Request).
	Tracer *trace.Tracer
	// AccessLog, when set, gets a line per request (logging.LogAccess).
	AccessLog *slog.Logger
	// Sample, when set, records what the rules read of one request in
	// Sample's Every, for dry runs of proposed rules.
	Sample *sample.Sampler
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Resolve == nil:
		return errors.New("gateway: Resolve: required")
	case c.Dispatcher == nil:
		return errors.New("gateway: Dispatcher: required")
	case c.Timeout < 0:
		return fmt.Errorf("gateway: Timeout: %v is negative", c.Timeout)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("gateway: MaxBodyBytes: %d is negative", c.MaxBodyBytes)
	}
	return nil
}

// Gateway is an http.Handler that forwards requests into the mesh.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	ids     idSource
	bufs    sync.Pool // *bytes.Buffer for request bodies
	budgets sync.Map  // service → *retryBudget
}

// retryBudget is a service's retry budget and the policy it was made for.
// It outlives rule revisions that keep the same budget settings.
type retryBudget struct {
	ratio     string
	floor     int
	budget    *routing.Budget
	exhausted func()
}

// New validates cfg and returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 30
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger}
	if g.log == nil {
		g.log = slog.Default()
	}
	g.bufs.New = func() any { return new(bytes.Buffer) }
	g.ids.seed()
	return g, nil
}

// ServeHTTP forwards r and writes the answer. Every request gets an answer:
// the handler's, or a Griddle error with an id that is also logged.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	service, ok := g.cfg.Resolve(r)
	if !ok {
		status := g.fail(w, r, http.StatusNotFound, "no_route", "no service serves this path", nil)
		logging.LogAccess(r.Context(), g.cfg.AccessLog, r, logging.Access{Status: status, Duration: time.Since(start), ErrorID: w.Header().Get(wire.HeaderErrorID)})
		return
	}
	out := g.forward(w, r, service, start)
	if g.cfg.AccessLog != nil {
		logging.LogAccess(r.Context(), g.cfg.AccessLog, r, logging.Access{Service: service, Version: out.version, Experiment: out.experiment, Variant: out.variant,
			Status: out.status, Duration: time.Since(start), Retries: out.retries, RequestID: w.Header().Get(wire.HeaderRequestID), ErrorID: w.Header().Get(wire.HeaderErrorID)})
	}
	if m := g.cfg.Metrics; m != nil {
		m.Requests.WithLabelValues(service, out.version, out.experiment, out.variant, metrics.Code(out.status)).Inc()
		m.Duration.WithLabelValues(service, out.version, out.experiment, out.variant, metrics.Class(out.status)).Observe(time.Since(start).Seconds())
		if out.retries > 0 {
			m.Retries.WithLabelValues(service).Add(float64(out.retries))
		}
	}
}

// outcome is what ServeHTTP records of one forwarded request.
type outcome struct {
	status                       int
	version, experiment, variant string
	retries                      int
}

func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, service string, start time.Time) outcome {
	upgrade := r.Header["Upgrade"] != nil && r.ProtoMajor == 1
	whole := !upgrade && r.ContentLength >= 0 && r.ContentLength <= inlineBody
	if whole && r.ContentLength > g.cfg.MaxBodyBytes {
		return outcome{status: g.fail(w, r, http.StatusRequestEntityTooLarge, "body_too_large", "request body too large", nil)}
	}
	// The routing decision: version, timeout, retries, streams.
	var out outcome
	var svc *routing.Service
	if g.cfg.Rules != nil {
		svc = g.cfg.Rules().Service(service)
	}
	if upgrade && svc != nil && !svc.Upgrades() {
		return outcome{status: g.fail(w, r, http.StatusNotImplemented, "upgrade_refused", "this route does not allow protocol upgrades", nil)}
	}

	// Admission before the body is read: a refused request costs no more.
	var tok admission.Ticket
	admitted := false
	if g.cfg.Admission != nil {
		t, err := g.cfg.Admission.Acquire(r.Context(), service)
		if err != nil {
			if g.cfg.Metrics != nil {
				g.cfg.Metrics.Shed.WithLabelValues(service).Inc()
			}
			return outcome{status: g.shed(w)}
		}
		tok, admitted = t, true
	}
	// The slot is given back when the answer (or its head) has arrived,
	// not when a slow client has read it.
	release := func() {
		if admitted {
			admitted = false
			// A client that left says nothing of the mesh's latency.
			g.cfg.Admission.Release(tok, r.Context().Err() == nil)
		}
	}
	defer release()

	buf := g.bufs.Get().(*bytes.Buffer)
	defer g.putBuf(buf)
	buf.Reset()
	// body is what is left of the request's body to stream; unsized, that
	// it came whole though the client gave no length.
	var body io.Reader
	unsized := false
	// A client that sent "Expect: 100-continue" waits to be told to send
	// its body: it is told (by net/http, at the first read) once the
	// handler begins to read it.
	expect := r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Expect"), "100-continue")
	if expect {
		whole = false
	}
	if r.Body != nil && r.Body != http.NoBody && !upgrade { // net/http's server gives bodiless requests NoBody
		body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes)
		var err error
		if expect {
			// nothing read before the handler asks
		} else if whole {
			if b := g.cfg.Bodies; b != nil && r.ContentLength > 0 {
				if !b.TryAcquire(r.ContentLength) {
					return outcome{status: g.fail(w, r, http.StatusServiceUnavailable, "body_budget", "too many request bytes in flight: retry later", nil)}
				}
				defer b.Release(r.ContentLength)
			}
			_, err = buf.ReadFrom(body)
		} else {
			// The first part is what one read gives: a client that sends a
			// message and waits for the answer (a bidirectional stream)
			// must not wait for more.
			buf.Grow(partSize)
			p := buf.AvailableBuffer()[:partSize]
			var n int
			n, err = body.Read(p)
			buf.Write(p[:n])
			if err == io.EOF {
				err, whole = nil, true
				unsized = true
			} else if err == nil && r.ProtoMajor >= 2 {
				// An HTTP/2 client's body often ends with its first DATA
				// frame (a unary gRPC call): whole, it goes in one envelope.
				var ended bool
				body, ended = probeEnd(body)
				whole, unsized = ended, ended
			}
		}
		if err != nil {
			if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
				return outcome{status: g.fail(w, r, http.StatusRequestEntityTooLarge, "body_too_large", "request body too large", nil)}
			}
			return outcome{status: g.fail(w, r, http.StatusBadRequest, "bad_body", "request body could not be read", err)}
		}
	}

	deadline := start.Add(g.cfg.Timeout)
	req := wire.NewRequest(r, service, buf.Bytes())
	req.AcceptParts, req.Unsized = true, unsized
	if r.ProtoMajor >= 2 {
		req.ProtoMajor, req.ProtoMinor = int32(r.ProtoMajor), int32(r.ProtoMinor)
	}
	if cl := r.Header["Content-Length"]; cl != nil && (!whole || r.ContentLength == 0) {
		// The length the client gave, which the whole body cannot tell:
		// for a body that streams, or an empty one ("Content-Length: 0").
		req.Headers = append(req.Headers, &wire.Header{Name: "Content-Length", Values: cl})
	}
	if !whole {
		req.BodyFollows = true
	} else if len(r.Trailer) > 0 {
		req.Trailers = wire.EncodeTrailers(r.Trailer) // read with the whole body
	}
	if upgrade {
		req.Upgrade, req.LongLived = true, true
		req.Headers = append(req.Headers,
			&wire.Header{Name: "Connection", Values: []string{"Upgrade"}},
			&wire.Header{Name: "Upgrade", Values: r.Header["Upgrade"]})
	}
	var rc *wire.Routing
	if g.cfg.TrustMeshHeaders {
		if d, err := strconv.ParseInt(r.Header.Get(wire.HeaderDeadline), 10, 64); err == nil && d > 0 && d < deadline.UnixNano() {
			deadline = time.Unix(0, d)
		}
		req.Id = r.Header.Get(wire.HeaderRequestID)
		rc, _ = wire.DecodeRouting(r.Header.Get(wire.HeaderRouting)) // a garbled context routes as a fresh one
	} else {
		g.setForwarded(r, req)
		req.Headers = wire.StripMeshHeaders(req.Headers)
		if g.cfg.Pins != nil {
			if pins := g.cfg.Pins(r); len(pins) > 0 {
				rc = &wire.Routing{Pins: pins}
			}
		}
	}
	if req.Id == "" {
		req.Id = g.ids.next()
	}

	var rp *routing.RetryPolicy
	if svc != nil {
		if rc == nil { // the rules may add a sticky key or an experiment
			rc = &wire.Routing{}
		}
		d := svc.Decide(r, rc)
		req.Version, out.experiment, out.variant = d.Version, d.Experiment, d.Variant
		if t := svc.Timeout(); t > 0 && start.Add(t).Before(deadline) {
			deadline = start.Add(t)
		}
		rp = svc.Retry()
		longLived, idle := svc.LongLived()
		req.LongLived = req.LongLived || longLived
		req.IdleNanos = int64(idle)
	} else if v := rc.GetPins()[service]; v != "" {
		req.Version = v
	}
	if rc.GetStickyKey() != "" || len(rc.GetPins()) > 0 || len(rc.GetExperiments()) > 0 {
		req.Routing = rc
	}
	pol := g.policy(service, rp)
	if rp != nil && len(rp.GRPCMethods) > 0 && wire.IsGRPC(r.Header.Get("Content-Type")) && slices.Contains(rp.GRPCMethods, r.URL.Path) {
		pol.NonIdempotent = true // the rules say this method may be repeated
	}
	if !whole {
		pol.Attempts = 1 // the body streams from the client: it cannot be sent again
	}
	if g.cfg.Sample.Due() {
		g.cfg.Sample.Record(r, service, svc, rc, req.Version)
	}

	if v := r.Header["Grpc-Timeout"]; len(v) == 1 && wire.IsGRPC(r.Header.Get("Content-Type")) {
		// A gRPC call's own timeout becomes the mesh's deadline.
		if d, ok := wire.ParseGRPCTimeout(v[0]); ok && start.Add(d).Before(deadline) {
			deadline = start.Add(d)
			req.LongLived = false
		}
	}
	if req.LongLived {
		deadline = time.Time{}
	} else {
		req.DeadlineUnixNano = deadline.UnixNano()
	}
	req.Trace = traceOf(r)
	ctx := r.Context()
	if g.cfg.Tracer != nil {
		var sp trace.Span
		ctx, sp = g.cfg.Tracer.Request(ctx, g.cfg.TrustMeshHeaders, req)
		defer func() { sp.End(out.status) }()
	}

	// The dispatcher bounds the call by req's deadline; a context with
	// the same deadline would only add a timer per request.
	reply, x, err := g.cfg.Dispatcher.DoExchange(ctx, req, pol)
	out.version, out.retries = req.Version, max(int(req.Attempt)-1, 0)
	if out.version == "" { // no rules: any version served it; label it by the one that did
		out.version = metrics.ServedVersion(reply)
	}
	switch {
	case err != nil:
		release()
		out.status = g.failDispatch(w, r, err)
	case reply.GetCode() != wire.Code_CODE_OK:
		release()
		out.status = g.failCode(w, r, reply)
	case x != nil:
		out.status = g.stream(w, r, body, req, reply, x, deadline, release)
	default:
		release()
		w.Header().Set(wire.HeaderRequestID, req.Id)
		if err := reply.WriteHTTP(w); err != nil {
			g.log.Debug("writing reply", "service", service, "request", req.Id, "err", err)
		}
		out.status = reply.FigureStatus()
	}
	return out
}

// policy is the dispatch policy of one request to service under rp (nil:
// the defaults). Every service has a retry budget, rules or not, so that
// retries cannot multiply an outage; each request feeds it.
func (g *Gateway) policy(service string, rp *routing.RetryPolicy) dispatch.Policy {
	var ratio string
	var floor int
	if rp != nil {
		ratio, floor = rp.Budget, rp.MinPerSecond
	}
	v, ok := g.budgets.Load(service)
	b, _ := v.(*retryBudget)
	if !ok || b.ratio != ratio || b.floor != floor {
		b = &retryBudget{ratio: ratio, floor: floor}
		if rp != nil {
			b.budget = rp.NewBudget()
		} else {
			b.budget = (&routing.RetryPolicy{}).NewBudget()
		}
		if m := g.cfg.Metrics; m != nil {
			c := m.BudgetExhausted.WithLabelValues(service)
			b.exhausted = c.Inc
		}
		g.budgets.Store(service, b)
	}
	b.budget.Request()
	pol := dispatch.Policy{Budget: b.budget, OnBudgetExhausted: b.exhausted}
	if rp != nil {
		pol.Attempts = rp.Attempts
		pol.PerTry = time.Duration(rp.PerTry)
		pol.NonIdempotent = rp.NonIdempotent
		for _, on := range rp.On {
			switch on {
			case "deadline":
				pol.OnDeadline = true
			case "5xx":
				pol.On5xx = true
			case "unavailable":
				pol.OnUnavailable = true
			}
		}
	}
	return pol
}

// shed answers a request refused for load: at once, without logging each
// one (under overload that would cost more than the answer).
func (g *Gateway) shed(w http.ResponseWriter) int {
	h := w.Header()
	h.Set(wire.HeaderErrorID, g.ids.next())
	h.Set("Retry-After", "1")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(shedBody)
	return http.StatusServiceUnavailable
}

var shedBody = []byte(`{"error":"overloaded: retry later","code":"shed"}` + "\n")

func (g *Gateway) putBuf(b *bytes.Buffer) {
	if b.Cap() <= 1<<20 { // keep big buffers from pinning memory
		g.bufs.Put(b)
	}
}

func (g *Gateway) failDispatch(w http.ResponseWriter, r *http.Request, err error) int {
	var code wire.Code
	switch {
	case errors.Is(err, context.Canceled):
		return g.fail(w, r, 499, "canceled", "client went away", err)
	case errors.Is(err, dispatch.ErrNoInstance):
		code = wire.Code_CODE_NO_INSTANCE
	case errors.Is(err, dispatch.ErrDeadline), errors.Is(err, context.DeadlineExceeded):
		code = wire.Code_CODE_DEADLINE_EXCEEDED
	case errors.Is(err, dispatch.ErrBadRequest):
		code = wire.Code_CODE_BAD_REQUEST
	default:
		code = wire.Code_CODE_UNAVAILABLE
	}
	return g.fail(w, r, code.HTTPStatus(), code.ErrorCode(), errorText[code.ErrorCode()], err)
}

func (g *Gateway) failCode(w http.ResponseWriter, r *http.Request, reply *wire.Reply) int {
	err := fmt.Errorf("%s from %s: %s", reply.GetCode(), reply.GetServedBy(), reply.GetMessage())
	code := reply.GetCode()
	return g.fail(w, r, code.HTTPStatus(), code.ErrorCode(), errorText[code.ErrorCode()], err)
}

// errorText is what clients read for each error code.
var errorText = map[string]string{
	"deadline_exceeded": "deadline exceeded",
	"unavailable":       "service unavailable",
	"no_instance":       "no healthy instance",
	"bad_request":       "the request cannot be forwarded",
	"bad_gateway":       "the service failed to answer",
}

// errorBody is what clients see of a Griddle error: never Go error text.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	ID    string `json:"id"`
}

// fail answers with a Griddle error and logs it under a fresh id. cause is
// logged, never sent.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string, cause error) int {
	id := g.ids.next()
	level := slog.LevelWarn
	if status < 500 {
		level = slog.LevelInfo
	}
	g.log.Log(r.Context(), level, "request failed", "error_id", id, "status", status, "code", code,
		"method", r.Method, "path", r.URL.Path, "err", cause)
	h := w.Header()
	h.Set(wire.HeaderErrorID, id)
	if wire.IsGRPC(r.Header.Get("Content-Type")) {
		// A gRPC client reads a status, not a page: a trailers-only answer.
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(wire.HTTPGRPCStatus(status)))
		h.Set("Grpc-Message", code+": "+msg+" (error "+id+")")
		w.WriteHeader(http.StatusOK)
		return status
	}
	h.Set("Content-Type", "application/json")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: msg, Code: code, ID: id})
	return status
}

// setForwarded sets the forwarding headers of the envelope req of a
// client's request r: X-Forwarded-For (the client's address, after those
// of trusted proxies in front), X-Forwarded-Proto, X-Forwarded-Host and
// Forwarded (RFC 7239). A client that is not a trusted proxy cannot put
// an address of its choosing in them.
func (g *Gateway) setForwarded(r *http.Request, req *wire.Request) {
	ip := r.RemoteAddr
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	trusted := false
	if len(g.cfg.TrustedProxies) > 0 {
		if a, err := netip.ParseAddr(ip); err == nil {
			trusted = slices.ContainsFunc(g.cfg.TrustedProxies, func(p netip.Prefix) bool { return p.Contains(a.Unmap()) })
		}
	}
	xff, xfp, xfh, fwd := ip, proto, r.Host, ""
	if trusted {
		if prev := strings.Join(r.Header.Values(headerXFF), ", "); prev != "" {
			xff = prev + ", " + ip
		}
		if v := r.Header.Get(headerXFProto); v != "" {
			xfp = v
		}
		if v := r.Header.Get(headerXFHost); v != "" {
			xfh = v
		}
		fwd = strings.Join(r.Header.Values(headerForwarded), ", ")
	}
	// Forwarded in one string: [earlier, ]for=NODE;proto=P[;host="H"].
	var sb strings.Builder
	sb.Grow(len(fwd) + len(ip) + len(r.Host) + 32)
	if fwd != "" {
		sb.WriteString(fwd)
		sb.WriteString(", ")
	}
	sb.WriteString("for=")
	if strings.Contains(ip, ":") {
		sb.WriteString(`"[` + ip + `]"`)
	} else {
		sb.WriteString(ip)
	}
	sb.WriteString(";proto=")
	sb.WriteString(proto)
	if r.Host != "" {
		sb.WriteString(`;host="`)
		sb.WriteString(strings.ReplaceAll(r.Host, `"`, ""))
		sb.WriteByte('"')
	}
	// The four headers and their values in one allocation; the envelope's
	// Headers has room for them (wire.EncodeHeader).
	f := &struct {
		hs [4]wire.Header
		vs [4]string
	}{vs: [4]string{xff, xfp, xfh, sb.String()}}
	hs := f.hs[:]
	for i, name := range [...]string{headerXFF, headerXFProto, headerXFHost, headerForwarded} {
		hs[i] = wire.Header{Name: name, Values: f.vs[i : i+1 : i+1]}
	}
	kept := req.Headers[:0]
	for _, h := range req.Headers {
		switch h.GetName() {
		case headerXFF, headerXFProto, headerXFHost, headerForwarded:
			continue
		}
		kept = append(kept, h)
	}
	req.Headers = append(kept, &hs[0], &hs[1], &hs[2], &hs[3])
}

// The forwarding headers the edge sets.
const (
	headerXFF       = "X-Forwarded-For"
	headerXFProto   = "X-Forwarded-Proto"
	headerXFHost    = "X-Forwarded-Host"
	headerForwarded = "Forwarded"
)

func traceOf(r *http.Request) *wire.Trace {
	tp := r.Header.Get(wire.HeaderTraceparent)
	if tp == "" {
		return nil
	}
	return &wire.Trace{Traceparent: tp, Tracestate: r.Header.Get(wire.HeaderTracestate)}
}

// idSource hands out ids for requests and errors: 16 hex digits, unique
// within the process and, with a random starting point, in practice across
// processes. Ids are names, not secrets: they are sequential.
// The zero idSource counts from 0; seed it before use.
type idSource struct {
	start uint64        // random, set by seed
	n     atomic.Uint64 // ids handed out
}

// seed draws the starting point; it must run before next is first called.
func (s *idSource) seed() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	s.start = binary.LittleEndian.Uint64(b[:])
}

// next returns a fresh id.
func (s *idSource) next() string {
	const digits = "0123456789abcdef"
	v := s.start + s.n.Add(1)
	var b [16]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}
