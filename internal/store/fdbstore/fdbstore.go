//go:build foundationdb

package fdbstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/apple/foundationdb/bindings/go/src/fdb"
	"github.com/apple/foundationdb/bindings/go/src/fdb/subspace"

	"github.com/griddle-mesh/griddle/internal/store"
)

// ErrConfig is wrapped by every error of Config.Validate.
var ErrConfig = errors.New("fdbstore: invalid config")

// DefaultAPIVersion is the API version the bindings are written against.
const DefaultAPIVersion = 730

// DefaultRoot is the first tuple element of every key space's subspace.
const DefaultRoot = "griddle"

// FoundationDB error codes the backend translates
// (https://apple.github.io/foundationdb/api-error-codes.html).
const (
	codeTransactionTooOld   = 1007
	codeNotCommitted        = 1020
	codeTransactionTimedOut = 1031
	codeTransactionTooLarge = 2101
	codeKeyTooLarge         = 2102
	codeValueTooLarge       = 2103
)

// Config names a FoundationDB cluster.
type Config struct {
	// ClusterFile is the cluster file; "" means the client's default
	// (FDB_CLUSTER_FILE, then /etc/foundationdb/fdb.cluster).
	ClusterFile string
	// APIVersion is selected once per process (a process cannot use two);
	// 0 means DefaultAPIVersion.
	APIVersion int
	// Root separates Griddle's data from the cluster's other users, and
	// tests from each other; "" means DefaultRoot.
	Root string
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	if c.APIVersion != 0 && (c.APIVersion < 200 || c.APIVersion > DefaultAPIVersion) {
		return fmt.Errorf("%w: APIVersion %d: want 200 to %d", ErrConfig, c.APIVersion, DefaultAPIVersion)
	}
	return nil
}

// Backend is a FoundationDB database divided into key spaces (see the
// package documentation).
//
// The bindings keep one database handle per cluster file for the whole
// process, shared by every Backend of that file; Close therefore leaves the
// handle (and the client's network thread) open and only stops this
// Backend's transactions.
type Backend struct {
	db   fdb.Database
	root subspace.Subspace

	mu     sync.Mutex
	idle   *sync.Cond
	closed bool
	active int // Transact and ReadTransact calls running
}

var _ store.Backend = (*Backend)(nil)

// Open selects the API version and opens the cluster's database. It does
// not wait for the cluster: an unreachable cluster shows as transactions
// that wait until their ctx ends.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v := cfg.APIVersion
	if v == 0 {
		v = DefaultAPIVersion
	}
	if err := fdb.APIVersion(v); err != nil {
		return nil, fmt.Errorf("fdbstore: API version %d: %w", v, err)
	}
	db, err := fdb.OpenDatabase(cfg.ClusterFile)
	if err != nil {
		return nil, fmt.Errorf("fdbstore: open %q: %w", cfg.ClusterFile, err)
	}
	root := cfg.Root
	if root == "" {
		root = DefaultRoot
	}
	b := &Backend{db: db, root: subspace.Sub(root)}
	b.idle = sync.NewCond(&b.mu)
	return b, nil
}

// Close waits for running transactions and makes later ones fail with
// store.ErrClosed. Later calls return nil.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for b.active > 0 {
		b.idle.Wait()
	}
	return nil
}

// Space returns the Store of key space name: the subspace (Root, name).
func (b *Backend) Space(name string) (store.Store, error) {
	if err := store.ValidSpace(name); err != nil {
		return nil, err
	}
	prefix := b.root.Sub(name).Bytes()
	end, err := fdb.Strinc(prefix) // prefix ends in 0x00: never fails
	if err != nil {
		return nil, fmt.Errorf("fdbstore: space %q: %w", name, err)
	}
	return &space{b: b, prefix: prefix, end: end}, nil
}

func (b *Backend) enter() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return store.ErrClosed
	}
	b.active++
	return nil
}

func (b *Backend) leave() {
	b.mu.Lock()
	b.active--
	if b.active == 0 {
		b.idle.Broadcast()
	}
	b.mu.Unlock()
}

type space struct {
	b      *Backend
	prefix []byte
	end    []byte // fdb.Strinc(prefix): the first key after the space
}

var _ store.Store = (*space)(nil)

