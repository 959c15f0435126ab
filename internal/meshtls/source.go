package meshtls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrPeer is wrapped by every refusal of a peer's certificate.
var ErrPeer = errors.New("meshtls: peer refused")

// DefaultReload is how often a Source looks for new files.
const DefaultReload = time.Second

// Options tune a Source. The zero value is valid.
type Options struct {
	// Reload is how often the files are checked for changes (0:
	// DefaultReload; negative: never, the files are read once).
	Reload time.Duration
	// Want, when set, checks the identity of every certificate loaded,
	// the first and each rotated one (ok is false for a certificate
	// without an identity). A certificate it refuses is not used: Open
	// fails, and a rotation keeps the certificate in use.
	Want func(id Identity, ok bool) error
	// Logger reports rotations and files that could not be loaded.
	Logger *slog.Logger
}

// Source is the TLS material of one process, kept current from its files:
// a certificate rewritten on disk (a renewal by `griddle ca issue`, say)
// is used for every handshake after the next check, while connections
// already made stay up, so a rotation drops no request. The configurations
// it returns read the current material at each handshake. It owns one
// goroutine, which Close stops.
type Source struct {
	files Files
	opts  Options
	cur   atomic.Pointer[material]
	peers peerTable

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// material is one loaded set of files.
type material struct {
	cert  *tls.Certificate
	pool  *x509.CertPool
	id    Identity
	hasID bool
	stamp []byte // what the files looked like when read
}

// Open loads f and, unless opts.Reload is negative, watches it until
// Close. It is nil, nil when f is not enabled.
func Open(f Files, opts Options) (*Source, error) {
	if err := f.Validate(); err != nil || !f.Enabled() {
		return nil, err
	}
	if opts.Reload == 0 {
		opts.Reload = DefaultReload
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{files: f, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	if opts.Reload < 0 {
		close(s.done)
		return s, nil
	}
	go s.watch()
	return s, nil
}

// Close stops watching the files. Configurations already handed out keep
// the last material.
func (s *Source) Close() {
	if s == nil {
		return
	}
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// Identity is the identity of the certificate in use; ok is false for a
// certificate without one.
func (s *Source) Identity() (Identity, bool) {
	m := s.cur.Load()
	return m.id, m.hasID
}

// Leaf is the certificate in use.
func (s *Source) Leaf() *x509.Certificate { return s.cur.Load().cert.Leaf }

func (s *Source) watch() {
	defer close(s.done)
	t := time.NewTicker(s.opts.Reload)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.Reload()
	}
}

// Reload reads the files again if they changed since they were last read,
// and reports whether new material is now in use. A set that does not
// load (a key that does not match its certificate while the two are being
// rewritten, say) is logged and tried again at the next check.
func (s *Source) Reload() bool {
	old := s.cur.Load()
	stamp, err := s.stamp()
	if err != nil || bytes.Equal(stamp, old.stamp) {
		return false
	}
	m, err := s.load()
	if err != nil {
		s.opts.Logger.Warn("new TLS files not used; keeping the certificate in use", "cert", s.files.Cert, "err", err)
		return false
	}
	s.cur.Store(m)
	s.opts.Logger.Info("TLS certificate rotated", "cert", s.files.Cert, "identity", m.id.String(), "serial", m.cert.Leaf.SerialNumber.String(), "not_after", m.cert.Leaf.NotAfter)
	return true
}

// stamp summarises the files' sizes and modification times.
func (s *Source) stamp() ([]byte, error) {
	var b []byte
	for _, p := range []string{s.files.Cert, s.files.Key, s.files.CA} {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		b = fmt.Appendf(b, "%d:%d;", st.Size(), st.ModTime().UnixNano())
	}
	return b, nil
}

func (s *Source) load() (*material, error) {
	stamp, err := s.stamp()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	cert, pool, err := s.files.load()
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: --tls-cert: %w", ErrConfig, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: --tls-cert is not signed by --tls-ca: %w", ErrConfig, err)
	}
	m := &material{cert: cert, pool: pool, stamp: stamp}
	m.id, m.hasID = IdentityOf(cert.Leaf)
	if s.opts.Want != nil {
		if err := s.opts.Want(m.id, m.hasID); err != nil {
			return nil, fmt.Errorf("%w: --tls-cert: %w", ErrConfig, err)
		}
	}
	return m, nil
}

// Server is the configuration of a listener: TLS 1.3, the peer's
// certificate required and verified against the current CA. The identity
// each verified peer presented is kept for Peer.
func (s *Source) Server() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Unused (GetConfigForClient decides), but mangos's listener
		// refuses a configuration without a certificate.
		Certificates: []tls.Certificate{*s.cur.Load().cert},
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.cur.Load()
			var remote string
			if hi.Conn != nil {
				remote = hi.Conn.RemoteAddr().String()
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*m.cert},
				ClientCAs:    m.pool,
				ClientAuth:   tls.RequireAndVerifyClientCert,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if remote != "" && len(cs.PeerCertificates) > 0 {
						id, ok := IdentityOf(cs.PeerCertificates[0])
						s.peers.put(remote, id, ok)
					}
					return nil
				},
			}, nil
		},
	}
}

