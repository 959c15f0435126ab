package bench

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
)

// seedBatch is how many profiles one seeding transaction writes.
const seedBatch = 500

// openProfiles opens the direct baseline's store and seeds the profiles;
// the backend serves the messages key space too.
func openProfiles(ctx context.Context, dir string, n int, log *slog.Logger) (profileReader, store.Backend, error) {
	b, err := badgerstore.Open(ctx, badgerstore.Config{Dir: dir, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: open store: %w", err)
	}
	s, err := b.Space("profiles")
	if err != nil {
		_ = b.Close()
		return nil, nil, fmt.Errorf("bench: open store: %w", err)
	}
	for lo := 1; lo <= n; lo += seedBatch {
		hi := min(lo+seedBatch-1, n)
		err := s.Transact(ctx, func(tx store.Tx) error {
			for id := lo; id <= hi; id++ {
				if err := tx.Set(profileKey(id), profileJSON(id)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			_ = b.Close()
			return nil, nil, fmt.Errorf("bench: seed store: %w", err)
		}
	}
	return storeReader{s}, b, nil
}

// storeReader reads profiles with one read-only transaction each.
type storeReader struct{ s store.Store }

func (r storeReader) profile(ctx context.Context, id int) ([]byte, error) {
	var v []byte
	err := r.s.ReadTransact(ctx, func(tx store.ReadTx) error {
		var err error
		v, err = tx.Get(profileKey(id))
		return err
	})
	return v, err
}
