package floor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"

	"github.com/dgraph-io/badger/v4"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
)

// ErrMissing means a seeded key was not found.
var ErrMissing = errors.New("floor: seeded key not found")

// Badger is the floor of the store hop: a read-only Badger v4 transaction
// that gets one of Config.Keys seeded profiles, chosen at random, and
// copies its value out, with Config.InFlight readers at once; the database
// is opened with the block and index cache sizes of the embedded store.
// There is no key space, no retry loop, no protocol: what a read of the
// store costs at the least, wherever it is served from.
func Badger() Floor {
	return Floor{Name: "badger", Hop: "store read (Badger, bare)", open: openBadger}
}

// BadgerStore is the same read through the store package's embedded
// backend (badgerstore: a key space, a read-only transaction with its
// callback), which is what the direct server and griddle up's store do
// per request. The difference from Badger is the store package's own cost.
func BadgerStore() Floor {
	return Floor{Name: "badgerstore", Hop: "store read (the store package over Badger)", open: openBadgerStore}
}

// profileValue is a seeded profile as griddle seed loads it.
func profileValue(id int) []byte {
	cities := []string{"Stockholm", "Göteborg", "Malmö", "Uppsala", "Umeå"}
	return fmt.Appendf(nil, `{"id":%d,"name":"user-%d","city":%q,"bio":"Likes pancakes, hiking and long walks on the beach."}`,
		id, id, cities[id%len(cities)])
}

func profileKey(b []byte, id int) []byte {
	return strconv.AppendInt(append(b, "profile/"...), int64(id), 10)
}

// seedBatch is how many keys one seeding transaction writes.
const seedBatch = 500

func openBadger(cfg Config, dir string) (*Rig, error) {
	opts := badger.DefaultOptions(filepath.Join(dir, "badger")).
		WithLogger(nil).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, err
	}
	r := &Rig{}
	r.onClose(db.Close)
	for lo := 1; lo <= cfg.Keys; lo += seedBatch {
		err := db.Update(func(txn *badger.Txn) error {
			for id := lo; id <= min(lo+seedBatch-1, cfg.Keys); id++ {
				if err := txn.Set(profileKey(nil, id), profileValue(id)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("seed: %w", err)
		}
	}
	keys := make([][]byte, cfg.InFlight)
	vals := make([][]byte, cfg.InFlight)
	r.trip = func(w int) error {
		keys[w] = profileKey(keys[w][:0], 1+rand.IntN(cfg.Keys))
		txn := db.NewTransaction(false)
		defer txn.Discard()
		item, err := txn.Get(keys[w])
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: %s", ErrMissing, keys[w])
		}
		if err != nil {
			return err
		}
		vals[w], err = item.ValueCopy(vals[w][:0])
		return err
	}
	return r, nil
}

func openBadgerStore(cfg Config, dir string) (*Rig, error) {
	ctx := context.Background()
	b, err := badgerstore.Open(ctx, badgerstore.Config{Dir: filepath.Join(dir, "badgerstore")})
	if err != nil {
		return nil, err
	}
	r := &Rig{}
	r.onClose(b.Close)
	s, err := b.Space("profiles")
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	for lo := 1; lo <= cfg.Keys; lo += seedBatch {
		err := s.Transact(ctx, func(tx store.Tx) error {
			for id := lo; id <= min(lo+seedBatch-1, cfg.Keys); id++ {
				if err := tx.Set(profileKey(nil, id), profileValue(id)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("seed: %w", err)
		}
	}
	keys := make([][]byte, cfg.InFlight)
	r.trip = func(w int) error {
		keys[w] = profileKey(keys[w][:0], 1+rand.IntN(cfg.Keys))
		var v []byte
		err := s.ReadTransact(ctx, func(tx store.ReadTx) error {
			var err error
			v, err = tx.Get(keys[w])
			return err
		})
		if err == nil && v == nil {
			err = fmt.Errorf("%w: %s", ErrMissing, keys[w])
		}
		return err
	}
	return r, nil
}
