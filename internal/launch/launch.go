// Package launch wires Griddle's components to etcd and runs them: one
// function per command of the griddle binary, so that cmd/griddle holds no
// logic of its own.
package launch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/edge"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/dispatch"
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

	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Connect dials etcd at endpoints and starts the catalog. It returns once
// the catalog has its first view of etcd or syncWait has passed (then it
// keeps trying in the background and says so in the log). Close releases it.
//
// tlsCfg, when set, is the client side of mutual TLS toward instances at
// tls+tcp:// addresses (see package meshtls).
func Connect(ctx context.Context, endpoints []string, prefix string, tlsCfg *tls.Config, log *slog.Logger) (*Mesh, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("--etcd: at least one endpoint is required")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		DialOptions:          discovery.DialOptions(),
		Logger:               nil,
	})
	if err != nil {
		return nil, fmt.Errorf("--etcd: %w", err)
	}
	m, err := newMesh(ctx, cli, prefix, tlsCfg, log)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return m, nil
}

func newMesh(ctx context.Context, cli *clientv3.Client, prefix string, tlsCfg *tls.Config, log *slog.Logger) (*Mesh, error) {
	if prefix == "" {
		prefix = discovery.DefaultPrefix
	}
	cat := discovery.NewCatalog(cli, prefix, log)
	d, err := dispatch.New(dispatch.Config{Endpoints: cat, Logger: log, TLS: tlsCfg})
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
	e, err := edge.New(cfg, edge.Deps{Routes: m.Catalog, Dispatcher: m.Dispatcher, Etcd: m.Etcd, Prefix: m.Prefix})
	if err != nil {
		return err
	}
	return e.Run(ctx)
}

// Sidecar runs a sidecar on m until ctx is done, then drains it. storeSpec
// is its --store (see OpenStore).
func Sidecar(ctx context.Context, m *Mesh, cfg sidecar.Config, storeSpec string) error {
	cfg.Prefix = m.Prefix
	st, err := OpenStore(ctx, storeSpec, m.log)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	s, err := sidecar.New(cfg, sidecar.Deps{Etcd: m.Etcd, Dispatcher: m.Dispatcher, Catalog: m.Catalog, Store: st})
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
