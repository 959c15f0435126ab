// Package store is the state API of Griddle services: serializable
// transactions with automatic retry on conflict, as FoundationDB defines
// them, over interchangeable backends that pass one conformance suite.
package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
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
	ErrConflict         = errors.New("store: transaction conflict")  // retried by Transact
	ErrKeyTooLarge      = errors.New("store: key too large")         // > MaxKeyBytes
	ErrValueTooLarge    = errors.New("store: value too large")       // > MaxValueBytes
	ErrTransactionLarge = errors.New("store: transaction too large") // > MaxTransactionBytes
	ErrTransactionTime  = errors.New("store: transaction too old")   // > MaxTransactionTime
	ErrReadOnly         = errors.New("store: write in a read-only transaction")
	ErrClosed           = errors.New("store: closed")
)

// KeyValue is one entry of a range read.
type KeyValue struct {
	Key, Value []byte
}

// RangeOptions shape a range read over [begin, end).
type RangeOptions struct {
	Limit   int  // 0: no limit
	Reverse bool // from End down
}

// ReadTx is what a read-only transaction can do.
type ReadTx interface {
	// Get returns the value of key, or nil and no error when there is none.
	Get(key []byte) ([]byte, error)
	// Range returns the entries with begin <= key < end, in key order
	// (descending with Reverse; with a Limit, the first Limit entries in that
	// order). An empty end means the end of the key space, so Range(nil, nil,
	// opts) reads the whole space; otherwise begin >= end is an empty range.
	Range(begin, end []byte, opts RangeOptions) ([]KeyValue, error)
}

// Tx is what a read-write transaction can do.
// Reads see the transaction's own writes. Writes beyond the limits fail at
// once with ErrKeyTooLarge, ErrValueTooLarge or ErrTransactionLarge.
type Tx interface {
	ReadTx
	Set(key, value []byte) error
	Clear(key []byte) error
	// ClearRange clears the keys begin <= key < end, with Range's meaning
	// of an empty end.
	ClearRange(begin, end []byte) error
	// SetStamped sets the key prefix+stamp to value, where stamp is
	// StampBytes that the store completes when the transaction commits
	// (FoundationDB's versionstamped keys): the stamps of a later commit
	// compare greater than those of an earlier one, and the stamps of
	// one transaction follow the order of its SetStamped calls. Nothing
	// is read, so concurrent transactions that only append this way never
	// conflict with each other. The transaction must not read a range
	// that holds the key: its name is not known before commit (the
	// embedded store does not see it, FoundationDB fails the read). The
	// size limits count prefix plus StampBytes as the key.
	SetStamped(prefix, value []byte) error
}

// StampBytes is the length of the stamp SetStamped appends to its prefix:
// 10 bytes that order commits (FoundationDB: the 8-byte commit version and
// the 2-byte order within its batch, big-endian) and 2 that order the
// stamped keys of one transaction (big-endian, from 0). The embedded store
// writes 0, 0, then a counter of its commits that stamped keys (8 bytes
// big-endian, kept across restarts), then the 2 bytes.
const StampBytes = 12

// MaxStampedPerTx is how many SetStamped calls one transaction may make.
const MaxStampedPerTx = 1 << 16

// ErrTooManyStamped reports a transaction's SetStamped call beyond
// MaxStampedPerTx.
var ErrTooManyStamped = errors.New("store: too many stamped keys in one transaction")

// CheckStamped returns the error every backend reports for a SetStamped
// of prefix and value beyond the limits, or nil; n is how many SetStamped
// calls the transaction made before this one.
func CheckStamped(prefix, value []byte, n int) error {
	if n >= MaxStampedPerTx {
		return fmt.Errorf("%w: limit %d", ErrTooManyStamped, MaxStampedPerTx)
	}
	if len(prefix)+StampBytes > MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes with the stamp, limit %d", ErrKeyTooLarge, len(prefix)+StampBytes, MaxKeyBytes)
	}
	if len(value) > MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), MaxValueBytes)
	}
	return nil
}

// Store runs transactions over one key space. Implementations are safe for
// concurrent use.
//
// Transact runs fn in a serializable transaction and commits it; on
// ErrConflict it runs fn again (fn must be safe to run more than once and
// must not keep tx), until it commits, fn returns an error (returned as is,
// nothing committed), or ctx ends. An error from fn that wraps ErrConflict
// is retried like a conflict at commit. An attempt older than
// MaxTransactionTime fails with ErrTransactionTime and is not retried.
// Between attempts Transact waits a short, jittered, growing back-off.
// ReadTransact is the same for reads only: it sees one consistent snapshot,
// commits nothing, and never conflicts.
type Store interface {
	Transact(ctx context.Context, fn func(tx Tx) error) error
	ReadTransact(ctx context.Context, fn func(tx ReadTx) error) error
}

