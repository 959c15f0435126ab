package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

type bearerRT struct{ token string }

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestStoreCredentials: a `griddle store` with per-service tokens refuses
// requests without one, serves a sidecar with its service's token, and a
// token of another service reaches none of that service's keys.
func TestStoreCredentials(t *testing.T) {
	const profilesToken, helloToken = "profiles-secret-0123456789", "hello-secret-0123456789"
	m := meshtest.Start(t, bin)
	dir := t.TempDir()
	tokens := writeFile(t, "tokens", "profiles "+profilesToken+"\nhello "+helloToken+"\n")
	addr := meshtest.FreeAddr(t)
	m.Griddle("store with tokens", "store", "--listen", addr, "--dir", filepath.Join(dir, "db"), "--tokens", tokens)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the store did not listen")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// No credentials: 401 with the reason, for every kind of request.
	for _, path := range []string{"/v1/spaces/profiles/get", "/v1/spaces/profiles/op", "/v1/spaces/profiles/txns", "/v1/txns/x/get"} {
		resp, err := http.Post("http://"+addr+path, storehttp.ContentType, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "no valid credentials") || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("POST %s without a token: %d %q (WWW-Authenticate %q), want 401 with the reason", path, resp.StatusCode, b, resp.Header.Get("WWW-Authenticate"))
		}
	}
	// A write without credentials, and with a token the store does not
	// know: refused, and nothing written.
	ctx := context.Background()
	space := func(token, name string) store.Store {
		s, err := storehttp.NewClient(&http.Client{Transport: bearerRT{token}}, "http://"+addr).Space(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tok := range []string{"", "unknown-token-0123456789"} {
		anon, err := storehttp.NewClient(&http.Client{Transport: bearerRT{tok}}, "http://"+addr).Space("profiles")
		if err != nil {
			t.Fatal(err)
		}
		err = anon.Transact(ctx, func(tx store.Tx) error { return tx.Set([]byte("planted"), []byte("x")) })
		if !errors.Is(err, storehttp.ErrUnauthenticated) {
			t.Errorf("a write with token %q: %v, want ErrUnauthenticated", tok, err)
		}
	}
	if v, err := store.Get(ctx, space(profilesToken, "profiles"), []byte("planted")); err != nil || v != nil {
		t.Errorf("profiles' key written without credentials: %q %v, want nothing", v, err)
	}

	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/", "--store", "http://"+addr,
		"--store-token-file", writeFile(t, "profiles.token", profilesToken+"\n"))
	e := m.Edge()
	seed(t, e.Addr, 5)
	if status, body, _ := get(t, "http://"+e.Addr+"/profiles/3"); status != 200 || !strings.Contains(body, "user-3") {
		t.Fatalf("a profile through the sidecar with its token: %d %s", status, body)
	}

	var keys []store.KeyValue
	err := space(profilesToken, "profiles").ReadTransact(ctx, func(tx store.ReadTx) error {
		var err error
		keys, err = tx.Range([]byte("profile/"), []byte("profile0"), store.RangeOptions{Limit: 10})
		return err
	})
	if err != nil || len(keys) == 0 {
		t.Fatalf("profiles' token reading its space: %d keys, %v", len(keys), err)
	}
	key := keys[0].Key
	if _, err := store.Get(ctx, space(helloToken, "profiles"), key); !errors.Is(err, store.ErrSpace) {
		t.Errorf("hello's token reading profiles' %q: %v, want ErrSpace", key, err)
	}
	err = space(helloToken, "profiles").Transact(ctx, func(tx store.Tx) error { return tx.Set(key, []byte("overwritten")) })
	if !errors.Is(err, store.ErrSpace) {
		t.Errorf("hello's token writing profiles' %q: %v, want ErrSpace", key, err)
	}
	if v, err := store.Get(ctx, space(profilesToken, "profiles"), key); err != nil || string(v) != string(keys[0].Value) {
		t.Errorf("profiles' %q after hello's attempts: %q %v, want it unchanged", key, v, err)
	}
}

// TestStoreWithoutCredentials: `griddle store` given neither --tokens nor
// --tls-* does not start, and says what it needs.
func TestStoreWithoutCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := osexec.CommandContext(ctx, bin.Griddle, "store", "--listen", meshtest.FreeAddr(t), "--dir", filepath.Join(t.TempDir(), "db")).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("griddle store without credentials still ran after 20s:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "no credentials") || !strings.Contains(string(out), "--tokens") {
		t.Errorf("griddle store without credentials: %v\n%s\nwant it refused, naming --tokens", err, out)
	}
}
