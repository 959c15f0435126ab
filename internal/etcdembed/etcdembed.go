package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/griddle-mesh/griddle/internal/logging"
	"github.com/griddle-mesh/griddle/internal/loopback"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrEtcdembedConfig means a Config field is invalid; the message names the field.
	ErrEtcdembedConfig = errors.New("etcdembed: invalid config")
	// ErrEtcdembedStart means the server could not be started or did not
	// become ready before the context ended.
	ErrEtcdembedStart = errors.New("etcdembed: start failed")
	// ErrEtcdembedClosed is returned by Server.Client after Close.
	ErrEtcdembedClosed = errors.New("etcdembed: server closed")
)

// memberName is the name of the single member. It is stored in Dir, so it
// must not change between restarts on the same Dir.
const memberName = "griddle"

// bindAttempts is how many times Start picks fresh free ports when a port it
// picked was taken by someone else before etcd could bind it.
const bindAttempts = 5

// Config describes an embedded etcd server. The zero value is invalid: Dir
// is required.
type Config struct {
	// Dir is the data directory (required). It is created if missing.
	Dir string
	// ClientAddr is the host:port clients connect to. An empty host means
	// 127.0.0.1; "" or port 0 means a free port chosen at Start.
	ClientAddr string
	// PeerAddr is the host:port of the raft peer URL, with the same defaults
	// as ClientAddr. A single member never dials it, but etcd must bind it.
	PeerAddr string
	// Logger receives etcd's own logs. Only errors are forwarded unless
	// Verbose is set, which forwards info and above. Nil means slog.Default().
	Logger *slog.Logger
	// Verbose forwards etcd's info and warning logs too.
	Verbose bool
	// UnsafeNoFsync turns off fsync: faster, but a machine crash can lose or
	// corrupt data. For tests only.
	UnsafeNoFsync bool
	// LoopbackOnly refuses a ClientAddr or PeerAddr that is not on this
	// machine's loopback (griddle up's etcd answers this machine only).
	LoopbackOnly bool
	// CertFile and KeyFile (PEM), when set, serve clients over TLS
	// (https:// endpoints).
	CertFile, KeyFile string
	// ClientCAFile (PEM), with CertFile, makes every client present a
	// certificate it signed (etcd's --client-cert-auth).
	ClientCAFile string
}

// Validate reports the first invalid field, wrapping ErrEtcdembedConfig. It
// does no I/O.
func (c Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("%w: Dir is required", ErrEtcdembedConfig)
	}
	if _, _, err := splitAddr(c.ClientAddr); err != nil {
		return fmt.Errorf("%w: ClientAddr %q: %w", ErrEtcdembedConfig, c.ClientAddr, err)
	}
	if _, _, err := splitAddr(c.PeerAddr); err != nil {
		return fmt.Errorf("%w: PeerAddr %q: %w", ErrEtcdembedConfig, c.PeerAddr, err)
	}
	if c.LoopbackOnly {
		for name, addr := range map[string]string{"ClientAddr": c.ClientAddr, "PeerAddr": c.PeerAddr} {
			if host, _, _ := splitAddr(addr); !loopback.Host(host) {
				return fmt.Errorf("%w: %s %q: not a loopback address", ErrEtcdembedConfig, name, addr)
			}
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") || (c.ClientCAFile != "" && c.CertFile == "") {
		return fmt.Errorf("%w: CertFile and KeyFile go together, and ClientCAFile needs them", ErrEtcdembedConfig)
	}
	if c.ClientAddr != "" && c.ClientAddr == c.PeerAddr {
		if _, port, _ := splitAddr(c.ClientAddr); port != 0 {
			return fmt.Errorf("%w: ClientAddr and PeerAddr are both %q", ErrEtcdembedConfig, c.ClientAddr)
		}
	}
	return nil
}