// ErrSpace reports a key space name that ValidSpace rejects, or a key space
// a server does not let its caller use.
var ErrSpace = errors.New("store: invalid key space")

// MaxSpaceBytes is the longest key space name.
const MaxSpaceBytes = 63

// Backend is one database divided into key spaces, one per service. Keys of
// one space can be neither read, written, range-read nor cleared through
// another space's Store, whatever bytes they hold.
//
// A Backend is safe for concurrent use. Close waits for running transaction
// attempts to end, then releases the database; afterwards every Transact and
// ReadTransact of its spaces fails with ErrClosed.
type Backend interface {
	// Space returns the Store of the key space name (see ValidSpace). It is
	// cheap; calling it twice with one name gives Stores over the same keys.
	Space(name string) (Store, error)
	Close() error
}

// InProcess is implemented by a Backend whose data lives in this process
// (an embedded database): a one-key read is a lookup in memory or a read
// of a local file, never a wait on the network.
type InProcess interface {
	InProcess() bool
}

// ValidSpace reports whether name is a key space name: 1 to MaxSpaceBytes
// bytes of lowercase ASCII letters, digits, '-' and '.'. The error wraps
// ErrSpace.
func ValidSpace(name string) error {
	if name == "" || len(name) > MaxSpaceBytes {
		return fmt.Errorf("%w: %q: want 1 to %d bytes", ErrSpace, name, MaxSpaceBytes)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("%w: %q: only lowercase letters, digits, '-' and '.' are allowed", ErrSpace, name)
		}
	}
	return nil
}

// CheckSet returns the error every backend reports for a Set of key and
// value beyond the limits, or nil.
func CheckSet(key, value []byte) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if len(value) > MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), MaxValueBytes)
	}
	return nil
}

// CheckKey returns the error every backend reports for a key longer than
// MaxKeyBytes, or nil. Keys are measured as the caller wrote them, without
// the key space's prefix.
func CheckKey(key []byte) error {
	if len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), MaxKeyBytes)
	}
	return nil
}

// Backoff is how long a retry loop waits after n failed attempts (n >= 1)
// that took about took each: a random duration up to took (at least
// 100 µs) doubled per failure, at most 32 times took and at most 1 s.
// Scaling with the attempt's length spreads conflicting transactions out
// until about one at a time runs, whether attempts are local or remote
// (measured: 50 clients incrementing one counter over HTTP commit nearly
// as fast as one client alone).
func Backoff(n int, took time.Duration) time.Duration {
	ceil := max(took, 100*time.Microsecond) << min(max(n-1, 0), 5)
	ceil = min(ceil, time.Second)
	return time.Duration(rand.Int64N(int64(ceil))) + 10*time.Microsecond
}

// Wait sleeps for d, or returns ctx.Err() as soon as ctx ends.
func Wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ManyGetter is implemented by transactions that read several keys in one
// step, cheaper than one Get after another (a transaction run on the
// client's side reads them in one round trip).
type ManyGetter interface {
	// GetMany returns the values of keys, in order, each as Get would.
	GetMany(keys [][]byte) ([][]byte, error)
}

// GetMany reads keys in tx, in one step where tx is a ManyGetter (reads
// that can go together should), else one Get after another.
func GetMany(tx ReadTx, keys ...[]byte) ([][]byte, error) {
	if g, ok := tx.(ManyGetter); ok {
		return g.GetMany(keys)
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		v, err := tx.Get(k)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// Getter is implemented by Stores that read one key in a single step,
// cheaper than a transaction around the read (a remote store answers it in
// one round trip).
type Getter interface {
	// Get returns the value of key, or nil and no error when there is none,
	// as a read-only transaction of its own would.
	Get(ctx context.Context, key []byte) ([]byte, error)
}

// Get reads one key in a transaction of its own, through Getter where s
// has it. A single read is trivially serializable.
func Get(ctx context.Context, s Store, key []byte) ([]byte, error) {
	if g, ok := s.(Getter); ok {
		return g.Get(ctx, key)
	}
	var v []byte
	err := s.ReadTransact(ctx, func(tx ReadTx) error {
		var err error
		v, err = tx.Get(key)
		return err
	})
	return v, err
}
