package badgerstore_test

import (
	"context"
	"fmt"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
)

func Example() {
	ctx := context.Background()
	b, err := badgerstore.Open(ctx, badgerstore.Config{InMemory: true})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	profiles, err := b.Space("profiles")
	if err != nil {
		panic(err)
	}
	// fn may run more than once: it only reads and writes through tx.
	err = profiles.Transact(ctx, func(tx store.Tx) error {
		return tx.Set([]byte("profile/1"), []byte("ada"))
	})
	if err != nil {
		panic(err)
	}
	err = profiles.ReadTransact(ctx, func(tx store.ReadTx) error {
		kvs, err := tx.Range([]byte("profile/"), nil, store.RangeOptions{Limit: 10})
		for _, kv := range kvs {
			fmt.Printf("%s = %s\n", kv.Key, kv.Value)
		}
		return err
	})
	if err != nil {
		panic(err)
	}
	// Output: profile/1 = ada
}
