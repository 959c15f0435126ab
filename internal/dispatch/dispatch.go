package dispatch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.nanomsg.org/mangos/v3"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/trace"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// Errors returned by Do. Every error from Do wraps exactly one of them,
// except when the caller's ctx is canceled: then it wraps ctx's error
// (context.Canceled or a cancel cause) instead.
var (
	// ErrNoInstance: no instance of the service (and version) is known.
	ErrNoInstance = errors.New("dispatch: no instance")
	// ErrUnavailable: no attempt produced a reply, or the request may have
	// reached a handler that then vanished and it is not safe to repeat.
	ErrUnavailable = errors.New("dispatch: unavailable")
	// ErrDeadline: the request's deadline passed before a reply came.
	ErrDeadline = errors.New("dispatch: deadline exceeded")
	// ErrClosed: the Dispatcher is closed.
	ErrClosed = errors.New("dispatch: closed")
	// ErrBadRequest: the request cannot be encoded (for example a string
	// field that is not valid UTF-8).
	ErrBadRequest = errors.New("dispatch: bad request")
	// ErrInvalidConfig is wrapped by every error from Config.Validate.
	ErrInvalidConfig = errors.New("dispatch: invalid config")
	// ErrNoTLS explains, beside ErrUnavailable, a tls+tcp:// instance this
	// Dispatcher has no TLS configuration for.
	ErrNoTLS = errors.New("dispatch: tls+tcp instance but no TLS configuration")
)

// Endpoints is where a Dispatcher learns the instances of a service; the
// discovery catalog implements it. Instances must be safe for concurrent use
// and fast (it is called on every request); the returned slice is shared and
// must not be modified by either side after it is returned.
type Endpoints interface {
	Instances(service string) []discovery.Instance
}

// Defaults applied by New for zero Config fields.
const (
	DefaultMaxAttempts    = 3
	DefaultEjectAfter     = 3
	DefaultEjectFor       = 5 * time.Second
	DefaultTimeout        = 30 * time.Second
	DefaultMaxReplyBytes  = 9 << 20 // an 8 MiB body and its envelope
	maxEjectionMultiplier = 8
)

// Timings of the sockets and of the sweeper; fixed because no caller has
// needed to tune them.
const (
	reconnectTime    = 50 * time.Millisecond
	maxReconnectTime = time.Second
	// maxSendWait bounds how long one attempt waits for a free pipe before
	// it gives up on that instance and tries another.
	maxSendWait = 250 * time.Millisecond
	// connectGrace is how long after a socket is created requests wait for
	// its first connection instead of failing fast.
	connectGrace = 200 * time.Millisecond
	// sweepEvery is how often sockets of addresses that left the catalog
	// are closed.
	sweepEvery = 10 * time.Second
	// contextPoolSize bounds the idle mangos contexts kept per socket.
	contextPoolSize = 128
	// An instance with requests outstanding that has answered nothing for
	// hungFactor times its moving average answer time, and at least
	// minHung (noAnswerHung before its first answer), is hung: it is
	// ejected when next picked, so that only the requests already inside
	// it wait for their deadline.
	hungFactor = 16
	// trialEvery is how often an ejected instance is sent one request
	// (idempotent requests only) to show it is back before its ejection
	// ends; an answer from its handler ends the ejection.
	trialEvery = 500 * time.Millisecond
	// cancelWait bounds sending a cancel and waiting for its answer.
	cancelWait   = 250 * time.Millisecond
	minHung      = 500 * time.Millisecond
	noAnswerHung = time.Second
)

