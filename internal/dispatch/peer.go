package dispatch

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.nanomsg.org/mangos/v3"
	// The transports a Dispatcher can dial (mangos registers them on import).
	_ "go.nanomsg.org/mangos/v3/transport/inproc" // registers inproc://
	_ "go.nanomsg.org/mangos/v3/transport/ipc"
	_ "go.nanomsg.org/mangos/v3/transport/tcp"
	_ "go.nanomsg.org/mangos/v3/transport/tlstcp"
	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/reqrep"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// peer is the state kept for one instance address: load, health and the
// lazily created socket. A peer lives in Dispatcher.peers until it is swept
// or the Dispatcher closes; close releases its socket.
type peer struct {
	addr         string
	service      string // the service whose instance it is; "" in tests
	maxReply     int
	tls          *tls.Config // for tls+tcp:// addresses
	inflight     atomic.Int64
	ejectedUntil atomic.Int64 // unix nanoseconds; in the past: not ejected
	pipes        atomic.Int32 // connections attached now
	// progress is when p last showed it works (unix nanoseconds): an
	// answer came, or a request was sent while none was outstanding. An
	// instance with requests outstanding and no progress for long is hung.
	progress atomic.Int64
	// latency is a moving average of p's answer times (nanoseconds; 0:
	// none yet), the measure of "long" for p.
	latency atomic.Int64
	// started is the registration's start time (unix nanoseconds) of the
	// instance now at addr: a new one at the same address starts afresh.
	started atomic.Int64
	// trial is when an ejected p was last given one request to prove
	// itself (unix nanoseconds).
	trial atomic.Int64
	// silent is set while p is ejected for answering nothing (hung): it
	// gets no trials, which would only wait for their deadlines.
	silent atomic.Bool
	// samples counts the answers in latency since it was last reset.
	samples atomic.Int64
	// slowLimit is set while p is ejected as a latency outlier: the answer
	// time (nanoseconds) a trial must beat to end the ejection.
	slowLimit atomic.Int64

	mu        sync.Mutex
	fails     int   // consecutive transport failures
	ejections int   // consecutive ejections, for the back-off; reset on success
	ln        *link // nil until first use
	closed    bool
}

// link is a peer's REQ socket with its pool of idle contexts.
type link struct {
	sock    mangos.Socket
	created time.Time
	up      chan struct{} // closed when the first connection is attached
	upOnce  sync.Once
	isUp    atomic.Bool
	free    chan *slot // idle contexts; all are closed with sock
}

func newPeer(addr string, maxReply int, tlsCfg *tls.Config) *peer {
	p := &peer{addr: addr, maxReply: maxReply, tls: tlsCfg}
	p.progress.Store(time.Now().UnixNano())
	return p
}

// link returns p's socket, creating and dialing it on first use. It
// returns mangos.ErrClosed once p is closed.
func (p *peer) link() (*link, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, mangos.ErrClosed
	}
	if p.ln != nil {
		return p.ln, nil
	}
	l, err := p.dial()
	if err != nil {
		return nil, err
	}
	p.ln = l
	return l, nil
}

// dial creates a REQ socket that never resends (Do retries itself, on
// another instance), fails at once while it has no connection, and keeps
// reconnecting in the background.
func (p *peer) dial() (*link, error) {
	sock, err := reqrep.NewReq()
	if err != nil {
		return nil, fmt.Errorf("new req socket: %w", err)
	}
	l := &link{
		sock:    sock,
		created: time.Now(),
		up:      make(chan struct{}),
		free:    make(chan *slot, contextPoolSize),
	}
	sock.SetPipeEventHook(func(ev mangos.PipeEvent, _ mangos.Pipe) {
		switch ev {
		case mangos.PipeEventAttached:
			p.pipes.Add(1)
			l.upOnce.Do(func() {
				l.isUp.Store(true)
				close(l.up)
			})
		case mangos.PipeEventDetached:
			p.pipes.Add(-1)
		}
	})
	opts := []struct {
		name  string
		value any
	}{
		{mangos.OptionRetryTime, time.Duration(0)},
		{mangos.OptionMaxRecvSize, p.maxReply},
		{mangos.OptionFailNoPeers, true},
		{mangos.OptionDialAsynch, true},
		{mangos.OptionReconnectTime, reconnectTime},
		{mangos.OptionMaxReconnectTime, maxReconnectTime},
	}
	for _, o := range opts {
		if err := sock.SetOption(o.name, o.value); err != nil {
			_ = sock.Close()
			return nil, fmt.Errorf("set %s: %w", o.name, err)
		}
	}
	var dialOpts map[string]any
	if strings.HasPrefix(p.addr, "tls+tcp://") {
		if p.tls == nil {
			_ = sock.Close()
			return nil, fmt.Errorf("dial %s: %w", p.addr, ErrNoTLS)
		}
		dialOpts = map[string]any{mangos.OptionTLSConfig: p.tls}
	}
	if err := sock.DialOptions(p.addr, dialOpts); err != nil {
		_ = sock.Close()
		return nil, fmt.Errorf("dial: %w", err)
	}
	return l, nil
}

