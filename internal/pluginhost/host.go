package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/peercred"
	"github.com/griddle-mesh/griddle/internal/pluginproto"
	"github.com/griddle-mesh/griddle/internal/runtimeenv"
	"github.com/griddle-mesh/griddle/internal/shmpipe"
	"github.com/griddle-mesh/griddle/internal/wire"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// Errors returned by Host. Check with errors.Is.
var (
	// ErrUnavailable reports that a request never reached the handler: no
	// handler process is up, or connecting to it failed. Such a request is
	// always safe to retry elsewhere.
	ErrUnavailable = errors.New("pluginhost: handler unavailable")
	// ErrStart reports that a handler process could not be started: launch,
	// handshake or Describe failed.
	ErrStart = errors.New("pluginhost: handler failed to start")
	// ErrClosed reports a call on a closed Host.
	ErrClosed = errors.New("pluginhost: host closed")
	// ErrStarted reports a second call to Start.
	ErrStarted = errors.New("pluginhost: already started")
)

const (
	// stableAfter is how long a handler must run before a crash restarts
	// it after MinBackoff again rather than after the grown delay.
	stableAfter = 10 * time.Second
	// pingInterval and pingTimeout drive the health check (go-plugin's
	// Ping: the gRPC health service on the plugin connection).
	pingInterval = time.Second
	pingTimeout  = 2 * time.Second
	// maxPingFailures consecutive failed pings make the host kill a
	// handler that is still running, so that it is restarted.
	maxPingFailures = 3
	// dialTimeout bounds connecting to the handler's socket.
	dialTimeout = 2 * time.Second
)

// Host runs one handler process and forwards HTTP requests to it. It starts
// the process through go-plugin, restarts it after a crash, and closes it on
// Close. All methods are safe for concurrent use.
type Host struct {
	cfg  Config
	log  *slog.Logger
	mesh hop.Server
	proc atomic.Pointer[proc] // the handler now up; nil when none

	restarts atomic.Int64
	dials    atomic.Int64

	mu      sync.Mutex // guards the fields below
	dir     string     // private socket directory, created by Start
	started bool
	closed  bool
	stop    context.CancelFunc // stops the supervisor
	done    chan struct{}      // closed when the supervisor has returned
}

// proc is one running handler process. Fields are immutable after launch.
type proc struct {
	client *plugin.Client
	rpc    *pluginproto.Client
	pid    int
	socket string
	// sdkVersion is the plugins SDK version the handler reported.
	sdkVersion string
	// subs are the event subscriptions the handler declared.
	subs    []Subscription
	started time.Time
	healthy atomic.Bool
	plain   atomic.Bool // it refused a shared-memory pipe: plain sockets only

	next  atomic.Uint32 // round robin over conns
	mu    sync.Mutex    // guards conns
	conns []*hop.Conn
}

var _ http.RoundTripper = (*Host)(nil)

// New validates cfg and returns a Host that has not started anything.
func New(cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// An absolute path keeps exec from searching PATH for a bare name.
	if abs, err := filepath.Abs(cfg.Path); err == nil {
		cfg.Path = abs
	}
	h := &Host{
		cfg: cfg,
		log: cfg.Logger.With("handler", filepath.Base(cfg.Path)),
	}
	h.mesh = hop.Server{Handler: noMesh, Logger: h.log}
	if cfg.Mesh != nil {
		h.mesh.Handler = func(w http.ResponseWriter, r *http.Request, _ *wire.Request) { cfg.Mesh.ServeHTTP(w, r) }
	}
	return h, nil
}

// Start launches the handler, completes the go-plugin handshake and waits
// until the handler answers Describe. It then starts the supervisor, which
// restarts the handler after a crash until Close. Config.StartTimeout bounds
// the launch and handshake; ctx also bounds the wait for Describe.
// Cancelling ctx after Start returns has no effect. Start may be called
// once; after a failed Start, call Close.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return ErrClosed
	case h.started:
		h.mu.Unlock()
		return ErrStarted
	}
	h.started = true
	dir, err := os.MkdirTemp("", "griddle-host-")
	if err != nil {
		h.mu.Unlock()
		return fmt.Errorf("%w: socket directory: %w", ErrStart, err)
	}
	h.dir = dir
	h.mu.Unlock()

	p, err := h.launch(ctx)
	if err != nil {
		return err
	}
	h.proc.Store(p)
	h.log.Info("handler started", "pid", p.pid, "sdk_version", p.sdkVersion)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		// Close ran while launching; it found no supervisor to stop.
		h.proc.Store(nil)
		p.closeConns()
		p.client.Kill()
		return ErrClosed
	}
	sctx, stop := context.WithCancel(context.Background())
	h.stop = stop
	h.done = make(chan struct{})
	go h.supervise(sctx, p, h.done)
	return nil
}