// Transact implements store.Store with FoundationDB's retry loop, as
// fdb.Database.Transact runs it (fn, Commit, OnError on failure), plus
// what that loop cannot do: it stops when ctx ends (cancelling the
// transaction's outstanding reads and commit), and reports
// transaction_too_old (an attempt past 5 s) as store.ErrTransactionTime
// instead of retrying it.
func (s *space) Transact(ctx context.Context, fn func(tx store.Tx) error) error {
	return s.run(ctx, true, func(t *tx) error {
		if err := fn(t); err != nil {
			return err
		}
		return t.tr.Commit().Get()
	})
}

// ReadTransact implements store.Store: the same loop, without a commit.
func (s *space) ReadTransact(ctx context.Context, fn func(tx store.ReadTx) error) error {
	return s.run(ctx, false, func(t *tx) error { return fn(readTx{t}) })
}

func (s *space) run(ctx context.Context, write bool, attempt func(*tx) error) error {
	if err := s.b.enter(); err != nil {
		return err
	}
	defer s.b.leave()
	if err := ctx.Err(); err != nil {
		return err
	}
	tr, err := s.b.db.CreateTransaction()
	if err != nil {
		return mapErr("create transaction", err)
	}
	stop := context.AfterFunc(ctx, tr.Cancel)
	defer stop()
	for n := 1; ; n++ {
		start := time.Now()
		err := attempt(&tx{s: s, tr: tr, write: write})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err() // the transaction was cancelled for it
		}
		var fe fdb.Error
		switch {
		case errors.As(err, &fe):
			switch fe.Code {
			case codeTransactionTooOld, codeTransactionTimedOut, codeTransactionTooLarge, codeKeyTooLarge, codeValueTooLarge:
				return mapErr("commit", err)
			}
			// OnError waits FoundationDB's back-off and resets tr if the
			// error is retryable (not_committed among them); otherwise it
			// returns the error.
			if err := tr.OnError(fe).Get(); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return mapErr("retry", err)
			}
		case errors.Is(err, store.ErrConflict):
			// fn reported a conflict of its own: retry like FoundationDB.
			tr.Reset()
			if err := store.Wait(ctx, store.Backoff(n, time.Since(start))); err != nil {
				return err
			}
		default:
			return err // fn's own error, or a limit: nothing committed
		}
	}
}

// mapErr translates FoundationDB's errors into the store's, keeping the
// fdb.Error in the chain.
func mapErr(op string, err error) error {
	var fe fdb.Error
	if !errors.As(err, &fe) {
		return fmt.Errorf("fdbstore: %s: %w", op, err)
	}
	var sentinel error
	switch fe.Code {
	case codeTransactionTooOld, codeTransactionTimedOut:
		sentinel = store.ErrTransactionTime
	case codeTransactionTooLarge:
		sentinel = store.ErrTransactionLarge
	case codeKeyTooLarge:
		sentinel = store.ErrKeyTooLarge
	case codeValueTooLarge:
		sentinel = store.ErrValueTooLarge
	case codeNotCommitted:
		sentinel = store.ErrConflict
	default:
		return fmt.Errorf("fdbstore: %s: %w", op, err)
	}
	return fmt.Errorf("%w: %s: %w", sentinel, op, err)
}

// tx is one attempt: tr with the space's prefix and the store's limits.
type tx struct {
	s       *space
	tr      fdb.Transaction
	write   bool
	bytes   int // key and value bytes written in this attempt
	stamped int // SetStamped calls in this attempt
}

var (
	_ store.Tx         = (*tx)(nil)
	_ store.ManyGetter = (*tx)(nil)
)

type readTx struct{ t *tx }

func (r readTx) Get(key []byte) ([]byte, error)          { return r.t.Get(key) }
func (r readTx) GetMany(keys [][]byte) ([][]byte, error) { return r.t.GetMany(keys) }
func (r readTx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	return r.t.Range(begin, end, opts)
}

func (t *tx) full(key []byte) fdb.Key {
	k := make([]byte, 0, len(t.s.prefix)+len(key))
	return append(append(k, t.s.prefix...), key...)
}

func (t *tx) bounds(begin, end []byte) (lo, hi fdb.Key, ok bool) {
	lo, hi = t.full(begin), fdb.Key(t.s.end)
	if len(end) > 0 {
		hi = t.full(end)
	}
	return lo, hi, bytes.Compare(lo, hi) < 0
}

func (t *tx) writable(n int) error {
	if !t.write {
		return store.ErrReadOnly
	}
	if t.bytes+n > store.MaxTransactionBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", store.ErrTransactionLarge, t.bytes+n, store.MaxTransactionBytes)
	}
	t.bytes += n
	return nil
}

