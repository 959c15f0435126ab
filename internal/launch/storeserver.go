package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// storeIdleTimeout closes a store client's idle connection.
const storeIdleTimeout = 2 * time.Minute

// StoreServer runs `griddle store`: it owns an embedded Badger database in
// dir and serves it to the sidecars of one machine over HTTP at listen
// (their --store http://listen), until ctx ends.
func StoreServer(ctx context.Context, listen, dir string, log *slog.Logger) error {
	if dir == "" {
		return errors.New("store: --dir: required")
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return fmt.Errorf("store: --listen: %w", err)
	}
	b, err := badgerstore.Open(ctx, badgerstore.Config{Dir: dir, Logger: log})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer b.Close()
	srv := storehttp.NewServer(b, storehttp.WithLogger(log))
	defer srv.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("store: --listen: %w", err)
	}
	// Its goroutines and heap on /debug/pprof/ (soak tests read them);
	// idle connections are closed after storeIdleTimeout, so that clients
	// that went away leave nothing behind.
	mux := http.NewServeMux()
	mux.Handle("/", srv)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: storeIdleTimeout}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("store serving", "listen", ln.Addr().String(), "dir", dir)
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