// close closes p's socket, which fails every request in flight on it.
func (p *peer) close() {
	p.mu.Lock()
	p.closed = true
	l := p.ln
	p.ln = nil
	p.mu.Unlock()
	if l != nil {
		_ = l.sock.Close()
	}
}

// failure records one transport failure. When it reaches ejectAfter and p is
// not ejected, p is ejected for ejectFor, doubled per consecutive ejection
// up to maxEjectionMultiplier times; ok reports a new ejection. The counter
// is not reset by an ejection, so a returning instance that fails again is
// ejected at once, for longer.
func (p *peer) failure(ejectAfter int, ejectFor time.Duration) (until time.Time, ok bool) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fails++
	if p.fails < ejectAfter || p.ejectedUntil.Load() > now.UnixNano() {
		return time.Time{}, false
	}
	p.silent.Store(false) // it answers, if only with failures
	return p.ejectLocked(ejectFor), true
}

// ejectLocked ejects p for ejectFor, doubled per consecutive ejection;
// p.mu is held.
func (p *peer) ejectLocked(ejectFor time.Duration) time.Time {
	mult := 1 << p.ejections
	if mult < maxEjectionMultiplier {
		p.ejections++
	} else {
		mult = maxEjectionMultiplier
	}
	until := time.Now().Add(time.Duration(mult) * ejectFor)
	p.ejectedUntil.Store(until.UnixNano())
	return until
}

// sent records that a request went out to p; start is when.
func (p *peer) sent(start time.Time) {
	if p.inflight.Load() <= 1 { // nothing else outstanding: the clock starts now
		p.progress.Store(start.UnixNano())
	}
}

// answered records an answer from p that took took.
func (p *peer) answered(took time.Duration) {
	p.progress.Store(time.Now().UnixNano())
	p.samples.Add(1)
	old := p.latency.Load()
	if old == 0 {
		p.latency.Store(int64(took))
		return
	}
	p.latency.Store(old + (int64(took)-old)/8)
}

// hung reports whether p has had requests outstanding without any
// progress for hungFactor times its usual answer time (at least minHung;
// before any answer, noAnswerHung). An instance busy with one long request
// and nothing else can look hung too; it is then ejected for a while and
// used again when nothing else is left, so the cost is balance, not
// answers.
func (p *peer) hung(now int64) bool {
	if p.inflight.Load() == 0 {
		return false
	}
	return now-p.progress.Load() > int64(p.hungLimit())
}

// hungLimit is how long p may hold requests without answering any before
// it counts as hung.
func (p *peer) hungLimit() time.Duration {
	if l := time.Duration(p.latency.Load()); l > 0 {
		return max(minHung, hungFactor*l)
	}
	return noAnswerHung
}

// trialLimit is how long a trial request on the ejected p waits for its
// answer before it goes elsewhere: minHung, or for a latency outlier the
// answer time a trial must beat anyway. p's own average is no measure
// here: an instance that answered late (its deadline misses) has a long one.
func (p *peer) trialLimit() time.Duration {
	return max(minHung, time.Duration(p.slowLimit.Load()))
}

// probe reports whether p was ejected as hung and that ejection is over:
// it is given one request at a time (a probe) until it answers again.
func (p *peer) probe(now int64) bool {
	return p.silent.Load() && p.ejectedUntil.Load() <= now
}

// eject ejects p now unless it is ejected already, as a failure reaching
// the threshold would.
func (p *peer) eject(ejectFor time.Duration) (until time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ejectedUntil.Load() > time.Now().UnixNano() {
		return time.Time{}, false
	}
	return p.ejectLocked(ejectFor), true
}

