// Package launch wires Griddle's components to etcd and runs them: one
// function per command of the griddle binary, so that cmd/griddle holds no
// logic of its own.
package launch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/griddle-mesh/griddle/edge"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/dispatch"
	"github.com/griddle-mesh/griddle/internal/logging"
	"github.com/griddle-mesh/griddle/internal/meshtls"
	"github.com/griddle-mesh/griddle/internal/trace"
	"github.com/griddle-mesh/griddle/sidecar"
)

// syncWait bounds how long a component waits for its first view of etcd
// before it starts serving anyway.
const syncWait = 10 * time.Second

// Mesh is a process's shared view of the mesh: one etcd client, one
// discovery catalog, one dispatcher. Components started with it share them.
type Mesh struct {
	Etcd       *clientv3.Client
	Catalog    *discovery.Catalog
	Dispatcher *dispatch.Dispatcher
	Prefix     string
	// Tracer, when set, traces what is started with the Mesh (nil: nothing).
	Tracer *trace.Tracer

	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Etcd says how a component reaches etcd.
type Etcd struct {
	Endpoints []string
	// TLS, when set, is the client side of TLS toward etcd (its CA, and
	// the client certificate etcd's --client-cert-auth asks for).
	TLS *tls.Config
	// Username and Password log in with etcd's authentication (both or
	// neither).
	Username, Password string
}

// Validate reports a configuration that cannot work, naming the flag.
func (e Etcd) Validate() error {
	switch {
	case len(e.Endpoints) == 0:
		return errors.New("--etcd: at least one endpoint is required")
	case (e.Username == "") != (e.Password == ""):
		return errors.New("--etcd-user: needs a password (--etcd-password-file or GRIDDLE_ETCD_PASSWORD), and a password needs a user")
	}
	return nil
}

// Client dials etcd as e says; its client logs to log, in the process's format.
func (e Etcd) Client(log *slog.Logger) (*clientv3.Client, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            e.Endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		DialOptions:          discovery.DialOptions(),
		TLS:                  e.TLS,
		Username:             e.Username,
		Password:             e.Password,
		Logger:               logging.Zap(log, zapcore.WarnLevel, nil), // etcd's client in the process's own log format
	})
	if err != nil {
		return nil, fmt.Errorf("--etcd: %w", err)
	}
	return cli, nil
}

// Connect dials etcd and starts the catalog. It returns once the catalog
// has its first view of etcd or syncWait has passed (then it keeps trying
// in the background and says so in the log). Close releases it.
//
// mtls, when set, is this process's mesh identity: the client side of
// mutual TLS toward instances at tls+tcp:// addresses, each checked to be
// of the service it is registered for (see package meshtls).
//
// disp is what the process's dispatcher does beyond its defaults.
func Connect(ctx context.Context, etcd Etcd, prefix string, mtls *meshtls.Source, disp Dispatch, log *slog.Logger) (*Mesh, error) {
	cli, err := etcd.Client(log)
	if err != nil {
		return nil, err
	}
	m, err := newMesh(ctx, cli, prefix, mtls, disp, log)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return m, nil
}

// Dispatch is what a process's dispatcher (its calls to instances) does
// beyond the defaults. The zero value keeps them.
type Dispatch struct {
	// Eject5xx counts every 5xx answer of a handler as a failure of its
	// instance (--eject-5xx; dispatch.Config.Eject5xx): three in a row
	// eject it. Without it only the instance's own failures count: broken
	// connections, timeouts, a dead handler, and answers its sidecar
	// marks as its own (a store it cannot reach).
	Eject5xx bool
}

func newMesh(ctx context.Context, cli *clientv3.Client, prefix string, mtls *meshtls.Source, disp Dispatch, log *slog.Logger) (*Mesh, error) {
	if prefix == "" {
		prefix = discovery.DefaultPrefix
	}
	cat := discovery.NewCatalog(cli, prefix, log)
	dcfg := dispatch.Config{Endpoints: cat, Logger: log, Eject5xx: disp.Eject5xx}
	if mtls != nil {
		dcfg.TLSFor = mtls.ClientFor
	}
	d, err := dispatch.New(dcfg)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &Mesh{Etcd: cli, Catalog: cat, Dispatcher: d, Prefix: prefix, log: log, cancel: cancel}
	m.wg.Go(func() { _ = cat.Run(runCtx) })
	wctx, wcancel := context.WithTimeout(ctx, syncWait)
	defer wcancel()
	if err := cat.WaitSynced(wctx); err != nil {
		if ctx.Err() != nil {
			m.Close()
			return nil, ctx.Err()
		}
		log.Warn("etcd not reachable yet; serving with no known instances until it is", "err", err)
	}
	return m, nil
}

// Close stops the catalog and the dispatcher and closes the etcd client.
func (m *Mesh) Close() {
	m.cancel()
	m.wg.Wait()
	m.Dispatcher.Close()
	m.Etcd.Close()
}

// Edge runs an edge on m until ctx is done.
func Edge(ctx context.Context, m *Mesh, cfg edge.Config) error {
	e, err := edge.New(cfg, edge.Deps{Routes: m.Catalog, Dispatcher: m.Dispatcher, Etcd: m.Etcd, Prefix: m.Prefix, Tracer: m.Tracer})
	if err != nil {
		return err
	}
	return e.Run(ctx)
}

// Sidecar runs a sidecar on m until ctx is done, then drains it. storeSpec
// is its --store (see OpenStore), creds what it authenticates to a
// `griddle store` with.
func Sidecar(ctx context.Context, m *Mesh, cfg sidecar.Config, storeSpec string, creds StoreCredentials) error {
	cfg.Prefix = m.Prefix
	st, err := OpenStoreWith(ctx, storeSpec, creds, m.log)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	s, err := sidecar.New(cfg, sidecar.Deps{Etcd: m.Etcd, Dispatcher: m.Dispatcher, Catalog: m.Catalog, Store: st, Tracer: m.Tracer})
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// EtcdTLS is the client side of TLS toward etcd: ca (PEM) verifies etcd's
// certificate, cert and key (PEM, both or neither) are presented to an
// etcd started with --client-cert-auth. Nil, nil when all three are "".
func EtcdTLS(cert, key, ca string) (*tls.Config, error) {
	if cert == "" && key == "" && ca == "" {
		return nil, nil
	}
	if ca == "" {
		return nil, errors.New("--etcd-ca: required with --etcd-cert and --etcd-key")
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("--etcd-cert, --etcd-key: both or neither")
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("--etcd-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--etcd-ca: %s holds no PEM certificate", ca)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert, --etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