// RoundTrip sends r to the current handler process, its whole body read
// first, and returns the answer. The request's deadline is its context's.
// When no process is up or no connection to it works, the error wraps
// ErrUnavailable: the handler never saw the request. Any other error means
// the handler may have seen it.
func (h *Host) RoundTrip(r *http.Request) (*http.Response, error) {
	c, err := h.conn()
	if err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, err
	}
	return hop.RoundTrip(c, r, "")
}

// Do sends one envelope to the current handler process and returns its
// answer: payload is a marshalled wire.Request with its whole body, the
// answer a marshalled wire.Reply with its whole body (up to maxBody bytes).
// It waits until deadline at most (zero: no bound), or until done is
// closed (nil: never), and then cancels the request in the handler. Errors
// wrap ErrUnavailable when the handler never saw the request, hop.ErrTimeout
// past the deadline, hop.ErrCanceled when done was closed.
func (h *Host) Do(payload []byte, deadline time.Time, maxBody int, done <-chan struct{}) ([]byte, error) {
	c, err := h.conn()
	if err != nil {
		return nil, err
	}
	reply, sent, err := hop.Call(c, payload, deadline, maxBody, done)
	if err != nil && !sent {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return reply, err
}

// Go prepares in p, a zero Pending, a request to the handler whose answer
// goes to fn, as Do would return it, on the connection's reader (see
// hop.GoIn); p.Start sends it. Either failing means the handler never saw
// it: the error is then ErrUnavailable.
func (h *Host) Go(p *hop.Pending, deadline time.Time, maxBody int, fn hop.Whole) error {
	return h.pending(func(c *hop.Conn) error { return hop.GoIn(c, p, deadline, maxBody, fn) })
}

// GoParts prepares in p, a zero Pending, a request to the handler whose
// answer's first frame goes to fn on the connection's reader (see
// hop.GoPartsIn); p.Start sends it. Either failing means the handler
// never saw it: the error is then ErrUnavailable.
func (h *Host) GoParts(p *hop.Pending, deadline time.Time, fn hop.First) error {
	return h.pending(func(c *hop.Conn) error { return hop.GoPartsIn(c, p, deadline, fn) })
}

// pending opens a pending request with open on a connection to the handler.
func (h *Host) pending(open func(*hop.Conn) error) error {
	c, err := h.conn()
	if err != nil {
		return err
	}
	if err := open(c); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Open opens a stream to the handler and sends payload, a marshalled
// wire.Request, as its Request frame (see hop.Start); end says its body is
// whole. A handler that cannot be reached fails with ErrUnavailable.
func (h *Host) Open(payload []byte, end bool) (*hop.Stream, error) {
	c, err := h.conn()
	if err != nil {
		return nil, err
	}
	s, err := hop.Start(c, payload, end)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return s, nil
}

// Profile asks the current handler process for a CPU profile over d (in
// whole seconds, 1 to pluginproto.MaxProfileSeconds), in pprof's format.
func (h *Host) Profile(ctx context.Context, d time.Duration) ([]byte, error) {
	secs := int(d / time.Second)
	if secs < 1 || secs > pluginproto.MaxProfileSeconds {
		return nil, fmt.Errorf("pluginhost: profile: %v is not 1 to %d seconds", d, pluginproto.MaxProfileSeconds)
	}
	c, err := h.conn()
	if err != nil {
		return nil, err
	}
	b, err := hop.Unary(c, []byte{pluginproto.OpProfile, byte(secs)}, ctx.Done())
	switch {
	case err != nil:
		return nil, fmt.Errorf("pluginhost: profile: %w", err)
	case len(b) == 0:
		return nil, errors.New("pluginhost: profile: the handler is already taking one")
	}
	return b, nil
}

// Stats asks the current handler process for its runtime figures.
func (h *Host) Stats(ctx context.Context) (pluginproto.Stats, error) {
	var st pluginproto.Stats
	c, err := h.conn()
	if err != nil {
		return st, err
	}
	b, err := hop.Unary(c, []byte{pluginproto.OpStats}, ctx.Done())
	if err != nil {
		return st, fmt.Errorf("pluginhost: stats: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("pluginhost: stats: %w", err)
	}
	return st, nil
}

// conn picks a connection to the current handler, redialling one that
// broke while the process lives on.
func (h *Host) conn() (*hop.Conn, error) {
	p := h.proc.Load()
	if p == nil {
		return nil, fmt.Errorf("no handler process: %w", ErrUnavailable)
	}
	i := int(p.next.Add(1)) % h.cfg.Conns
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, fmt.Errorf("handler process stopping: %w", ErrUnavailable)
	}
	c := p.conns[i]
	if c.Err() == nil {
		return c, nil
	}
	c, err := h.dial(p)
	if err != nil {
		return nil, err
	}
	p.conns[i] = c
	return c, nil
}

// dial opens one connection to p's socket.
func (h *Host) dial(p *proc) (*hop.Conn, error) {
	h.dials.Add(1)
	nc, err := net.DialTimeout("unix", p.socket, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w: %w", p.socket, ErrUnavailable, err)
	}
	// Only the handler's own socket: not one another process put there.
	if err := peercred.Check(nc, p.pid, os.Getuid()); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("dial %s: %w: %w", p.socket, ErrUnavailable, err)
	}
	var rwc io.ReadWriteCloser = nc
	if !h.cfg.PlainSocket && !p.plain.Load() {
		pipe, err := shmpipe.Offer(nc.(*net.UnixConn), 0, dialTimeout)
		switch {
		case err == nil:
			rwc = pipe
		case errors.Is(err, shmpipe.ErrRefused) || errors.Is(err, shmpipe.ErrUnsupported):
			// Offer closed the socket: this handler gets plain ones.
			p.plain.Store(true)
			h.log.Warn("handler connections on the plain unix socket: the shared-memory pipe was refused", "pid", p.pid, "error", err)
			return h.dial(p)
		default:
			return nil, fmt.Errorf("dial %s: %w: %w", p.socket, ErrUnavailable, err)
		}
	}
	return hop.New(rwc, hop.Config{Serve: h.mesh.Serve, Unary: h.cfg.Unary, Quick: h.cfg.Quick}), nil
}

// closeConns closes p's connections; later picks find none.
func (p *proc) closeConns() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Healthy reports whether a handler process is up and its last health
// check succeeded.
func (h *Host) Healthy() bool {
	p := h.proc.Load()
	return p != nil && p.healthy.Load()
}

// PID returns the current handler's process id, or 0 when none is up.
func (h *Host) PID() int {
	if p := h.proc.Load(); p != nil {
		return p.pid
	}
	return 0
}

// Subscription is an event subscription a handler declared with
// plugins.Subscribe.
type Subscription struct {
	Publisher, Topic, Path string
}

// Subscriptions returns the event subscriptions the running handler
// declared (nil before Start). The slice is shared: do not modify it.
func (h *Host) Subscriptions() []Subscription {
	if p := h.proc.Load(); p != nil {
		return p.subs
	}
	return nil
}

// Restarts returns how many times the handler has been started again after
// it exited.
func (h *Host) Restarts() int { return int(h.restarts.Load()) }

// Dials returns how many connections to handler processes the host has
// tried to open: Config.Conns per start, and one for each connection that
// broke while its process lived on. Requests never open one.
func (h *Host) Dials() int64 { return h.dials.Load() }

// Close stops the supervisor, stops the handler (gracefully, then by kill
// after go-plugin's grace period), waits for it to exit and removes the
// socket directory. It is idempotent and returns nil.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	stop, done, dir := h.stop, h.done, h.dir
	h.mu.Unlock()

	if stop != nil {
		stop()
		<-done
	}
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	return nil
}

