package launch

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/internal/store"
)

func TestOpenStoreBadgerRoundTrip(t *testing.T) {
	ctx := t.Context()
	b, err := OpenStore(ctx, "badger:"+t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	roundTrip(ctx, t, b)
}

func TestOpenStoreBadgerNoSync(t *testing.T) {
	ctx := t.Context()
	b, err := OpenStore(ctx, "badger-nosync:"+t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	roundTrip(ctx, t, b)
}

func TestOpenStoreRejects(t *testing.T) {
	for _, c := range []struct{ name, spec, want string }{
		{"no scheme", "/var/lib/griddle", "want badger:DIR"},
		{"badger without dir", "badger:", "want badger:DIR"},
		{"badger-nosync without dir", "badger-nosync:", "want badger:DIR"},
		{"unknown scheme", "redis://x", "want badger:DIR"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := OpenStore(t.Context(), c.spec, slog.New(slog.DiscardHandler))
			if err == nil {
				b.Close()
				t.Fatalf("OpenStore(%q) = nil error, want one containing %q", c.spec, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("OpenStore(%q) = %v, want it to contain %q", c.spec, err, c.want)
			}
		})
	}
}

// roundTrip writes and reads one key through b, as a sidecar's handler does.
func roundTrip(ctx context.Context, t *testing.T, b store.Backend) {
	t.Helper()
	s, err := b.Space("launchtest")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Transact(ctx, func(tx store.Tx) error { return tx.Set([]byte("k"), []byte("v")) }); err != nil {
		t.Fatalf("Transact: %v", err)
	}
	var got []byte
	if err := s.ReadTransact(ctx, func(tx store.ReadTx) error {
		var err error
		got, err = tx.Get([]byte("k"))
		return err
	}); err != nil {
		t.Fatalf("ReadTransact: %v", err)
	}
	if !bytes.Equal(got, []byte("v")) {
		t.Errorf("Get(k) = %q, want %q", got, "v")
	}
	if err := s.Transact(ctx, func(tx store.Tx) error { return tx.Clear([]byte("k")) }); err != nil {
		t.Errorf("Transact (clear): %v", err)
	}
}