// Config configures a Dispatcher. Zero values of optional fields select the
// documented defaults.
type Config struct {
	// Endpoints supplies instances. Required.
	Endpoints Endpoints
	// Logger receives ejection events. Nil: slog.Default().
	Logger *slog.Logger
	// MaxAttempts is the number of tries for one request, the first
	// included. Retries happen only when the request never reached a
	// handler, or when it may have and its method is idempotent.
	// 0: DefaultMaxAttempts.
	MaxAttempts int
	// EjectAfter is the number of consecutive failures after which an
	// instance is ejected. Failures are: a connection that breaks, a try
	// that times out, an answer that says the handler was unavailable,
	// died or ran out of time, an answer its instance marks as its own
	// failure (wire.Reply.Unhealthy: a sidecar that cannot reach its store
	// does), and, with Eject5xx, any 5xx from the handler.
	// A try that times out on an instance that answered nothing since it
	// was sent ejects it at once, and so does picking an instance that is
	// hung (requests outstanding, nothing answered for many times its
	// usual answer time). 0: DefaultEjectAfter.
	EjectAfter int
	// Eject5xx counts a handler's 5xx answers as failures.
	Eject5xx bool
	// EjectFor is the first ejection period; it doubles on each repeated
	// ejection up to 8 times this value, and resets on a success.
	// 0: DefaultEjectFor.
	EjectFor time.Duration
	// DefaultTimeout is the deadline of a request that carries none and
	// whose ctx has none. 0: DefaultTimeout.
	DefaultTimeout time.Duration
	// MaxReplyBytes bounds an encoded reply; a larger one breaks the
	// connection. 0: DefaultMaxReplyBytes.
	MaxReplyBytes int
	// TLS authenticates this process to instances at tls+tcp:// addresses
	// and them to it (see package meshtls); nil: such instances cannot be
	// reached (ErrNoTLS, as for any instance that cannot be dialled).
	TLS *tls.Config
	// TLSFor, when set, is used instead of TLS: the client side toward
	// the instance of service at address, which checks that the instance's
	// certificate is that service's (meshtls.Source.ClientFor).
	TLSFor func(service, address string) *tls.Config
}

// Validate reports the first problem with c. It does no I/O.
func (c Config) Validate() error {
	switch {
	case c.Endpoints == nil:
		return fmt.Errorf("%w: Endpoints is required", ErrInvalidConfig)
	case c.MaxAttempts < 0 || c.MaxAttempts > 10:
		return fmt.Errorf("%w: MaxAttempts must be between 0 and 10, got %d", ErrInvalidConfig, c.MaxAttempts)
	case c.EjectAfter < 0:
		return fmt.Errorf("%w: EjectAfter must not be negative, got %d", ErrInvalidConfig, c.EjectAfter)
	case c.EjectFor < 0:
		return fmt.Errorf("%w: EjectFor must not be negative, got %v", ErrInvalidConfig, c.EjectFor)
	case c.DefaultTimeout < 0:
		return fmt.Errorf("%w: DefaultTimeout must not be negative, got %v", ErrInvalidConfig, c.DefaultTimeout)
	case c.MaxReplyBytes < 0:
		return fmt.Errorf("%w: MaxReplyBytes must not be negative, got %d", ErrInvalidConfig, c.MaxReplyBytes)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.EjectAfter == 0 {
		c.EjectAfter = DefaultEjectAfter
	}
	if c.EjectFor == 0 {
		c.EjectFor = DefaultEjectFor
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = DefaultTimeout
	}
	if c.MaxReplyBytes == 0 {
		c.MaxReplyBytes = DefaultMaxReplyBytes
	}
	return c
}

// Dispatcher sends requests to instances of services. It is safe for
// concurrent use. It owns one socket per instance address it has sent to and
// two background goroutines (the sweep, the outlier check); Close releases them.
type Dispatcher struct {
	cfg  Config
	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	mu       sync.RWMutex
	closed   bool
	peers    map[string]*peer    // by address
	services map[string]struct{} // services whose instances have peers; read by the sweeper
}

// New validates cfg and returns a Dispatcher. Sockets are created on first
// use, so New does no I/O.
func New(cfg Config) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg:      cfg.withDefaults(),
		done:     make(chan struct{}),
		peers:    make(map[string]*peer),
		services: make(map[string]struct{}),
	}
	d.wg.Add(2)
	go d.every(sweepEvery, d.sweep)
	go d.every(outlierEvery, d.ejectOutliers)
	return d, nil
}

// Close closes all sockets and stops the background goroutines. Do calls in flight return
// ErrClosed promptly, and later ones return ErrClosed at once. Close is
// idempotent and always returns nil.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	peers := d.peers
	d.peers = nil
	d.mu.Unlock()

	close(d.done)
	d.wg.Wait()
	for _, p := range peers {
		p.close()
	}
	return nil
}