// supervise owns the running handler p and its successors: it health-checks
// the process, restarts it after it exits, and kills it when ctx is done.
// It closes done on return.
func (h *Host) supervise(ctx context.Context, p *proc, done chan<- struct{}) {
	defer close(done)
	backoff := h.cfg.MinBackoff
	for {
		h.watch(ctx, p)
		h.proc.Store(nil)
		p.closeConns()
		if ctx.Err() != nil {
			p.client.Kill()
			return
		}
		p.client.Kill() // reaps the exited process and its log readers
		ran := time.Since(p.started)
		if ran >= stableAfter {
			backoff = h.cfg.MinBackoff
		}
		h.log.Warn("handler exited; restarting", "pid", p.pid, "ran", ran.Round(time.Millisecond), "backoff", backoff)

		for {
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, h.cfg.MaxBackoff)
			next, err := h.launch(ctx)
			if err == nil {
				p = next
				break
			}
			if ctx.Err() != nil {
				return
			}
			h.log.Error("handler restart failed", "error", err, "backoff", backoff)
		}
		h.restarts.Add(1)
		h.proc.Store(p)
		h.log.Info("handler restarted", "pid", p.pid, "restarts", h.restarts.Load())
	}
}

// watch returns when p has exited or ctx is done. It pings p every
// pingInterval and kills it after maxPingFailures consecutive failures.
func (h *Host) watch(ctx context.Context, p *proc) {
	t := time.NewTicker(pingInterval)
	defer t.Stop()
	failures := 0
	health := grpc_health_v1.NewHealthClient(p.rpc.Conn)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.rpc.Exited():
			p.healthy.Store(false)
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		_, err := health.Check(pctx, &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
		cancel()
		if err == nil {
			failures = 0
			p.healthy.Store(true)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		p.healthy.Store(false)
		h.log.Warn("handler health check failed", "pid", p.pid, "error", err, "failures", failures)
		if failures >= maxPingFailures {
			h.log.Error("handler unresponsive; killing it", "pid", p.pid)
			if proc, err := os.FindProcess(p.pid); err == nil {
				_ = proc.Kill()
			}
		}
	}
}

// sleep waits for d and reports false if ctx is done first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// launch starts one handler process and returns it once it has answered
// Describe. On error nothing is left running.
func (h *Host) launch(ctx context.Context) (*proc, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StartTimeout)
	defer cancel()

	h.mu.Lock()
	dir := h.dir
	h.mu.Unlock()
	sock := filepath.Join(dir, "http.sock")

	cmd := exec.Command(h.cfg.Path, h.cfg.Args...)
	cmd.Env = append(handlerEnv(os.Environ(), h.cfg.PassEnv),
		pluginproto.EnvHandlerSocket+"="+sock,
		// go-plugin's own socket goes in the private directory too, so that
		// Close removes it even after the handler was killed.
		plugin.EnvUnixSocketDir+"="+dir,
	)
	// The handler runs with Griddle's runtime settings, unless the
	// environment it is given sets them (runtimeenv).
	cmd.Env = runtimeenv.With(append(cmd.Env, h.cfg.Env...))
	cmd.SysProcAttr = sysProcAttr()

	base := filepath.Base(h.cfg.Path)
	stdio := h.cfg.Logger.With("handler", base)
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginproto.Handshake(),
		Plugins:          pluginproto.Plugins(nil),
		Cmd:              cmd,
		SkipHostEnv:      true, // cmd.Env holds what the handler may see of the host's environment
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     h.cfg.StartTimeout,
		Logger:           newSlogAdapter(h.cfg.Logger, base),
		Stderr:           &lineLogger{l: stdio, stream: "stderr"},
		SyncStdout:       &lineLogger{l: stdio, stream: "stdout"},
		SyncStderr:       &lineLogger{l: stdio, stream: "stderr"},
	})
	p, err := h.handshake(ctx, client)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, h.cfg.Path, err)
	}
	return p, nil
}

