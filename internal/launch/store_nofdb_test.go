//go:build !foundationdb

package launch

import (
	"log/slog"
	"strings"
	"testing"
)

func TestOpenStoreFDBNeedsTag(t *testing.T) {
	b, err := OpenStore(t.Context(), "fdb:/etc/foundationdb/fdb.cluster", slog.New(slog.DiscardHandler))
	if err == nil {
		b.Close()
		t.Fatal("OpenStore(fdb:…) in a build without the foundationdb tag = nil error, want one")
	}
	if !strings.Contains(err.Error(), "-tags foundationdb") {
		t.Errorf("OpenStore(fdb:…) = %v, want it to say how to build with FoundationDB", err)
	}
}
