package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/griddle-mesh/griddle/internal/etcdembed"
)

// EtcdConfig configures ServeEtcd.
type EtcdConfig struct {
	Dir    string // etcd's data directory (--dir)
	Listen string // client address, host:port (--listen)
	Admin  string // address serving /debug/pprof/ ("": none) (--admin)
	Logger *slog.Logger
}

// Validate reports the first invalid field, named as on the command line.
func (c EtcdConfig) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("%w: --dir is required", ErrConfig)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: --listen: %w", ErrConfig, err)
	}
	if c.Admin != "" {
		if _, _, err := net.SplitHostPort(c.Admin); err != nil {
			return fmt.Errorf("%w: --admin: %w", ErrConfig, err)
		}
	}
	return nil
}

// ServeEtcd runs the embedded etcd that griddle up runs, configured as
// griddle up configures it, alone in this process, until ctx is done: the
// deployed target's etcd (griddle has no etcd command of its own, and an
// etcd server may not be installed).
func ServeEtcd(ctx context.Context, cfg EtcdConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	srv, err := etcdembed.Start(ctx, etcdembed.Config{Dir: cfg.Dir, ClientAddr: cfg.Listen, Logger: cfg.Logger})
	if err != nil {
		return fmt.Errorf("bench: serve-etcd: %w", err)
	}
	stop, err := serveProfiler(cfg.Admin)
	if err != nil {
		return errors.Join(err, srv.Close())
	}
	<-ctx.Done()
	stop()
	return srv.Close()
}

// serveProfiler serves /debug/pprof/ on addr until stop is called; "" serves
// nothing. stop returns once the server's goroutine has ended.
func serveProfiler(addr string) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: --admin: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	return func() {
		_ = srv.Close()
		wg.Wait()
	}, nil
}