// Policy says which failed attempts of one request are tried again, beyond
// those that never reached a handler (always retried while attempts, the
// deadline and the budget allow). The zero Policy retries, besides those,
// idempotent requests whose instance broke with the request inside.
type Policy struct {
	// Attempts is the most tries, the first included (0: Config.MaxAttempts).
	Attempts int
	// PerTry bounds each try (0: only the request's deadline).
	PerTry time.Duration
	// OnDeadline retries a try that ran past PerTry; On5xx retries a 5xx
	// answer from a handler. Both only for idempotent methods unless
	// NonIdempotent is set.
	OnDeadline, On5xx bool
	// OnUnavailable retries a gRPC call answered UNAVAILABLE with nothing
	// else (trailers only) on another instance.
	OnUnavailable bool
	// NonIdempotent allows the retries above, and retries after an instance
	// broke with the request inside, for any method.
	NonIdempotent bool
	// Budget, when set, is asked before every retry; a refusal ends the
	// request with the last answer or error, and calls OnBudgetExhausted.
	Budget            interface{ TryRetry() bool }
	OnBudgetExhausted func()
}

func (p *Policy) mayRepeat(method string) bool { return p.NonIdempotent || idempotent(method) }

// Do sends req to an instance of req.Service (of req.Version, when set)
// with the zero Policy. See DoPolicy.
func (d *Dispatcher) Do(ctx context.Context, req *wire.Request) (*wire.Reply, error) {
	return d.DoPolicy(ctx, req, Policy{})
}

// DoPolicy sends req to an instance of req.Service (of req.Version, when
// set) and returns the handler's reply, retrying on other instances as pol
// allows. It sets req.DeadlineUnixNano (the earlier of req's and ctx's, or
// now + DefaultTimeout) and req.Attempt (the last try's number, so callers
// can count retries). The error wraps exactly one of ErrNoInstance,
// ErrUnavailable, ErrDeadline, ErrBadRequest, ErrClosed, or ctx's error.
// When attempts run out on replies that say the request never reached a
// handler, that last reply is returned with a nil error.
func (d *Dispatcher) DoPolicy(ctx context.Context, req *wire.Request, pol Policy) (*wire.Reply, error) {
	reply, _, err := d.do(ctx, req, pol)
	return reply, err
}

// DoExchange is DoPolicy for a request served in parts (see
// envelope.proto): one whose body follows (req.BodyFollows) or whose
// answer may (req.AcceptParts). With the first reply it returns the
// Exchange that carries the other parts to the same instance, when the
// reply says more follow (Reply.More); nil otherwise.
func (d *Dispatcher) DoExchange(ctx context.Context, req *wire.Request, pol Policy) (*wire.Reply, *Exchange, error) {
	reply, p, err := d.do(ctx, req, pol)
	if err != nil || !reply.GetMore() || reply.GetCode() != wire.Code_CODE_OK {
		return reply, nil, err
	}
	return reply, &Exchange{d: d, p: p, id: req.Id}, nil
}