func (h *Host) handshake(ctx context.Context, client *plugin.Client) (*proc, error) {
	cp, err := client.Client()
	if err != nil {
		return nil, err
	}
	raw, err := cp.Dispense(pluginproto.PluginName)
	if err != nil {
		return nil, err
	}
	rpc, ok := raw.(*pluginproto.Client)
	if !ok {
		return nil, pluginproto.ErrNotHandler
	}
	desc, err := rpc.Describe(ctx, &pluginproto.DescribeRequest{})
	if err != nil {
		return nil, fmt.Errorf("describe: %w", err)
	}
	if desc.GetHttpSocket() == "" {
		return nil, errors.New("describe: handler reported no HTTP socket")
	}
	p := &proc{
		client:     client,
		rpc:        rpc,
		socket:     desc.GetHttpSocket(),
		sdkVersion: desc.GetSdkVersion(),
		started:    time.Now(),
	}
	for _, s := range desc.GetSubscriptions() {
		p.subs = append(p.subs, Subscription{Publisher: s.GetPublisher(), Topic: s.GetTopic(), Path: s.GetPath()})
	}
	if rc := client.ReattachConfig(); rc != nil {
		p.pid = rc.Pid
	}
	for range h.cfg.Conns {
		c, err := h.dial(p)
		if err != nil {
			p.closeConns()
			return nil, err
		}
		p.conns = append(p.conns, c)
	}
	p.healthy.Store(true)
	return p, nil
}

// noMesh answers the handler's calls when the host serves no mesh.
func noMesh(w http.ResponseWriter, _ *http.Request, _ *wire.Request) {
	http.Error(w, "pluginhost: this host serves no mesh calls", http.StatusBadGateway)
}
