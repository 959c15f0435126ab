package launch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

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
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
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

// SeedProfiles loads count profiles (ids 1..count) through the edge at base,
// in bulk imports of batch profiles, with a few requests in flight; it
// reports progress to out.
func SeedProfiles(ctx context.Context, base string, count, batch int, out io.Writer) error {
	if count < 1 || batch < 1 || batch > 1000 {
		return fmt.Errorf("seed: --count must be positive and --batch 1..1000, got %d and %d", count, batch)
	}
	start := time.Now()
	c := &http.Client{Timeout: 30 * time.Second}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	var mu sync.Mutex
	done := 0
	for first := 1; first <= count; first += batch {
		last := min(first+batch-1, count)
		g.Go(func() error {
			type profile struct {
				ID   int    `json:"id"`
				Name string `json:"name"`
				City string `json:"city"`
				Bio  string `json:"bio"`
			}
			ps := make([]profile, 0, last-first+1)
			cities := []string{"Stockholm", "Göteborg", "Malmö", "Uppsala", "Umeå"}
			for id := first; id <= last; id++ {
				ps = append(ps, profile{ID: id, Name: "user-" + strconv.Itoa(id), City: cities[id%len(cities)],
					Bio: "Likes pancakes, hiking and long walks on the beach."})
			}
			body, _ := json.Marshal(ps)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/profiles/", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			if err != nil {
				return fmt.Errorf("seed: profiles %d-%d: %w", first, last, err)
			}
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("seed: profiles %d-%d: %d %s", first, last, resp.StatusCode, bytes.TrimSpace(msg))
			}
			mu.Lock()
			done += len(ps)
			if done%(batch*20) == 0 || done == count {
				fmt.Fprintf(out, "seeded %d of %d profiles\n", done, count)
			}
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	fmt.Fprintf(out, "seeded %d profiles in %v\n", count, time.Since(start).Round(time.Millisecond))
	return nil
}