// do is DoPolicy, and names the instance that gave the reply.
func (d *Dispatcher) do(ctx context.Context, req *wire.Request, pol Policy) (*wire.Reply, *peer, error) {
	deadline := d.deadline(ctx, req)
	req.DeadlineUnixNano = deadline.UnixNano()
	attempts := pol.Attempts
	if attempts <= 0 {
		attempts = d.cfg.MaxAttempts
	}

	var triedBuf [10]*peer
	tried := triedBuf[:0]
	var (
		lastReply *wire.Reply
		lastErr   error
	)
	for attempt := 1; attempt <= attempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, ctxError(ctx)
		}
		if !time.Now().Before(deadline) {
			if lastReply != nil || lastErr != nil {
				break
			}
			return nil, nil, fmt.Errorf("%w: after %d attempts", ErrDeadline, attempt-1)
		}
		if attempt > 1 && pol.Budget != nil && !pol.Budget.TryRetry() {
			if pol.OnBudgetExhausted != nil {
				pol.OnBudgetExhausted()
			}
			break
		}
		req.Attempt = uint32(attempt)
		req.TimeoutNanos = max(int64(time.Until(deadline)), 1) // the receiver's clock need not agree with ours
		msg, err := encode(req)
		if err != nil {
			return nil, nil, err
		}
		p, trial, err := d.pick(req.Service, req.Version, tried, pol.mayRepeat(req.Method))
		if err != nil {
			msg.Free()
			if lastReply != nil || lastErr != nil {
				break
			}
			return nil, nil, err
		}
		if len(tried) < cap(triedBuf) {
			tried = append(tried, p)
		}
		tryDeadline := deadline
		if pol.PerTry > 0 {
			if t := time.Now().Add(pol.PerTry); t.Before(deadline) {
				tryDeadline = t
			}
		}
		var sp trace.Span
		msg.Body, sp = trace.Attempt(ctx, msg.Body, req.Service, attempt, p.addr)
		// A request that may be repeated probing an instance that was hung
		// waits only as long as makes it hung, and one on trial with an
		// ejected instance only as long as a trial may take; then it goes
		// elsewhere.
		probe := trial || p.probe(time.Now().UnixNano()) && pol.mayRepeat(req.Method)
		if probe {
			limit := p.hungLimit()
			if trial {
				limit = p.trialLimit()
			}
			if t := time.Now().Add(limit); t.Before(tryDeadline) {
				tryDeadline = t
			}
		}
		reply, res, err := d.try(ctx, p, msg, req.Id, tryDeadline, deadline)
		sp.End(int(reply.GetStatus()))
		p.inflight.Add(-1)
		switch res {
		case done:
			if reply.GetStatus() >= 500 && pol.On5xx && pol.mayRepeat(req.Method) {
				lastReply, lastErr = reply, nil
				continue
			}
			return reply, p, nil
		case fatal:
			return nil, nil, err
		case retryReply:
			lastReply, lastErr = reply, nil
		case notDelivered:
			lastReply, lastErr = nil, err
		case maybeDelivered:
			if !pol.mayRepeat(req.Method) {
				return nil, nil, err
			}
			lastReply, lastErr = nil, err
		case tryTimedOut:
			if !probe && (!pol.OnDeadline || !pol.mayRepeat(req.Method)) {
				return nil, nil, err
			}
			lastReply, lastErr = nil, err
		case retryUnavailable:
			if !pol.OnUnavailable || !pol.mayRepeat(req.Method) {
				return reply, p, nil
			}
			lastReply, lastErr = reply, nil
		case retryUnhealthy:
			if !pol.mayRepeat(req.Method) {
				return reply, p, nil
			}
			lastReply, lastErr = reply, nil
		}
	}
	if lastReply != nil {
		return lastReply, nil, nil
	}
	return nil, nil, lastErr
}

// idempotent reports whether an HTTP method may be repeated safely after it
// may have reached a handler.
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

func (d *Dispatcher) deadline(ctx context.Context, req *wire.Request) time.Time {
	var dl time.Time
	if req.DeadlineUnixNano != 0 {
		dl = time.Unix(0, req.DeadlineUnixNano)
	}
	if cdl, ok := ctx.Deadline(); ok && (dl.IsZero() || cdl.Before(dl)) {
		dl = cdl
	}
	if dl.IsZero() {
		dl = time.Now().Add(d.cfg.DefaultTimeout)
	}
	return dl
}

// ctxError translates the error of a done ctx.
func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrDeadline, context.Cause(ctx))
	}
	return fmt.Errorf("dispatch: %w", context.Cause(ctx))
}

