package launch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/loopback"
	"github.com/griddle-mesh/griddle/internal/meshtls"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// storeIdleTimeout closes a store client's idle connection.
const storeIdleTimeout = 2 * time.Minute

// StoreServerConfig configures `griddle store`.
type StoreServerConfig struct {
	Listen string // host:port
	Dir    string // the database's directory
	// Tokens, when set, are the per-service tokens sidecars authenticate
	// with (--tokens).
	Tokens *storehttp.Tokens
	// TLS, when set, serves over TLS and authenticates sidecars by the
	// workload identity of their client certificates (--tls-*).
	TLS *meshtls.Source
	// MemTableMB is the size in MiB of each of Badger's two memtables
	// (--memtable-mb); 0 means badgerstore.DefaultMemTableSize. It bounds
	// the store's anonymous memory (both are reserved whole, and their
	// pages become resident as writes fill them) and the largest
	// transaction (see badgerstore.Config.MemTableSize).
	MemTableMB int
}

// StoreServerConfig.MemTableMB: its default, badgerstore's minimum, and a
// ceiling past which the two memtables alone would take gigabytes.
const (
	DefaultStoreMemTableMB = badgerstore.DefaultMemTableSize >> 20
	MinStoreMemTableMB     = 8
	MaxStoreMemTableMB     = 1024
)

// ErrNoCredentials is a store configured without any way to authenticate
// sidecars: it would serve every service's key space to any process that
// reaches its port.
var ErrNoCredentials = errors.New("store: no credentials: give --tokens FILE (one \"SERVICE TOKEN\" a line; sidecars: --store-token-file) or --tls-cert, --tls-key and --tls-ca (sidecars authenticated by their certificates)")

// Validate reports a configuration that cannot or must not run: every
// request needs credentials (Tokens or TLS), and without TLS the server
// listens on loopback only, where tokens do not cross a network in the
// clear.
func (c StoreServerConfig) Validate() error {
	if c.Dir == "" {
		return errors.New("store: --dir: required")
	}
	if c.Tokens == nil && c.TLS == nil {
		return ErrNoCredentials
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("store: --listen: %w", err)
	}
	if c.TLS == nil && !loopback.Host(host) {
		return fmt.Errorf("store: --listen: %s is not a loopback address: serving beyond this machine needs --tls-cert, --tls-key and --tls-ca", c.Listen)
	}
	if c.MemTableMB != 0 && (c.MemTableMB < MinStoreMemTableMB || c.MemTableMB > MaxStoreMemTableMB) {
		return fmt.Errorf("store: --memtable-mb: %d: want %d to %d", c.MemTableMB, MinStoreMemTableMB, MaxStoreMemTableMB)
	}
	if err := c.badger(nil).Validate(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// badger is the database's configuration.
func (c StoreServerConfig) badger(log *slog.Logger) badgerstore.Config {
	return badgerstore.Config{Dir: c.Dir, Logger: log, MemTableSize: int64(c.MemTableMB) << 20}
}

// StoreServer runs `griddle store`: it owns an embedded Badger database in
// cfg.Dir and serves it to the sidecars over HTTP (or HTTPS with cfg.TLS)
// at cfg.Listen (their --store http(s)://listen), until ctx ends. Every
// request needs credentials (cfg.Tokens, cfg.TLS): each sidecar works only
// in its own service's key space, and reads no more of others' than their
// event logs.
func StoreServer(ctx context.Context, cfg StoreServerConfig, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	b, err := badgerstore.Open(ctx, cfg.badger(log))
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer b.Close()
	opts := []storehttp.Option{storehttp.WithLogger(log)}
	var auths []storehttp.Authenticator
	if cfg.Tokens != nil {
		auths = append(auths, cfg.Tokens.Authenticate)
	}
	if cfg.TLS != nil {
		auths = append(auths, storehttp.ClientCertificate)
	}
	opts = append(opts, storehttp.WithAuth(storehttp.AnyOf(auths...), []byte(events.KeyPrefix)),
		storehttp.WithMarks([]byte(eventlog.RegistrationsPrefix)))
	srv := storehttp.NewServer(b, opts...)
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("store: --listen: %w", err)
	}
	// On loopback (no TLS), its goroutines and heap on /debug/pprof/
	// (soak tests read them); idle connections are closed after
	// storeIdleTimeout, so that clients that went away leave nothing
	// behind.
	var h http.Handler = srv
	if cfg.TLS == nil {
		mux := http.NewServeMux()
		mux.Handle("/", srv)
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		h = mux
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: storeIdleTimeout}
	if cfg.TLS != nil {
		hs.TLSConfig = storeServerTLS(cfg.TLS)
	}
	errc := make(chan error, 1)
	go func() {
		if cfg.TLS != nil {
			errc <- hs.ServeTLS(ln, "", "")
			return
		}
		errc <- hs.Serve(ln)
	}()
	log.Info("store serving", "listen", ln.Addr().String(), "dir", cfg.Dir, "tls", cfg.TLS != nil, "tokens", cfg.Tokens != nil)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("store: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = hs.Shutdown(sctx)
	<-errc
	return err
}

// storeServerTLS is src's server side, asking for client certificates but
// not requiring one, so a sidecar with a token and none is heard (and
// refused when it has neither).
func storeServerTLS(src *meshtls.Source) *tls.Config {
	c := src.Server()
	get := c.GetConfigForClient
	c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		cc, err := get(hi)
		if cc != nil {
			cc.ClientAuth = tls.VerifyClientCertIfGiven
			cc.NextProtos = []string{"http/1.1"}
		}
		return cc, err
	}
	return c
}