// success records an answer from a handler that took took: the instance
// is healthy, and an ejected one (on trial) is back at once, unless it was
// ejected as a latency outlier and took longer than its limit: then its
// ejection starts again, longer.
func (p *peer) success(took time.Duration, ejectFor time.Duration) {
	if lim := p.slowLimit.Load(); lim > 0 {
		if int64(took) > lim {
			p.mu.Lock()
			p.fails = 0
			p.ejectLocked(ejectFor)
			p.mu.Unlock()
			return
		}
		// Back at its peers' pace: its average starts afresh, or the slow
		// answers before would eject it again at once.
		p.latency.Store(int64(took))
		p.samples.Store(1)
	}
	p.mu.Lock()
	p.fails = 0
	p.ejections = 0
	p.mu.Unlock()
	p.ejectedUntil.Store(0)
	p.silent.Store(false)
	p.slowLimit.Store(0)
}

// ejectSlow ejects p, whose answers take longer than limit (nanoseconds)
// while its peers' do not, unless it is ejected already.
func (p *peer) ejectSlow(limit int64, ejectFor time.Duration) (until time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ejectedUntil.Load() > time.Now().UnixNano() {
		return time.Time{}, false
	}
	p.slowLimit.Store(limit)
	return p.ejectLocked(ejectFor), true
}

// restarted notes the start time of the instance registered at p's
// address; a new instance there (a restart) is not held to the old one's
// ejection.
func (p *peer) restarted(started int64) {
	if old := p.started.Swap(started); old != 0 && old != started {
		p.mu.Lock()
		p.fails, p.ejections = 0, 0
		p.mu.Unlock()
		p.ejectedUntil.Store(0)
		p.silent.Store(false)
		p.slowLimit.Store(0)
		p.latency.Store(0)
		p.samples.Store(0)
		p.progress.Store(time.Now().UnixNano())
	}
}

// onTrial reports whether the ejected p may take one request now to show
// it is back: at most one every trialEvery.
func (p *peer) onTrial(now int64) bool {
	if p.silent.Load() {
		return false
	}
	last := p.trial.Load()
	return now-last >= int64(trialEvery) && p.trial.CompareAndSwap(last, now)
}

// Latency outliers: an instance whose moving average answer time is more
// than outlierFactor times the median of the other instances of its
// service and version, and at least outlierMinGap above it, is ejected
// (with the usual back-off); its trials end the ejection once one answers
// within that limit. At most half of a group is ejected this way, and only
// instances with outlierMinSamples answers are judged or compared.
const (
	outlierEvery      = 250 * time.Millisecond
	outlierFactor     = 3
	outlierMinGap     = 50 * time.Millisecond
	outlierMinSamples = 10
)

// ejectOutliers compares the instances of each service and version this
// Dispatcher has sent to, and ejects the ones much slower than the rest.
func (d *Dispatcher) ejectOutliers() {
	services := d.serviceNames()
	now := time.Now().UnixNano()
	for _, svc := range services {
		insts := d.cfg.Endpoints.Instances(svc) // sorted by version
		for i := 0; i < len(insts); {
			j := i + 1
			for j < len(insts) && insts[j].Version == insts[i].Version {
				j++
			}
			if j-i >= 2 {
				d.ejectSlowIn(insts[i:j], now)
			}
			i = j
		}
	}
}

// ejectSlowIn judges one group of instances of the same service and
// version.
func (d *Dispatcher) ejectSlowIn(group []discovery.Instance, now int64) {
	var buf [32]*peer
	peers := buf[:0]
	d.mu.RLock()
	for k := range group {
		if p := d.peers[group[k].Address]; p != nil {
			peers = append(peers, p)
		}
	}
	d.mu.RUnlock()
	ejected := 0
	var judged []*peer
	for _, p := range peers {
		switch {
		case p.ejectedUntil.Load() > now:
			ejected++
		case p.samples.Load() >= outlierMinSamples:
			judged = append(judged, p)
		}
	}
	if len(judged) < 2 {
		return
	}
	lat := make([]int64, 0, len(judged))
	for _, p := range judged {
		others := lat[:0]
		for _, q := range judged {
			if q != p {
				others = append(others, q.latency.Load())
			}
		}
		med := median(others)
		limit := max(outlierFactor*med, med+int64(outlierMinGap))
		l := p.latency.Load()
		if l <= limit || 2*(ejected+1) > len(peers) {
			continue
		}
		if until, ok := p.ejectSlow(limit, d.cfg.EjectFor); ok {
			ejected++
			d.cfg.Logger.Warn("dispatch: instance ejected: much slower than its peers",
				slog.String("address", p.addr),
				slog.Duration("latency", time.Duration(l).Round(time.Microsecond)),
				slog.Duration("peers_median", time.Duration(med).Round(time.Microsecond)),
				slog.Duration("for", time.Until(until).Round(time.Millisecond)))
		}
	}
}