// pick chooses an instance for one attempt and counts the attempt in its
// in-flight counter; the caller decrements it when the attempt ends.
// Preference: healthy and untried, then healthy, then untried, then any
// (ejected instances are used when nothing else is left).
//
// A request that may be repeated (trial) may go to an ejected instance whose
// trial is due, as a healthy one would; onTrial reports that it does.
func (d *Dispatcher) pick(service, version string, tried []*peer, trial bool) (_ *peer, onTrial bool, _ error) {
	insts := d.cfg.Endpoints.Instances(service)
	now := time.Now().UnixNano()
	var buf [32]*peer
	for round := range 2 {
		d.mu.RLock()
		if d.closed {
			d.mu.RUnlock()
			return nil, false, ErrClosed
		}
		missing, matched := false, false
		var trialPeer *peer
		eligible := buf[:0]
		for pass := 0; pass < 4 && len(eligible) == 0; pass++ {
			wantHealthy, wantUntried := pass == 0 || pass == 1, pass == 0 || pass == 2
			for i := range insts {
				in := &insts[i]
				if version != "" && in.Version != version {
					continue
				}
				matched = true
				p := d.peers[in.Address]
				if p == nil {
					missing = true
					continue
				}
				if s := in.Started.UnixNano(); s != p.started.Load() {
					p.restarted(s)
				}
				onTrial := false
				if wantHealthy {
					ejected := p.ejectedUntil.Load() > now
					if ejected && !(trial && p.onTrial(now)) || p.hung(now) && d.ejectHung(p, true) || p.probe(now) && p.inflight.Load() > 0 {
						continue
					}
					onTrial = ejected
				}
				if wantUntried && slices.Contains(tried, p) {
					continue
				}
				if onTrial {
					trialPeer = p // its trial is taken: it gets this request
				}
				eligible = append(eligible, p)
			}
		}
		if missing && round == 0 {
			d.mu.RUnlock()
			d.addPeers(service, version, insts)
			continue
		}
		if !matched {
			d.mu.RUnlock()
			if version != "" {
				return nil, false, fmt.Errorf("%w: service %q version %q", ErrNoInstance, service, version)
			}
			return nil, false, fmt.Errorf("%w: service %q", ErrNoInstance, service)
		}
		if len(eligible) == 0 {
			// Every peer was swept between addPeers and now.
			break
		}
		p := eligible[0]
		if trialPeer != nil {
			p = trialPeer
		} else if n := len(eligible); n > 1 {
			i, j := rand.IntN(n), rand.IntN(n-1)
			if j >= i {
				j++
			}
			p = eligible[i]
			if q := eligible[j]; q.inflight.Load() < p.inflight.Load() {
				p = q
			}
		}
		p.inflight.Add(1)
		d.mu.RUnlock()
		return p, trialPeer != nil, nil
	}
	d.mu.RUnlock()
	return nil, false, fmt.Errorf("%w: service %q: instances changed during selection", ErrUnavailable, service)
}

// addPeers creates peers for the matching instances that have none.
func (d *Dispatcher) addPeers(service, version string, insts []discovery.Instance) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.services[service] = struct{}{}
	for i := range insts {
		in := &insts[i]
		if version != "" && in.Version != version {
			continue
		}
		if _, ok := d.peers[in.Address]; !ok {
			tlsCfg := d.cfg.TLS
			if d.cfg.TLSFor != nil {
				tlsCfg = d.cfg.TLSFor(in.Service, in.Address)
			}
			p := newPeer(in.Address, d.cfg.MaxReplyBytes, tlsCfg)
			p.service = service
			d.peers[in.Address] = p
		}
	}
}

func (d *Dispatcher) isClosed() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// every runs fn every interval until Close closes d.done: the sweep of
// sockets no longer in use and the ejection of latency outliers.
func (d *Dispatcher) every(interval time.Duration, fn func()) {
	defer d.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-t.C:
			fn()
		}
	}
}

// serviceNames are the services this Dispatcher has sent to.
func (d *Dispatcher) serviceNames() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	services := make([]string, 0, len(d.services))
	for s := range d.services {
		services = append(services, s)
	}
	return services
}

// sweep closes the sockets of addresses that are no longer an instance of
// any service this Dispatcher has sent to.
func (d *Dispatcher) sweep() {
	services := d.serviceNames()

	live := make(map[string]struct{})
	var gone []string
	for _, s := range services {
		insts := d.cfg.Endpoints.Instances(s)
		if len(insts) == 0 {
			gone = append(gone, s)
		}
		for i := range insts {
			live[insts[i].Address] = struct{}{}
		}
	}

	var stale []*peer
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	for _, s := range gone {
		delete(d.services, s)
	}
	for addr, p := range d.peers {
		if _, ok := live[addr]; !ok && p.inflight.Load() == 0 {
			delete(d.peers, addr)
			stale = append(stale, p)
		}
	}
	d.mu.Unlock()
	for _, p := range stale {
		p.close()
	}
}