// Get implements store.ReadTx.
func (t *tx) Get(key []byte) ([]byte, error) {
	if err := store.CheckKey(key); err != nil {
		return nil, err
	}
	v, err := t.tr.Get(t.full(key)).Get()
	if err != nil {
		return nil, mapErr("get", err)
	}
	if v == nil {
		return nil, nil // absent; present values are non-nil
	}
	return v, nil
}

// GetMany implements store.ManyGetter: every read is sent to the cluster
// before the first answer is awaited.
func (t *tx) GetMany(keys [][]byte) ([][]byte, error) {
	futs := make([]fdb.FutureByteSlice, len(keys))
	for i, k := range keys {
		if err := store.CheckKey(k); err != nil {
			return nil, err
		}
		futs[i] = t.tr.Get(t.full(k))
	}
	out := make([][]byte, len(keys))
	for i, f := range futs {
		v, err := f.Get()
		if err != nil {
			return nil, mapErr("get", err)
		}
		out[i] = v
	}
	return out, nil
}

// Range implements store.ReadTx.
func (t *tx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	if err := errors.Join(store.CheckKey(begin), store.CheckKey(end)); err != nil {
		return nil, err
	}
	lo, hi, ok := t.bounds(begin, end)
	if !ok {
		return nil, nil
	}
	kvs, err := t.tr.GetRange(fdb.KeyRange{Begin: lo, End: hi}, fdb.RangeOptions{
		Limit:   max(opts.Limit, 0),
		Mode:    fdb.StreamingModeWantAll,
		Reverse: opts.Reverse,
	}).GetSliceWithError()
	if err != nil {
		return nil, mapErr("range", err)
	}
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make([]store.KeyValue, len(kvs))
	for i, kv := range kvs {
		v := kv.Value
		if v == nil {
			v = []byte{}
		}
		out[i] = store.KeyValue{Key: bytes.Clone(kv.Key[len(t.s.prefix):]), Value: v}
	}
	return out, nil
}

// Set implements store.Tx; the client copies key and value at once.
func (t *tx) Set(key, value []byte) error {
	if err := store.CheckSet(key, value); err != nil {
		return err
	}
	if err := t.writable(len(key) + len(value)); err != nil {
		return err
	}
	t.tr.Set(t.full(key), value)
	return nil
}

// Clear implements store.Tx.
func (t *tx) Clear(key []byte) error {
	if err := store.CheckKey(key); err != nil {
		return err
	}
	if err := t.writable(len(key)); err != nil {
		return err
	}
	t.tr.Clear(t.full(key))
	return nil
}

// SetStamped implements store.Tx with FoundationDB's versionstamped keys:
// the key is the space's prefix, prefix, 10 bytes FoundationDB fills in at
// commit (commit version and order in its batch) and 2 bytes counting this
// transaction's SetStamped calls, big-endian from 0. FoundationDB refuses a
// read, in the same transaction, of a range that holds such a key
// (accessed_unreadable); that read fails with an error instead of not
// seeing the key.
func (t *tx) SetStamped(prefix, value []byte) error {
	if !t.write {
		return store.ErrReadOnly
	}
	if err := store.CheckStamped(prefix, value, t.stamped); err != nil {
		return err
	}
	if err := t.writable(len(prefix) + store.StampBytes + len(value)); err != nil {
		return err
	}
	const versionstamp = 10 // bytes FoundationDB fills in
	k := make([]byte, 0, len(t.s.prefix)+len(prefix)+store.StampBytes+4)
	k = append(append(k, t.s.prefix...), prefix...)
	pos := len(k)
	k = append(k, make([]byte, versionstamp)...)
	k = binary.BigEndian.AppendUint16(k, uint16(t.stamped))
	k = binary.LittleEndian.AppendUint32(k, uint32(pos)) // where the stamp goes (API 520+)
	t.tr.SetVersionstampedKey(fdb.Key(k), value)
	t.stamped++
	return nil
}

// ClearRange implements store.Tx: one range clear, whatever it holds.
func (t *tx) ClearRange(begin, end []byte) error {
	if err := errors.Join(store.CheckKey(begin), store.CheckKey(end)); err != nil {
		return err
	}
	if err := t.writable(len(begin) + len(end)); err != nil {
		return err
	}
	lo, hi, ok := t.bounds(begin, end)
	if !ok {
		return nil
	}
	t.tr.ClearRange(fdb.KeyRange{Begin: lo, End: hi})
	return nil
}
