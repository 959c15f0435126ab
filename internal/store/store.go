// Package store is the state API of Griddle services: serializable
// transactions with automatic retry on conflict, as FoundationDB defines
// them, over interchangeable backends that pass one conformance suite.
package store

import (
	"context"
	"errors"
)

// FoundationDB's limits, applied by every backend.
const (
	MaxKeyBytes         = 10_000
	MaxValueBytes       = 100_000
	MaxTransactionBytes = 10_000_000
	MaxTransactionTime  = 5_000_000_000 // 5 s, in nanoseconds (time.Duration)
)

// Errors every backend reports the same way (checked with errors.Is).
var (
	ErrConflict         = errors.New("store: transaction conflict")        // retried by Transact
	ErrKeyTooLarge      = errors.New("store: key too large")               // > MaxKeyBytes
	ErrValueTooLarge    = errors.New("store: value too large")             // > MaxValueBytes
	ErrTransactionLarge = errors.New("store: transaction too large")       // > MaxTransactionBytes
	ErrTransactionTime  = errors.New("store: transaction too old")         // > MaxTransactionTime
	ErrReadOnly         = errors.New("store: write in a read-only transaction")
	ErrClosed           = errors.New("store: closed")
)

// KeyValue is one entry of a range read.
type KeyValue struct {
	Key, Value []byte
}

// RangeOptions shape a range read over [Begin, End).
type RangeOptions struct {
	Limit   int  // 0: no limit
	Reverse bool // from End down
}

// ReadTx is what a read-only transaction can do.
type ReadTx interface {
	// Get returns the value of key, or nil and no error when there is none.
	Get(key []byte) ([]byte, error)
	// Range returns the entries with Begin <= key < End, in key order (reversed with Reverse).
	Range(begin, end []byte, opts RangeOptions) ([]KeyValue, error)
}

// Tx is what a read-write transaction can do.
type Tx interface {
	ReadTx
	Set(key, value []byte) error
	Clear(key []byte) error
	ClearRange(begin, end []byte) error
}

// Store runs transactions over one key space. Implementations are safe for
// concurrent use.
//
// Transact runs fn in a serializable transaction and commits it; on
// ErrConflict it runs fn again (fn must be safe to run more than once and
// must not keep tx), until it commits, fn returns an error (returned as is,
// nothing committed), or ctx ends. ReadTransact is the same for reads only.
type Store interface {
	Transact(ctx context.Context, fn func(tx Tx) error) error
	ReadTransact(ctx context.Context, fn func(tx ReadTx) error) error
}