// InstanceStats describes one instance address known to a Dispatcher.
type InstanceStats struct {
	Address string
	// InFlight is the number of attempts now waiting on this instance.
	InFlight int64
	// ConsecutiveFailures counts transport failures since the last success.
	ConsecutiveFailures int
	// EjectedUntil is when the current ejection ends; zero when the
	// instance is not ejected.
	EjectedUntil time.Time
	// Connected reports whether the socket has a live connection now.
	Connected bool
}

// Stats returns a snapshot of every known instance address, sorted by
// address.
func (d *Dispatcher) Stats() []InstanceStats {
	d.mu.RLock()
	peers := make([]*peer, 0, len(d.peers))
	for _, p := range d.peers {
		peers = append(peers, p)
	}
	d.mu.RUnlock()

	now := time.Now().UnixNano()
	out := make([]InstanceStats, 0, len(peers))
	for _, p := range peers {
		st := InstanceStats{
			Address:   p.addr,
			InFlight:  p.inflight.Load(),
			Connected: p.pipes.Load() > 0,
		}
		if until := p.ejectedUntil.Load(); until > now {
			st.EjectedUntil = time.Unix(0, until)
		}
		p.mu.Lock()
		st.ConsecutiveFailures = p.fails
		p.mu.Unlock()
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b InstanceStats) int {
		switch {
		case a.Address < b.Address:
			return -1
		case a.Address > b.Address:
			return 1
		}
		return 0
	})
	return out
}

// grpcUnavailable is gRPC's UNAVAILABLE status code.
const grpcUnavailable = 14

// result classifies one attempt.
type result int

const (
	done             result = iota // a final reply
	fatal                          // an error not worth another attempt
	retryReply                     // a reply saying no handler saw the request
	notDelivered                   // no instance received the request
	maybeDelivered                 // the request may have reached a handler
	tryTimedOut                    // no answer within the try's own deadline
	retryUnavailable               // an answer that the instance cannot serve, before any of it went out
	retryUnhealthy                 // an answer from an instance that says it cannot serve now (Reply.Unhealthy)
)

