package store_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// A store served on a unix socket the way a sidecar serves it: a handler
// reaches its own key space and no other.
func TestNewOverUnixSocket(t *testing.T) {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := storehttp.NewServer(b, storehttp.WithSpace("profiles"))
	defer srv.Close()
	mux := http.NewServeMux()
	mux.Handle(store.Host+"/", srv) // the sidecar routes by Host
	sock := filepath.Join(t.TempDir(), "mesh.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(l) }()
	defer func() { hs.Close(); <-done }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()

	st := store.New(&http.Client{Transport: tr})
	if err := st.Transact(t.Context(), func(tx store.Tx) error {
		return tx.Set([]byte("profile/1"), []byte("ada"))
	}); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := st.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		got, err = tx.Get([]byte("profile/1"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "ada" {
		t.Errorf("profile/1 = %q, want ada", got)
	}
	err = st.Transact(t.Context(), func(tx store.Tx) error {
		return tx.Set(make([]byte, store.MaxKeyBytes+1), nil)
	})
	if !errors.Is(err, store.ErrKeyTooLarge) {
		t.Errorf("oversized key: %v, want %v", err, store.ErrKeyTooLarge)
	}
	profiles, _ := b.Space("profiles")
	if err := profiles.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		got, err = tx.Get([]byte("profile/1"))
		return err
	}); err != nil || string(got) != "ada" {
		t.Errorf("space profiles: profile/1 = %q, %v; want ada", got, err)
	}
}

// The SDK must not drag a database into handler binaries.
func TestNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"badger", "foundationdb", "etcd", "mangos", "badgerstore", "fdbstore"} {
			if strings.Contains(dep, bad) {
				t.Errorf("plugins/store depends on %s", dep)
			}
		}
	}
}