// median of xs, which it reorders; xs is not empty.
func median(xs []int64) int64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// ready reports whether the socket has had a connection; before that, Do
// waits for one during connectGrace instead of failing fast.
func (l *link) ready() bool { return l.isUp.Load() }

// slot is a pooled mangos context with the one timer that bounds each
// wait on it: the timer closes the context when it fires. mangos' own send
// and receive deadlines would start a new timer for every call. A slot
// whose context was closed (by its timer, or for a caller that left) is
// not reused.
type slot struct {
	mc    mangos.Context
	timer *time.Timer
	armed bool        // by the goroutine using the slot
	fired atomic.Bool // the timer closed mc

	// The request on the slot, for the function that follows its caller's
	// context: made once with the slot, so that following one costs no
	// closure per request.
	d     *Dispatcher
	l     *link
	id    string      // "": nothing to cancel at the instance
	out   atomic.Bool // the request left this process
	leave func()      // s.left
}

func newSlot(mc mangos.Context) *slot {
	s := &slot{mc: mc}
	s.timer = time.AfterFunc(time.Hour, s.expire)
	s.timer.Stop()
	s.leave = s.left
	return s
}

// follow closes the slot's context when ctx ends and, once sent is called,
// tells the instance behind l to cancel id as well. It returns
// context.AfterFunc's stop: false means the context is closed.
func (s *slot) follow(ctx context.Context, d *Dispatcher, l *link, id string) func() bool {
	s.d, s.l, s.id = d, l, id
	s.out.Store(false)
	return context.AfterFunc(ctx, s.leave)
}

// sent records that the request left this process: a cancel must follow it.
func (s *slot) sent() { s.out.Store(true) }

// left is follow's function, on the goroutine that ended the context.
func (s *slot) left() {
	_ = s.mc.Close()
	if s.out.Load() && s.id != "" {
		s.d.cancelRemote(s.l, s.id)
	}
}

func (s *slot) expire() {
	s.fired.Store(true)
	_ = s.mc.Close()
}

// arm has the timer close the context after d (0: no bound); each arm is
// followed by one disarm.
func (s *slot) arm(d time.Duration) {
	if s.armed = d > 0; s.armed {
		s.timer.Reset(d)
	}
}

// disarm stops the timer. False: it fired, and the context is closed (or
// being closed).
func (s *slot) disarm() bool {
	if !s.armed {
		return true
	}
	s.armed = false
	return s.timer.Stop()
}

// timedOut reports whether err is the mangos.ErrClosed of s's own timer.
func (s *slot) timedOut(err error) bool {
	return errors.Is(err, mangos.ErrClosed) && s.fired.Load()
}

// close stops the timer and closes the context.
func (s *slot) close() {
	s.timer.Stop()
	_ = s.mc.Close()
}

// getSlot returns an idle slot or opens a context for a new one. It fails
// with mangos.ErrClosed once the socket is closed.
func (l *link) getSlot() (*slot, error) {
	select {
	case s := <-l.free:
		return s, nil
	default:
		mc, err := l.sock.OpenContext()
		if err != nil {
			return nil, err
		}
		return newSlot(mc), nil
	}
}

// putSlot returns an unbroken slot to the pool, or closes it when the pool
// is full.
func (l *link) putSlot(s *slot) {
	select {
	case l.free <- s:
	default:
		s.close()
	}
}

// encode marshals req into a new mangos message; the caller owns it.
func encode(r *wire.Request) (*mangos.Message, error) {
	m := mangos.NewMessage(proto.Size(r))
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(m.Body[:0], r)
	if err != nil {
		m.Free()
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	m.Body = b
	return m, nil
}

// decode unmarshals a reply and frees m. The reply shares its bytes with
// a copy of m's body, one allocation where a message that is not given
// back to mangos' pool costs three; a body beyond the pool's largest
// messages is shared as it is, uncopied, and m is left to the collector.
func decode(m *mangos.Message) (*wire.Reply, error) {
	b := m.Body
	if len(b) <= pooledMessage {
		b = bytes.Clone(b)
		m.Free()
	}
	// One allocation for the reply and its headers, where they fit.
	x := new(struct {
		r    wire.Reply
		room wire.HeaderRoom
	})
	if err := x.r.UnmarshalSharedIn(b, &x.room); err != nil {
		return nil, err
	}
	return &x.r, nil
}

// pooledMessage is the largest body of the messages mangos keeps for reuse.
const pooledMessage = 64 << 10
