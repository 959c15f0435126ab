package launch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

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
