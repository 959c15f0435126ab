package plugins

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
	"strings"
	"sync"
	"time"

	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/peercred"
	"github.com/griddle-mesh/griddle/internal/pluginproto"
	"github.com/griddle-mesh/griddle/internal/shmpipe"
	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// SDKVersion is the version of this SDK, reported to the sidecar.
const SDKVersion = "0.1.0"

const (
	// parentPollInterval is how often the handler checks that the sidecar
	// that started it is still its parent.
	parentPollInterval = 250 * time.Millisecond
	// shutdownGrace bounds how long in-flight requests may run once the
	// sidecar has asked the handler to stop. It stays under go-plugin's 2s
	// wait before it kills the process.
	shutdownGrace = 1500 * time.Millisecond
)

// Serve runs h as a Griddle handler and does not return: the process exits
// when the sidecar stops it (status 0), when the sidecar dies (status 1), or
// when it cannot serve (status 1, reason on stderr).
//
// h serves each request as a real *http.Request, answering through an
// http.ResponseWriter that is also an http.Flusher; requests arrive from
// the sidecar on a few long-lived connections (package internal/hop; each
// a shared-memory pipe the sidecar offers on the handler's unix socket,
// package internal/shmpipe), and the handler's own calls through Mesh go
// back on the same connections. Each request's context carries the sidecar's deadline,
// is cancelled when the sidecar gives up on the request, and carries what
// outbound calls through Mesh must propagate. Run by hand rather than by a sidecar, the binary
// prints how to start it and exits with status 1.
//
// Options declare what the handler needs from its sidecar, such as the
// events it subscribes to; an invalid option prints why and exits with
// status 1.
func Serve(h http.Handler, opts ...Option) {
	os.Exit(serve(h, os.Stderr, opts...))
}

// Option declares something the handler needs from its sidecar.
type Option func(*options) error

type options struct {
	subs []*pluginproto.Subscription
}

func (o *options) paths() []string {
	var ps []string
	for _, s := range o.subs {
		ps = append(ps, s.GetPath())
	}
	return ps
}

// Subscribe asks for the events publisher publishes on topic, delivered in
// order, at least once, as HTTP POSTs to path (with X-Griddle-Event-Id,
// -Seq, -Topic and -Publisher headers; any 2xx acknowledges). The sidecar
// needs a store (--store) to keep the subscription's cursor.
func Subscribe(publisher, topic, path string) Option {
	return func(o *options) error {
		if !eventlog.ValidName(publisher) || !eventlog.ValidTopic(topic) || !strings.HasPrefix(path, "/") {
			return fmt.Errorf("plugins: Subscribe(%q, %q, %q): want a service name, a topic and a path starting with /", publisher, topic, path)
		}
		o.subs = append(o.subs, &pluginproto.Subscription{Publisher: publisher, Topic: topic, Path: path})
		return nil
	}
}

// EnvStandalone, when set to host:port, makes Serve run the handler alone
// under a plain net/http server on that address, without a sidecar: for
// local debugging and as the baseline of benchmarks. Mesh calls then fail
// with ErrNoMesh.
const EnvStandalone = "GRIDDLE_STANDALONE"

// serve is Serve returning its exit status.
func serve(h http.Handler, stderr io.Writer, opts ...Option) int {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	if addr := os.Getenv(EnvStandalone); addr != "" {
		srv := &http.Server{Addr: addr, Handler: &contextHandler{h: h, mesh: newMesh(false)}, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		fmt.Fprintf(stderr, "serving alone on %s (%s is set): no sidecar, no mesh\n", addr, EnvStandalone)
		err := srv.ListenAndServe()
		fmt.Fprintf(stderr, "griddle handler: %v\n", err)
		return 1
	}
	hs := pluginproto.Handshake()
	if os.Getenv(hs.MagicCookieKey) != hs.MagicCookieValue {
		name := filepath.Base(os.Args[0])
		fmt.Fprintf(stderr, "%s is a Griddle handler and is not meant to be run by hand.\n"+
			"Start it with `griddle sidecar --plugin %s` (or `griddle up`), or test it with package plugintest.\n"+
			"To run it alone, without the mesh: %s=127.0.0.1:8000 %s\n",
			name, os.Args[0], EnvStandalone, os.Args[0])
		return 1
	}

	sock, removeSock, err := handlerSocket()
	if err != nil {
		fmt.Fprintf(stderr, "griddle handler: %v\n", err)
		return 1
	}
	defer removeSock()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintf(stderr, "griddle handler: listen: %v\n", err)
		return 1
	}

	mesh := newMesh(true)
	hsrv := &hopServer{mesh: mesh, ln: ln, parentOnly: true, srv: hop.Server{
		Handler:          (&contextHandler{h: h, mesh: mesh, deliveries: o.paths()}).serveEnvelope,
		Context:          mesh.inbound,
		Logger:           slog.New(slog.NewJSONHandler(stderr, nil)),
		StripMeshHeaders: true,
	}}

	// exit carries the reason the process must stop without the sidecar
	// asking: its parent died or the listener failed.
	exit := make(chan error, 2)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := hsrv.accept(); err != nil {
			exit <- fmt.Errorf("listener: %w", err)
		}
	})
	wg.Go(func() {
		if watchParent(ctx, os.Getppid(), parentPollInterval) {
			exit <- errParentGone
		}
	})
	wg.Go(func() {
		select {
		case err := <-exit:
			fmt.Fprintf(stderr, "griddle handler: %v\n", err)
			removeSock()
			os.Exit(1)
		case <-ctx.Done():
		}
	})

	// plugin.Serve returns once the sidecar shuts the plugin down.
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: hs,
		Plugins:         pluginproto.Plugins(&describer{socket: sock, subs: o.subs}),
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "griddle-handler",
			Level:      hclog.Info,
			Output:     stderr,
			JSONFormat: true,
		}),
	})

	status := 0
	if !hsrv.shutdown(shutdownGrace) {
		status = 1
	}
	cancel()
	wg.Wait()
	return status
}

