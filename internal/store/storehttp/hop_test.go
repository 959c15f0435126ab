package storehttp_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// Once a Client's hop connection is up its operations travel on it, not
// in HTTP requests, still as the caller it authenticated as: its own space
// read and written, another service's refused, a caller without a token
// refused the connection and every operation.
func TestHopCarriesOperations(t *testing.T) {
	tokens, err := storehttp.ParseTokens("hello hello-token-0123456789\nprofiles profiles-token-0123456789\n")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var paths []string
	ts := serveThrough(t, func(srv http.Handler, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		srv.ServeHTTP(w, r)
	}, storehttp.WithAuth(tokens.Authenticate, []byte(eventsPrefix)))
	requests := func() []string {
		mu.Lock()
		defer mu.Unlock()
		p := paths
		paths = nil
		return p
	}
	as := func(token string) *storehttp.Client {
		c := storehttp.NewClient(&http.Client{Transport: withToken{token, ts.Client().Transport}}, ts.URL)
		t.Cleanup(func() { c.Close() })
		return c
	}

	hello := as("Bearer hello-token-0123456789")
	own, err := hello.Space("hello")
	if err != nil {
		t.Fatal(err)
	}
	write := func(i int) error { return set(t.Context(), own, fmt.Sprintf("k/%d", i), fmt.Sprint(i)) }
	// The first operations go over HTTP while the connection opens.
	up := false
	for i := range 200 {
		if err := write(i); err != nil {
			t.Fatal(err)
		}
		if p := requests(); len(p) == 0 {
			up = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !up {
		t.Fatal("every operation went over HTTP: the hop connection never came up")
	}
	for i := range 50 {
		if err := write(1000 + i); err != nil {
			t.Fatal(err)
		}
		v, err := store.Get(t.Context(), own, []byte(fmt.Sprintf("k/%d", 1000+i)))
		if err != nil || string(v) != fmt.Sprint(1000+i) {
			t.Fatalf("read back %q, %v, want %d", v, err, 1000+i)
		}
	}
	if p := requests(); len(p) != 0 {
		t.Errorf("HTTP requests with the hop connection up: %v", p)
	}
	// Confined as over HTTP: another service's space is read-only, and
	// only its event log.
	other, err := hello.Space("profiles")
	if err != nil {
		t.Fatal(err)
	}
	if err := set(t.Context(), other, "k", "v"); !errors.Is(err, store.ErrSpace) {
		t.Errorf("write to another service's space over the hop connection: %v, want store.ErrSpace", err)
	}

	nobody := as("")
	anon, err := nobody.Space("hello")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := set(t.Context(), anon, "k", "v"); !errors.Is(err, storehttp.ErrUnauthenticated) {
			t.Errorf("write without a token: %v, want ErrUnauthenticated", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, p := range requests() {
		if !strings.HasPrefix(p, "/v1/") {
			t.Errorf("unexpected request %q", p)
		}
	}
}

// A Client of a Server that does not offer hop connections (an older
// one) sends its operations over HTTP, and stops asking.
func TestHopRefusedFallsBack(t *testing.T) {
	var mu sync.Mutex
	upgrades := 0
	ts := serveThrough(t, func(srv http.Handler, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == storehttp.HopPath {
			mu.Lock()
			upgrades++
			mu.Unlock()
			http.NotFound(w, r)
			return
		}
		srv.ServeHTTP(w, r)
	})
	c := storehttp.NewClient(ts.Client(), ts.URL)
	t.Cleanup(func() { c.Close() })
	s, err := c.Space("svc")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := set(t.Context(), s, fmt.Sprint(i), "v"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if upgrades != 1 {
		t.Errorf("%d upgrade requests to a Server without hop connections, want 1", upgrades)
	}
}
