//go:build foundationdb

package launch

import (
	"context"
	"fmt"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/fdbstore"
)

// openFDB opens the FoundationDB cluster of clusterFile ("" means the
// client's default: FDB_CLUSTER_FILE, then /etc/foundationdb/fdb.cluster).
// It does not wait for the cluster: see fdbstore.Open.
func openFDB(ctx context.Context, clusterFile string) (store.Backend, error) {
	b, err := fdbstore.Open(ctx, fdbstore.Config{ClusterFile: clusterFile})
	if err != nil {
		return nil, fmt.Errorf("--store fdb:%s: %w", clusterFile, err)
	}
	return b, nil
}
