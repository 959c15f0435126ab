package launch

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// A sidecar's connections to `griddle store`: at most storeMaxConns at
// once (requests beyond wait for one), storeMaxIdleConns kept idle, each
// closed after storeClientIdleTimeout unused. In a 10-minute soak at 200
// requests/s, 256 idle connections kept for 90 s let a sidecar's
// goroutines climb from 184 to 272 as bursts opened more.
const (
	storeMaxConns          = 256
	storeMaxIdleConns      = 32
	storeClientIdleTimeout = 30 * time.Second
)

// OpenStore opens the store a --store flag names:
//
//	badger:DIR            an embedded Badger database owned by this process
//	badger-nosync:DIR     the same, its commits not synced to disk (see badgerstore.Config.NoSync)
//	http://HOST:PORT      a `griddle store` server shared by several processes
//	fdb:CLUSTER_FILE      FoundationDB (a binary built with -tags foundationdb)
//
// "" means no store: handlers' store calls then fail.
func OpenStore(ctx context.Context, spec string, log *slog.Logger) (store.Backend, error) {
	scheme, rest, _ := strings.Cut(spec, ":")
	switch {
	case spec == "":
		return nil, nil
	case (scheme == "badger" || scheme == "badger-nosync") && rest != "":
		b, err := badgerstore.Open(ctx, badgerstore.Config{Dir: rest, Logger: log, NoSync: scheme == "badger-nosync"})
		if err != nil {
			return nil, fmt.Errorf("--store %s: %w", spec, err)
		}
		return b, nil
	case scheme == "http" || scheme == "https":
		return storehttp.NewClient(&http.Client{Transport: &http.Transport{
			// Bounded: a burst opens connections that then idle out
			// (the store closes idle ones after storeIdleTimeout, later).
			MaxConnsPerHost:     storeMaxConns,
			MaxIdleConnsPerHost: storeMaxIdleConns,
			IdleConnTimeout:     storeClientIdleTimeout,
		}}, spec), nil
	case scheme == "fdb":
		return openFDB(ctx, rest)
	}
	return nil, fmt.Errorf("--store %q: want badger:DIR, http://HOST:PORT or fdb:CLUSTER_FILE", spec)
}