var errParentGone = errors.New("the sidecar that started this handler is gone")

// watchParent reports true once the process's parent is no longer ppid,
// polling every interval, and false when ctx is done first.
func watchParent(ctx context.Context, ppid int, interval time.Duration) bool {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			if os.Getppid() != ppid {
				return true
			}
		}
	}
}

// handlerSocket returns the path to serve HTTP on: the sidecar's choice
// from the environment, or a fresh private temporary path. remove deletes
// what handlerSocket created and is safe to call more than once.
func handlerSocket() (path string, remove func(), err error) {
	if p := os.Getenv(pluginproto.EnvHandlerSocket); p != "" {
		// A socket left by a previous run of this handler blocks Listen.
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(p)
		}
		return p, func() { _ = os.Remove(p) }, nil
	}
	dir, err := os.MkdirTemp("", "griddle-handler-")
	if err != nil {
		return "", nil, fmt.Errorf("socket directory: %w", err)
	}
	return filepath.Join(dir, "http.sock"), func() { _ = os.RemoveAll(dir) }, nil
}

// describer answers the sidecar's Describe call.
type describer struct {
	pluginproto.UnimplementedHandlerServer
	socket string
	subs   []*pluginproto.Subscription
}

func (d *describer) Describe(context.Context, *pluginproto.DescribeRequest) (*pluginproto.DescribeResponse, error) {
	return &pluginproto.DescribeResponse{HttpSocket: d.socket, SdkVersion: SDKVersion, Subscriptions: d.subs}, nil
}

// hopServer accepts the sidecar's connections and serves the requests on
// them until shutdown.
type hopServer struct {
	mesh *MeshAPI
	ln   net.Listener
	srv  hop.Server
	// parentOnly refuses connections from any process but the one that
	// started this one (its sidecar).
	parentOnly bool

	mu       sync.Mutex
	closing  bool
	starting map[net.Conn]struct{} // accepted, not yet serving: see start
	inflight sync.WaitGroup
}

// accept serves each connection the sidecar opens; it returns nil once
// shutdown has closed the listener.
func (s *hopServer) accept() error {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			return err
		}
		// Only the sidecar that started this process may connect.
		if err := s.checkPeer(nc); err != nil {
			_ = nc.Close()
			slog.Warn("griddle: a connection to the handler's socket from another process refused", "error", err)
			continue
		}
		s.mu.Lock()
		if s.starting == nil {
			s.starting = map[net.Conn]struct{}{}
		}
		s.starting[nc] = struct{}{}
		s.mu.Unlock()
		go s.start(nc)
	}
}

// start serves a connection the sidecar opened: on the shared-memory pipe
// the sidecar offers first (internal/shmpipe), or on the socket itself
// for a sidecar that offers none.
func (s *hopServer) start(nc net.Conn) {
	rwc, err := upgrade(nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.starting, nc)
	switch {
	case err != nil:
		_ = nc.Close()
		if !s.closing {
			slog.Warn("griddle: a connection from the sidecar failed to start", "error", err)
		}
	case s.closing:
		_ = rwc.Close()
	default:
		s.mesh.conns.add(hop.New(rwc, hop.Config{Accepting: true, Serve: s.serve, Unary: unary}))
	}
}

// upgrade is nc as the hop runs on it: the pipe the sidecar offers, or nc
// itself with the bytes the check for an offer read.
func upgrade(nc net.Conn) (io.ReadWriteCloser, error) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return nc, nil
	}
	pipe, prefix, err := shmpipe.Accept(uc, plainAfter)
	switch {
	case err != nil:
		return nil, err
	case pipe != nil:
		return pipe, nil
	case len(prefix) > 0:
		return hop.Replayed{Conn: nc, R: io.MultiReader(bytes.NewReader(prefix), nc)}, nil
	}
	return nc, nil
}

// plainAfter is how long a connection may stay silent before it is served
// as a plain one: a sidecar that offers a pipe does so as it connects, and
// one that does not may have nothing to send until a request comes, while
// the handler's own calls need the connection.
const plainAfter = 100 * time.Millisecond

// checkPeer refuses a connection from another process than the parent,
// with parentOnly.
func (s *hopServer) checkPeer(nc net.Conn) error {
	if !s.parentOnly {
		return nil
	}
	return peercred.Check(nc, os.Getppid(), os.Getuid())
}

// serve serves one request, counted for shutdown.
func (s *hopServer) serve(st *hop.Stream) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		st.Close()
		return
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()
	s.srv.Serve(st)
}

// shutdown stops taking requests, waits up to grace for those in flight,
// then closes the connections. It reports whether all of them finished.
func (s *hopServer) shutdown(grace time.Duration) bool {
	s.mu.Lock()
	s.closing = true
	for nc := range s.starting {
		_ = nc.Close()
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	ok := true
	select {
	case <-done:
	case <-t.C:
		ok = false
	}
	s.mesh.conns.closeAll()
	return ok
}
