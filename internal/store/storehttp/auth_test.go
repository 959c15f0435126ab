package storehttp_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/ca"
	"github.com/griddle-mesh/griddle/internal/meshtls"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

const eventsPrefix = "\xffevents/"

type withToken struct {
	token string
	next  http.RoundTripper
}

func (w withToken) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if w.token != "" {
		r.Header.Set("Authorization", w.token)
	}
	return w.next.RoundTrip(r)
}

func set(ctx context.Context, s store.Store, key, value string) error {
	return s.Transact(ctx, func(tx store.Tx) error { return tx.Set([]byte(key), []byte(value)) })
}

func TestAuthTokens(t *testing.T) {
	ctx := context.Background()
	tokens, err := storehttp.ParseTokens("# per service\nhello hello-token-0123456789\nprofiles profiles-token-0123456789\n")
	if err != nil {
		t.Fatal(err)
	}
	b, err := badgerstore.Open(ctx, badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := storehttp.NewServer(b, storehttp.WithAuth(tokens.Authenticate, []byte(eventsPrefix)), storehttp.WithMarks([]byte(eventsPrefix+"r/")))
	ts := httptest.NewServer(srv)
	defer func() { ts.Close(); srv.Close(); b.Close() }()
	as := func(token string) *storehttp.Client {
		return storehttp.NewClient(&http.Client{Transport: withToken{token, ts.Client().Transport}}, ts.URL)
	}
	space := func(c *storehttp.Client, name string) store.Store {
		s, err := c.Space(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hello, profiles := as("Bearer hello-token-0123456789"), as("bearer profiles-token-0123456789")

	for name, c := range map[string]*storehttp.Client{"no token": as(""), "a wrong token": as("Bearer hello-token-012345678X"), "another scheme": as("Basic hello-token-0123456789")} {
		if _, err := store.Get(ctx, space(c, "hello"), []byte("k")); !errors.Is(err, storehttp.ErrUnauthenticated) {
			t.Errorf("%s: read: %v, want ErrUnauthenticated", name, err)
		}
		if err := set(ctx, space(c, "hello"), "k", "v"); !errors.Is(err, storehttp.ErrUnauthenticated) {
			t.Errorf("%s: write: %v, want ErrUnauthenticated", name, err)
		}
	}

	if err := set(ctx, space(hello, "hello"), "secret", "s"); err != nil {
		t.Fatalf("hello writes its own space: %v", err)
	}
	if err := set(ctx, hello.Own(), eventsPrefix+"log/1", "e"); err != nil {
		t.Fatalf("hello writes its event log through OwnSpace: %v", err)
	}
	if v, err := store.Get(ctx, hello.Own(), []byte("secret")); err != nil || string(v) != "s" {
		t.Fatalf("hello reads its own space as OwnSpace: %q %v", v, err)
	}

	// profiles' token: its own space, and no more of hello's than the log.
	if err := set(ctx, space(profiles, "profiles"), "p", "1"); err != nil {
		t.Errorf("profiles writes its own space: %v", err)
	}
	if _, err := store.Get(ctx, space(profiles, "hello"), []byte("secret")); !errors.Is(err, store.ErrSpace) {
		t.Errorf("profiles reads hello's key: %v, want ErrSpace", err)
	}
	if err := set(ctx, space(profiles, "hello"), "secret", "mine"); !errors.Is(err, store.ErrSpace) {
		t.Errorf("profiles writes hello's key: %v, want ErrSpace", err)
	}
	if err := set(ctx, space(profiles, "hello"), eventsPrefix+"log/2", "forged"); !errors.Is(err, store.ErrSpace) {
		t.Errorf("profiles appends to hello's event log: %v, want ErrSpace", err)
	}
	// Its own mark (a subscriber's registration) on hello's log, and only
	// its own, empty.
	mark := eventsPrefix + "r/hello/greeted/profiles"
	if err := space(profiles, "hello").Transact(ctx, func(tx store.Tx) error { return tx.Set([]byte(mark), nil) }); err != nil {
		t.Errorf("profiles registers on hello's log: %v", err)
	}
	for name, write := range map[string]func(tx store.Tx) error{
		"another's mark":         func(tx store.Tx) error { return tx.Set([]byte(eventsPrefix+"r/hello/greeted/feed"), nil) },
		"a mark with a value":    func(tx store.Tx) error { return tx.Set([]byte(mark), []byte("x")) },
		"a mark named by suffix": func(tx store.Tx) error { return tx.Set([]byte(eventsPrefix+"r/hello/greeted/xprofiles"), nil) },
		"the bare mark prefix": func(tx store.Tx) error {
			return tx.Set([]byte(eventsPrefix+"r//profiles"), nil)
		},
		"clearing another's mark": func(tx store.Tx) error { return tx.Clear([]byte(eventsPrefix + "r/hello/greeted/feed")) },
	} {
		if err := space(profiles, "hello").Transact(ctx, write); !errors.Is(err, store.ErrSpace) {
			t.Errorf("profiles writes %s in hello's space: %v, want ErrSpace", name, err)
		}
	}
	if err := space(profiles, "hello").Transact(ctx, func(tx store.Tx) error { return tx.Clear([]byte(mark)) }); err != nil {
		t.Errorf("profiles unregisters from hello's log: %v", err)
	}
	err = space(profiles, "hello").ReadTransact(ctx, func(tx store.ReadTx) error {
		_, err := tx.Range(nil, nil, store.RangeOptions{})
		return err
	})
	if !errors.Is(err, store.ErrSpace) {
		t.Errorf("profiles ranges over all of hello's space: %v, want ErrSpace", err)
	}
	var got []store.KeyValue
	err = space(profiles, "hello").ReadTransact(ctx, func(tx store.ReadTx) error {
		var err error
		got, err = tx.Range([]byte(eventsPrefix), []byte(eventsPrefix+"\xff"), store.RangeOptions{})
		return err
	})
	if err != nil || len(got) != 1 || string(got[0].Value) != "e" {
		t.Errorf("profiles reads hello's event log: %v %v, want the one event", got, err)
	}
	if v, err := store.Get(ctx, space(hello, "hello"), []byte("secret")); err != nil || string(v) != "s" {
		t.Errorf("after all that, hello's key is %q (%v), want it unchanged", v, err)
	}

	// A transaction begun by hello is unknown to profiles.
	req := func(token, path string) int {
		r, _ := http.NewRequest(http.MethodPost, ts.URL+path, nil)
		r.Header.Set("Authorization", token)
		resp, err := ts.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	r, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/spaces/hello/txns", nil)
	r.Header.Set("Authorization", "Bearer hello-token-0123456789")
	resp, err := ts.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	var begun [256]byte
	n, _ := resp.Body.Read(begun[:])
	resp.Body.Close()
	txn := strings.TrimFunc(string(begun[:n]), func(r rune) bool { return r < '0' || r > 'f' || (r > '9' && r < 'a') })
	if st := req("Bearer profiles-token-0123456789", "/v1/txns/"+txn+"/abort"); st < 400 {
		t.Errorf("profiles aborting hello's transaction %s: status %d, want a refusal", txn, st)
	}
	if st := req("Bearer hello-token-0123456789", "/v1/txns/"+txn+"/abort"); st != 204 && st != 200 {
		t.Errorf("hello aborting its own transaction: status %d", st)
	}
}

func TestParseTokens(t *testing.T) {
	for name, text := range map[string]string{
		"empty":        "# nothing\n",
		"one field":    "hello\n",
		"short token":  "hello short\n",
		"bad service":  "Hello/x 0123456789abcdef\n",
		"own space":    "_ 0123456789abcdef\n",
		"twice":        "a 0123456789abcdef\nb 0123456789abcdef\n",
		"three fields": "a 0123456789abcdef x\n",
	} {
		if _, err := storehttp.ParseTokens(text); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestAuthClientCertificate: over TLS, a sidecar's certificate names its
// service; without one, or with an edge's, nothing is served.
func TestAuthClientCertificate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	authority, err := ca.Init(filepath.Join(dir, "ca"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := func(name string, id meshtls.Identity) *meshtls.Source {
		is, err := authority.Issue(ca.Request{Identity: id, TTL: time.Minute, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		f, err := is.Write(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		src, err := meshtls.Open(f, meshtls.Options{Reload: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(src.Close)
		return src
	}
	server := files("store", meshtls.Identity{Service: "store", Version: "v1"})
	b, err := badgerstore.Open(ctx, badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := storehttp.NewServer(b, storehttp.WithAuth(storehttp.ClientCertificate, []byte(eventsPrefix)))
	ts := httptest.NewUnstartedServer(srv)
	cfg := server.Server()
	get := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := get(hi)
		c.ClientAuth = tls.VerifyClientCertIfGiven
		return c, err
	}
	ts.TLS = cfg
	ts.StartTLS()
	defer func() { ts.Close(); srv.Close(); b.Close() }()
	as := func(src *meshtls.Source) *storehttp.Client {
		tc := &tls.Config{InsecureSkipVerify: true} // no client certificate
		if src != nil {
			tc = src.ClientFor("", ts.URL)
		}
		return storehttp.NewClient(&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, ts.URL)
	}
	hello := as(files("hello", meshtls.Identity{Service: "hello", Version: "v1"}))
	if err := set(ctx, hello.Own(), "k", "v"); err != nil {
		t.Fatalf("hello with its certificate: %v", err)
	}
	if err := set(ctx, must(hello.Space("profiles")), "k", "v"); !errors.Is(err, store.ErrSpace) {
		t.Errorf("hello writing profiles' space: %v, want ErrSpace", err)
	}
	for name, c := range map[string]*storehttp.Client{"no certificate": as(nil), "an edge's": as(files("edge", meshtls.Edge))} {
		if err := set(ctx, c.Own(), "k", "v"); !errors.Is(err, storehttp.ErrUnauthenticated) {
			t.Errorf("%s: %v, want ErrUnauthenticated", name, err)
		}
	}
}

func must(s store.Store, err error) store.Store {
	if err != nil {
		panic(err)
	}
	return s
}