// splitAddr parses host:port; "" gives ("127.0.0.1", 0). Port 0 means "pick one".
func splitAddr(addr string) (host string, port int, err error) {
	if addr == "" {
		return "127.0.0.1", 0, nil
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	if h == "" {
		h = "127.0.0.1"
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, n, nil
}

// Server is a running embedded etcd. Its methods are safe for concurrent use.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	zlog      *zap.Logger
	quiet     *atomic.Bool // silences etcd's logs once Close has begun

	closeOnce sync.Once
	mu        sync.Mutex
	closed    bool
	tls       bool // clients need TLS: Client cannot make one
}

// Start starts an etcd server as described by cfg and returns once it
// serves clients (it has elected itself leader). If ctx ends first, the
// half-started server is stopped and the error wraps both ErrEtcdembedStart
// and ctx.Err(). The caller must Close the returned Server.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	level := zapcore.ErrorLevel
	if cfg.Verbose {
		level = zapcore.InfoLevel
	}
	quiet := new(atomic.Bool)
	zlog := logging.Zap(lg, level, quiet)

	var lastErr error
	for range bindAttempts {
		ec, err := embedConfig(cfg, zlog)
		if err != nil {
			return nil, err
		}
		e, err := embed.StartEtcd(ec)
		if err != nil {
			lastErr = err
			if isAddrInUse(err) && pickedPorts(cfg) {
				continue
			}
			return nil, fmt.Errorf("%w: %w", ErrEtcdembedStart, err)
		}
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			e.Close()
			return nil, fmt.Errorf("%w: %w", ErrEtcdembedStart, err)
		case <-ctx.Done():
			e.Close()
			return nil, fmt.Errorf("%w: not ready: %w", ErrEtcdembedStart, ctx.Err())
		}
		eps := make([]string, 0, len(ec.AdvertiseClientUrls))
		for _, u := range ec.AdvertiseClientUrls {
			eps = append(eps, u.String())
		}
		return &Server{etcd: e, endpoints: eps, zlog: zlog, quiet: quiet, tls: cfg.CertFile != ""}, nil
	}
	return nil, fmt.Errorf("%w: no free ports after %d attempts: %w", ErrEtcdembedStart, bindAttempts, lastErr)
}

// pickedPorts reports whether Start chooses at least one of the ports, so a
// bind failure may be retried with new ones.
func pickedPorts(cfg Config) bool {
	_, cp, _ := splitAddr(cfg.ClientAddr)
	_, pp, _ := splitAddr(cfg.PeerAddr)
	return cp == 0 || pp == 0
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// embedConfig builds etcd's configuration, choosing free ports where cfg
// leaves them open.
func embedConfig(cfg Config, zlog *zap.Logger) (*embed.Config, error) {
	cu, err := listenURL(cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: ClientAddr: %w", ErrEtcdembedStart, err)
	}
	pu, err := listenURL(cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: PeerAddr: %w", ErrEtcdembedStart, err)
	}
	ec := embed.NewConfig()
	ec.Name = memberName
	ec.Dir = cfg.Dir
	if cfg.CertFile != "" {
		cu.Scheme = "https"
		ec.ClientTLSInfo.CertFile, ec.ClientTLSInfo.KeyFile = cfg.CertFile, cfg.KeyFile
		if cfg.ClientCAFile != "" {
			ec.ClientTLSInfo.TrustedCAFile = cfg.ClientCAFile
			ec.ClientTLSInfo.ClientCertAuth = true
		}
	}
	ec.ListenClientUrls = []url.URL{cu}
	ec.AdvertiseClientUrls = []url.URL{cu}
	ec.ListenPeerUrls = []url.URL{pu}
	ec.AdvertisePeerUrls = []url.URL{pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.EnableGRPCGateway = false
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zlog)
	return ec, nil
}

// listenURL turns addr into an http URL, replacing port 0 by a port that was
// free a moment ago (found by listening on :0 and closing).
func listenURL(addr string) (url.URL, error) {
	host, port, err := splitAddr(addr)
	if err != nil {
		return url.URL{}, err
	}
	if port == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return url.URL{}, err
		}
		port = l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return url.URL{}, err
		}
	}
	return url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port))}, nil
}

// Endpoints returns the client URLs, e.g. http://127.0.0.1:41234. They stay
// valid for the Server's life; the caller must not modify the slice.
func (s *Server) Endpoints() []string { return s.endpoints }

// ClientAddr returns the host:port clients connect to, for restarting a
// server on the same address.
func (s *Server) ClientAddr() string {
	return s.etcd.Config().AdvertiseClientUrls[0].Host
}

// PeerAddr returns the host:port of the peer URL, for restarting a server on
// the same address.
func (s *Server) PeerAddr() string {
	return s.etcd.Config().AdvertisePeerUrls[0].Host
}

// Client returns a new client of this server, after checking within ctx that
// the server answers. The caller owns the client and must Close it; ctx only
// bounds the check, not the client's life.
func (s *Server) Client(ctx context.Context) (*clientv3.Client, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrEtcdembedClosed
	}
	if s.tls {
		return nil, errors.New("etcdembed: client: the server serves TLS; dial it with clientv3 and its CA")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      s.zlog,
	})
	if err != nil {
		return nil, fmt.Errorf("etcdembed: client: %w", err)
	}
	if _, err := cli.Status(ctx, s.endpoints[0]); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("etcdembed: client: %w", err)
	}
	return cli, nil
}

// Close stops the server and waits for it. Open client streams (watches) are
// cut after etcd's request timeout at most. It is idempotent and always
// returns nil; the error is there for io.Closer.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.quiet.Store(true)
		s.etcd.Close()
	})
	return nil
}
