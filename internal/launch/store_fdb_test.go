//go:build foundationdb

package launch

import (
	"log/slog"
	"os"
	"testing"
)

// TestOpenStoreFDB opens the cluster of GRIDDLE_FDB_CLUSTER_FILE through
// --store fdb:… as a sidecar does, and writes and reads a key there.
func TestOpenStoreFDB(t *testing.T) {
	cluster := os.Getenv("GRIDDLE_FDB_CLUSTER_FILE")
	if cluster == "" {
		t.Skip("FoundationDB: set GRIDDLE_FDB_CLUSTER_FILE to a cluster file to open a real cluster through --store fdb:")
	}
	b, err := OpenStore(t.Context(), "fdb:"+cluster, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	roundTrip(t.Context(), t, b)
}