// try sends msg, an encoded request, to p and waits for the reply. It takes
// ownership of msg.
func (d *Dispatcher) try(ctx context.Context, p *peer, msg *mangos.Message, id string, deadline, final time.Time) (*wire.Reply, result, error) {
	sent := false
	defer func() {
		if !sent {
			msg.Free()
		}
	}()
	l, err := p.link()
	if err != nil {
		if errors.Is(err, mangos.ErrClosed) {
			return d.closedResult(ctx, p)
		}
		d.failure(p)
		return nil, notDelivered, fmt.Errorf("%w: %s: %w", ErrUnavailable, p.addr, err)
	}
	if !l.ready() {
		if res, err := d.awaitConnect(ctx, l, deadline); err != nil {
			return nil, res, err
		}
	}

	sl, err := l.getSlot()
	if err != nil {
		return d.closedResult(ctx, p)
	}
	reusable := true
	defer func() {
		if reusable {
			l.putSlot(sl)
		} else {
			sl.close()
		}
	}()
	if ctx.Done() != nil {
		stop := sl.follow(ctx, d, l, id)
		defer func() {
			if !stop() {
				reusable = false
			}
		}()
	}

	remaining := time.Until(deadline)
	if remaining <= 0 {
		return nil, fatal, fmt.Errorf("%w: before sending to %s", ErrDeadline, p.addr)
	}
	sl.arm(min(remaining, maxSendWait))
	start := time.Now()
	err = sl.mc.SendMsg(msg)
	if !sl.disarm() {
		reusable = false
	}
	if err != nil {
		switch {
		case sl.timedOut(err) && !time.Now().Before(deadline):
			return nil, fatal, fmt.Errorf("%w: sending to %s", ErrDeadline, p.addr)
		case sl.timedOut(err):
			err = mangos.ErrSendTimeout
		case errors.Is(err, mangos.ErrClosed):
			reusable = false
			return d.closedResult(ctx, p)
		}
		// ErrNoPeers (the connection is down) or no free connection in
		// time: nothing left this process.
		d.failure(p)
		return nil, notDelivered, fmt.Errorf("%w: sending to %s: %w", ErrUnavailable, p.addr, err)
	}

	sent = true // the socket owns msg now
	sl.sent()
	p.sent(start)
	remaining = time.Until(deadline)
	if remaining <= 0 {
		remaining = time.Nanosecond // zero would mean no timeout at all
	}
	sl.arm(remaining)
	rm, err := sl.mc.RecvMsg()
	if !sl.disarm() {
		reusable = false
	}
	if err != nil {
		reusable = false
		switch {
		case sl.timedOut(err) && deadline.Before(final):
			d.timedOut(p, start)
			return nil, tryTimedOut, fmt.Errorf("%w: try timed out waiting for %s", ErrDeadline, p.addr)
		case sl.timedOut(err):
			d.timedOut(p, start)
			return nil, fatal, fmt.Errorf("%w: waiting for %s", ErrDeadline, p.addr)
		case errors.Is(err, mangos.ErrClosed):
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				d.timedOut(p, start) // the caller's deadline is the try's
			}
			return d.closedResult(ctx, p)
		}
		// ErrCanceled or ErrNoPeers: the connection closed while the
		// request was out, so a handler may have run it.
		d.failure(p)
		return nil, maybeDelivered, fmt.Errorf("%w: connection to %s lost with the request in flight: %w", ErrUnavailable, p.addr, err)
	}
	reply, err := decode(rm)
	if err != nil {
		d.failure(p)
		return nil, fatal, fmt.Errorf("%w: reply from %s: %w", ErrUnavailable, p.addr, err)
	}
	took := time.Since(start)
	if reply.Code == wire.Code_CODE_DEADLINE_EXCEEDED {
		// A deadline missed is progress (the instance answers) but no
		// measure of its answer time: counted in, an instance that misses
		// every deadline (its store holds its reads) would be hung only
		// after 16 deadlines, and its probes would wait as long.
		p.progress.Store(time.Now().UnixNano())
	} else {
		p.answered(took)
	}
	switch reply.Code {
	case wire.Code_CODE_UNAVAILABLE:
		d.failure(p)
		return reply, retryReply, nil
	case wire.Code_CODE_OVERLOADED:
		// The instance is alive, only busy: neither a failure nor a success.
		return reply, retryReply, nil
	case wire.Code_CODE_INTERNAL, wire.Code_CODE_DEADLINE_EXCEEDED:
		// The handler died with the request inside, or ran out of time.
		d.failure(p)
		return reply, done, nil
	}
	if c, ok := wire.GRPCStatus(reply.Headers, reply.Trailers); ok && c == grpcUnavailable {
		// A gRPC server says it cannot serve: an instance failure, as
		// CODE_UNAVAILABLE is, though it came in a 200. Whole (trailers
		// only), nothing of the answer went out: it may be retried where
		// the policy allows the method's repetition.
		d.failure(p)
		if !reply.More {
			return reply, retryUnavailable, nil
		}
		return reply, done, nil
	}
	if reply.Unhealthy {
		// The instance answered but says the cause is its own (a
		// dependency of its own is down): a failure of the instance, and
		// a request that may be repeated goes to another.
		d.failure(p)
		if !reply.More {
			return reply, retryUnhealthy, nil
		}
		return reply, done, nil
	}
	if d.cfg.Eject5xx && reply.FigureStatus() >= 500 {
		d.failure(p)
		return reply, done, nil
	}
	p.success(took, d.cfg.EjectFor)
	return reply, done, nil
}

// cancelRemote tells the instance behind l that the request id is
// given up (its caller went away), so that its handler stops; best effort,
// on a goroutine the Dispatcher owns.
func (d *Dispatcher) cancelRemote(l *link, id string) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return
	}
	d.wg.Go(func() {
		msg, err := encode(&wire.Request{Id: id, Cancel: true})
		if err != nil {
			return
		}
		sl, err := l.getSlot()
		if err != nil {
			msg.Free()
			return
		}
		defer sl.close()
		sl.arm(cancelWait) // for the send and the answer together
		if err := sl.mc.SendMsg(msg); err != nil {
			msg.Free()
			return
		}
		if rm, err := sl.mc.RecvMsg(); err == nil {
			rm.Free()
		}
	})
}