// Peer returns the identity the peer at remote presented in its TLS
// handshake with a Server configuration, and forgets it: call it once per
// connection, once the handshake is done (mangos: when the pipe attaches,
// with the pipe's mangos.OptionRemoteAddr). ok is false for a peer that
// presented no identity or is not known.
//
// mangos's tls+tcp listener records the connection's state before the
// handshake, so the peer's certificate is not on the pipe: this is how a
// listener learns it.
func (s *Source) Peer(remote net.Addr) (Identity, bool) {
	if s == nil || remote == nil {
		return Identity{}, false
	}
	return s.peers.take(remote.String())
}

// Client is the configuration of a dialer that expects any workload of
// the mesh (see ClientFor).
func (s *Source) Client() *tls.Config { return s.ClientFor("", "") }

// ClientFor is the configuration of a dialer toward an instance of
// service at the mangos address addr: it presents the current
// certificate and verifies the peer's against the current CA. A peer
// certificate with an identity must be of service (any service when
// service is ""); one without an identity (a CA the operator brought)
// must be valid for addr's host instead.
func (s *Source) ClientFor(service, addr string) *tls.Config {
	host := hostOf(addr)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.cur.Load().cert, nil
		},
		// The chain is verified below, against the CA in use at the time
		// of the handshake, which the standard verification cannot read.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return s.verifyServer(cs, service, host)
		},
	}
}

func (s *Source) verifyServer(cs tls.ConnectionState, service, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no certificate", ErrPeer)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.cur.Load().pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("%w: %w", ErrPeer, err)
	}
	if id, ok := IdentityOf(leaf); ok {
		if service != "" && (id.Service != service || id.IsEdge()) {
			return fmt.Errorf("%w: the instance of %s presented the certificate of %s", ErrPeer, service, id)
		}
		return nil
	}
	if host == "" {
		host = cs.ServerName
	}
	if host == "" {
		return fmt.Errorf("%w: a certificate without an identity, and no host name to check it against", ErrPeer)
	}
	if err := leaf.VerifyHostname(host); err != nil {
		return fmt.Errorf("%w: %w", ErrPeer, err)
	}
	return nil
}

// hostOf is the host of a mangos URL such as tls+tcp://10.0.0.7:7001.
func hostOf(addr string) string {
	u, err := url.Parse(addr)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// peerTable holds the identities of verified peers by remote address
// until the connection's owner takes them. Entries nobody takes (a
// handshake that failed after verification) go after peerTTL.
type peerTable struct {
	mu sync.Mutex
	m  map[string]peerEntry
}

type peerEntry struct {
	id Identity
	ok bool
	at time.Time
}

const peerTTL = time.Minute

func (t *peerTable) put(remote string, id Identity, ok bool) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]peerEntry)
	}
	if len(t.m) > 64 {
		for k, e := range t.m {
			if now.Sub(e.at) > peerTTL {
				delete(t.m, k)
			}
		}
	}
	t.m[remote] = peerEntry{id: id, ok: ok, at: now}
}

func (t *peerTable) take(remote string) (Identity, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, found := t.m[remote]
	delete(t.m, remote)
	return e.id, found && e.ok
}
