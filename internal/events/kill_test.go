package events_test

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/griddle-mesh/griddle/internal/store"
)

// errKilled is what a killed store answers: the process that used it is gone.
var errKilled = errors.New("test: store killed")

// killable wraps a store.Store; after kill, every transaction fails without
// running, as if the process using the store had died at that instant.
type killable struct {
	store.Store
	dead atomic.Bool
}

func (k *killable) kill() { k.dead.Store(true) }

func (k *killable) Transact(ctx context.Context, fn func(tx store.Tx) error) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.Transact(ctx, fn)
}

func (k *killable) ReadTransact(ctx context.Context, fn func(tx store.ReadTx) error) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.ReadTransact(ctx, fn)
}
