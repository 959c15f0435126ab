package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// profileReader reads one seeded profile's stored bytes; nil, nil when
// there is none.
type profileReader interface {
	profile(ctx context.Context, id int) ([]byte, error)
}

// profileKey is the key of profile id in the "profiles" key space.
func profileKey(id int) []byte { return strconv.AppendInt([]byte("profile/"), int64(id), 10) }

// DirectConfig configures ServeDirect.
type DirectConfig struct {
	StoreDir string // the store's directory, created and seeded if empty (--store-dir)
	Listen   string // host:port (--listen)
	Profiles int    // ids 1..Profiles are seeded (--profiles)
	Admin    string // address serving /debug/pprof/ ("": none) (--admin)
	Logger   *slog.Logger
}

// Validate reports the first invalid field, named as on the command line.
func (c DirectConfig) Validate() error {
	if c.StoreDir == "" {
		return fmt.Errorf("%w: --store-dir is required", ErrConfig)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: --listen: %w", ErrConfig, err)
	}
	if c.Profiles < 1 {
		return fmt.Errorf("%w: --profiles %d: want 1 or more", ErrConfig, c.Profiles)
	}
	if c.Admin != "" {
		if _, _, err := net.SplitHostPort(c.Admin); err != nil {
			return fmt.Errorf("%w: --admin: %w", ErrConfig, err)
		}
	}
	return nil
}

// ServeDirect is the direct baseline of the store scenarios: a plain
// net/http server that answers GET /profiles/{id} with one uncached read
// of the embedded store, seeded like the profiles service, and POST and GET
// /messages/{user} as the messages service does, its transaction
// in-process (see directMessages). It serves until ctx is done, then shuts
// down.
func ServeDirect(ctx context.Context, cfg DirectConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r, backend, err := openProfiles(ctx, cfg.StoreDir, cfg.Profiles, cfg.Logger)
	if err != nil {
		return err
	}
	defer backend.Close()
	msgs, err := directMessagesOf(ctx, backend, r)
	if err != nil {
		return err
	}
	stopProfiler, err := serveProfiler(cfg.Admin)
	if err != nil {
		return err
	}
	defer stopProfiler()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("bench: serve-direct: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /profiles/{id}", func(w http.ResponseWriter, req *http.Request) {
		id, err := strconv.Atoi(req.PathValue("id"))
		if err != nil || id <= 0 {
			http.Error(w, "id: want a positive integer", http.StatusBadRequest)
			return
		}
		b, err := r.profile(req.Context(), id)
		switch {
		case err != nil:
			cfg.Logger.ErrorContext(req.Context(), "serve-direct: read", "id", id, "error", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
		case b == nil:
			http.Error(w, "no such profile", http.StatusNotFound)
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
		}
	})
	mux.HandleFunc("POST /messages/{to}", msgs.send)
	mux.HandleFunc("GET /messages/{user}", msgs.list)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- srv.Serve(ln) })
	defer wg.Wait()
	select {
	case err := <-errc:
		return fmt.Errorf("bench: serve-direct: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return nil
}
