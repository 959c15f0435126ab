//go:build foundationdb

package fdbstore_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/apple/foundationdb/bindings/go/src/fdb"
	"github.com/apple/foundationdb/bindings/go/src/fdb/subspace"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/fdbstore"
	"github.com/griddle-mesh/griddle/internal/store/storetest"
)

const clusterEnv = "GRIDDLE_FDB_CLUSTER_FILE"

func TestConformance(t *testing.T) {
	cluster := os.Getenv(clusterEnv)
	if cluster == "" {
		t.Skip("FoundationDB: set GRIDDLE_FDB_CLUSTER_FILE to a cluster file to run the conformance suite against a real cluster")
	}
	storetest.Run(t, func(t *testing.T) store.Backend {
		var r [8]byte
		rand.Read(r[:])
		cfg := fdbstore.Config{ClusterFile: cluster, Root: "griddle-test-" + hex.EncodeToString(r[:])}
		b, err := fdbstore.Open(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { clearRoot(t, cfg) })
		return b
	})
}

// clearRoot removes everything a subtest wrote: the whole subspace of its
// root, whichever spaces the suite used.
func clearRoot(t *testing.T, cfg fdbstore.Config) {
	db, err := fdb.OpenDatabase(cfg.ClusterFile) // the API version is selected by Open
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	if _, err := db.Transact(func(tr fdb.Transaction) (any, error) {
		tr.ClearRange(subspace.Sub(cfg.Root))
		return nil, nil
	}); err != nil {
		t.Errorf("cleanup of %s: %v", cfg.Root, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  fdbstore.Config
		ok   bool
	}{
		{"zero", fdbstore.Config{}, true},
		{"730", fdbstore.Config{APIVersion: 730}, true},
		{"too new", fdbstore.Config{APIVersion: 731}, false},
		{"too old", fdbstore.Config{APIVersion: 100}, false},
	} {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", c.name, err, c.ok)
		}
	}
}