// closedResult explains a mangos ErrClosed: the caller's ctx was done (its
// AfterFunc closed the context), the Dispatcher was closed, or the peer's
// socket was swept between selection and use.
func (d *Dispatcher) closedResult(ctx context.Context, p *peer) (*wire.Reply, result, error) {
	switch {
	case ctx.Err() != nil:
		return nil, fatal, ctxError(ctx)
	case d.isClosed():
		return nil, fatal, ErrClosed
	}
	return nil, notDelivered, fmt.Errorf("%w: socket for %s closed", ErrUnavailable, p.addr)
}

// awaitConnect waits, within the connect grace period of a new socket, for
// its first connection. It returns a nil error when the caller should go on
// and send (connected, or the grace period is over).
func (d *Dispatcher) awaitConnect(ctx context.Context, l *link, deadline time.Time) (result, error) {
	wait := min(time.Until(l.created.Add(connectGrace)), time.Until(deadline))
	if wait <= 0 {
		return 0, nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-l.up:
	case <-t.C:
	case <-ctx.Done():
		return fatal, ctxError(ctx)
	case <-d.done:
		return fatal, ErrClosed
	}
	return 0, nil
}

// timedOut records a try on p that ran out of time; start is when it was
// sent. When p has answered nothing since, p is hung: it is ejected at
// once.
func (d *Dispatcher) timedOut(p *peer, start time.Time) {
	if p.progress.Load() <= start.UnixNano() {
		d.ejectHung(p, false)
		return
	}
	d.failure(p)
}

// ejectHung ejects p, which holds requests it does not answer. It reports
// true (for use in conditions).
//
// It is not ejected when that would not single it out (othersAnswer):
// a stall of this process (starved of CPU) makes every instance look hung,
// and ejecting them all would help no request. locked tells whether the
// caller holds d.mu for reading.
func (d *Dispatcher) ejectHung(p *peer, locked bool) bool {
	if !d.othersAnswer(p, locked) {
		return true
	}
	until, ok := p.eject(d.cfg.EjectFor)
	// It answers nothing: probes, not trials, once its ejection ends, also
	// when it was ejected already (a trial of it got no answer).
	p.silent.Store(true)
	if ok {
		d.cfg.Logger.Warn("dispatch: instance ejected: it answers nothing",
			slog.String("address", p.addr),
			slog.Int64("in_flight", p.inflight.Load()),
			slog.Duration("for", time.Until(until).Round(time.Millisecond)))
	}
	return true
}

// othersAnswer reports whether ejecting p as hung singles it out: it
// would not leave fewer than half of its service's instances in use, and
// the other instances with requests outstanding are not all hung as well
// (that is a stall of this process, or of all of them).
func (d *Dispatcher) othersAnswer(p *peer, locked bool) bool {
	if p.service == "" || d.cfg.Endpoints == nil {
		return true
	}
	insts := d.cfg.Endpoints.Instances(p.service)
	if !locked {
		d.mu.RLock()
		defer d.mu.RUnlock()
	}
	now := time.Now().UnixNano()
	total, ejected, busy, stuck := 1, 0, 0, 0
	for i := range insts {
		q := d.peers[insts[i].Address]
		if q == nil || q == p {
			continue
		}
		total++
		switch {
		case q.ejectedUntil.Load() > now:
			ejected++
		case q.inflight.Load() > 0:
			busy++
			if q.hung(now) {
				stuck++
			}
		}
	}
	return 2*(ejected+1) <= total && (busy == 0 || stuck < busy)
}

// failure records a failure of p and ejects it when it reaches the
// threshold.
func (d *Dispatcher) failure(p *peer) {
	if until, ok := p.failure(d.cfg.EjectAfter, d.cfg.EjectFor); ok {
		d.cfg.Logger.Warn("dispatch: instance ejected",
			slog.String("address", p.addr),
			slog.Duration("for", time.Until(until).Round(time.Millisecond)))
	}
}
