package launch

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/griddle-mesh/griddle/internal/loopback"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// A sidecar's connections to `griddle store`: at most storeMaxConns at
// once (requests beyond wait for one), StoreMaxIdleConns kept idle, each
// closed after storeClientIdleTimeout unused. In a 10-minute soak at 200
// requests/s, 256 idle connections kept for 90 s let a sidecar's
// goroutines climb from 184 to 272 as bursts opened more.
const (
	storeMaxConns          = 256
	StoreMaxIdleConns      = 32
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
	return OpenStoreWith(ctx, spec, StoreCredentials{}, log)
}

// StoreCredentials are how a sidecar authenticates to `griddle store`
// (http:// or https:// specs; unused by the others).
type StoreCredentials struct {
	// Token is the service's bearer token (--store-token-file); over
	// http:// only to a loopback address.
	Token string
	// TLS is the client side toward an https:// store: its CA, and the
	// sidecar's certificate, whose identity names its service.
	TLS *tls.Config
}

// OpenStoreWith is OpenStore with credentials for `griddle store`.
func OpenStoreWith(ctx context.Context, spec string, creds StoreCredentials, log *slog.Logger) (store.Backend, error) {
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
		u, err := url.Parse(spec)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--store %q: want http://HOST:PORT or https://HOST:PORT", spec)
		}
		if creds.Token != "" && scheme == "http" && !loopback.Host(u.Hostname()) {
			return nil, fmt.Errorf("--store-token-file: a token is sent over http:// to loopback addresses only; use https:// for %s", u.Host)
		}
		var rt http.RoundTripper = &http.Transport{
			// Bounded: a burst opens connections that then idle out.
			MaxConnsPerHost:     storeMaxConns,
			MaxIdleConnsPerHost: StoreMaxIdleConns,
			IdleConnTimeout:     storeClientIdleTimeout,
			TLSClientConfig:     creds.TLS,
		}
		if creds.Token != "" {
			rt = bearer{token: "Bearer " + creds.Token, next: rt}
		}
		return storehttp.NewClient(&http.Client{Transport: rt}, spec), nil
	case scheme == "fdb":
		return openFDB(ctx, rest)
	}
	return nil, fmt.Errorf("--store %q: want badger:DIR, http://HOST:PORT or fdb:CLUSTER_FILE", spec)
}

// bearer adds an Authorization header to each request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", b.token)
	return b.next.RoundTrip(r)
}
