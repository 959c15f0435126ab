//go:build !foundationdb

package launch

import (
	"context"
	"errors"

	"github.com/griddle-mesh/griddle/internal/store"
)

func openFDB(context.Context, string) (store.Backend, error) {
	return nil, errors.New("--store fdb:…: this griddle was built without FoundationDB; build it with -tags foundationdb (needs libfdb_c)")
}
