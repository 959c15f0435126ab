package badgerstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/griddle-mesh/griddle/internal/store"
)

// space is the Store of one key space: every key is prefix+key.
type space struct {
	b      *Backend
	prefix []byte
	end    []byte // the first key after every key with prefix
}

var _ store.Store = (*space)(nil)

// Transact implements store.Store.
func (s *space) Transact(ctx context.Context, fn func(tx store.Tx) error) error {
	return s.retry(ctx, func() error {
		return s.attempt(ctx, true, func(t *tx) error { return fn(t) })
	})
}

// ReadTransact implements store.Store.
func (s *space) ReadTransact(ctx context.Context, fn func(tx store.ReadTx) error) error {
	return s.retry(ctx, func() error {
		return s.attempt(ctx, false, func(t *tx) error { return fn(readTx{t}) })
	})
}

func (s *space) retry(ctx context.Context, attempt func() error) error {
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		err := attempt()
		if err == nil || !errors.Is(err, store.ErrConflict) {
			return err
		}
		if err := store.Wait(ctx, store.Backoff(n, time.Since(start))); err != nil {
			return err
		}
	}
}

// attempt runs fn once in a Badger transaction and commits it if update.
func (s *space) attempt(ctx context.Context, update bool, fn func(*tx) error) error {
	if err := s.b.enter(); err != nil {
		return err
	}
	defer s.b.leave()
	t := &tx{
		s:        s,
		ctx:      ctx,
		deadline: time.Now().Add(store.MaxTransactionTime),
		update:   update,
		start:    s.b.commits.position(), // before the snapshot: see commitLog
	}
	t.txn = s.b.db.NewTransaction(update)
	defer t.txn.Discard()
	if err := fn(t); err != nil {
		return err
	}
	if !update {
		return nil
	}
	if err := t.live(); err != nil {
		return err
	}
	if err := s.b.commits.commit(t); err != nil {
		return err
	}
	if t.committed == nil {
		return nil
	}
	if err := <-t.committed; err != nil {
		return mapErr("commit", err)
	}
	return s.b.durable()
}

// tx is one attempt's transaction. Writes are refused when !update.
type tx struct {
	s        *space
	txn      *badger.Txn
	ctx      context.Context
	deadline time.Time
	update   bool

	start   uint64     // commitLog position before the snapshot
	bytes   int        // key and value bytes written, as FoundationDB counts them
	writes  [][]byte   // full keys written or cleared
	ranges  []keyRange // full-key ranges read or cleared
	stamped []stampedWrite

	committed chan error // the commit's outcome, once commitLog.commit sent it
}

// stampedWrite is a SetStamped call, written at commit once the stamp is
// known.
type stampedWrite struct{ prefix, value []byte } // prefix is a full key

var _ store.Tx = (*tx)(nil)

// readTx hides tx's writes from ReadTransact's fn.
type readTx struct{ t *tx }

func (r readTx) Get(key []byte) ([]byte, error) { return r.t.Get(key) }
func (r readTx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	return r.t.Range(begin, end, opts)
}

// live reports why the attempt may not go on: ctx ended or it is too old.
func (t *tx) live() error {
	if err := t.ctx.Err(); err != nil {
		return err
	}
	if time.Now().After(t.deadline) {
		return fmt.Errorf("%w: attempt ran longer than %v", store.ErrTransactionTime, time.Duration(store.MaxTransactionTime))
	}
	return nil
}

func (t *tx) full(key []byte) []byte {
	k := make([]byte, 0, len(t.s.prefix)+len(key))
	return append(append(k, t.s.prefix...), key...)
}

// bounds returns the full-key range of [begin, end), empty end meaning the
// end of the space; ok is false for an empty range.
func (t *tx) bounds(begin, end []byte) (lo, hi []byte, ok bool) {
	lo = t.full(begin)
	hi = t.s.end
	if len(end) > 0 {
		hi = t.full(end)
	}
	return lo, hi, bytes.Compare(lo, hi) < 0
}

func (t *tx) writable() error {
	if !t.update {
		return store.ErrReadOnly
	}
	return t.live()
}

func (t *tx) grow(n int) error {
	if t.bytes+n > store.MaxTransactionBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", store.ErrTransactionLarge, t.bytes+n, store.MaxTransactionBytes)
	}
	t.bytes += n
	return nil
}

// Get implements store.ReadTx. A key that holds an empty value gives a
// non-nil empty slice.
func (t *tx) Get(key []byte) ([]byte, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	if err := store.CheckKey(key); err != nil {
		return nil, err
	}
	item, err := t.txn.Get(t.full(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, mapErr("get", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, mapErr("get", err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// Range implements store.ReadTx.
func (t *tx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	if err := store.CheckKey(begin); err != nil {
		return nil, err
	}
	if err := store.CheckKey(end); err != nil {
		return nil, err
	}
	lo, hi, ok := t.bounds(begin, end)
	if !ok {
		return nil, nil
	}
	var out []store.KeyValue
	last, err := t.scan(lo, hi, opts, func(item *badger.Item) error {
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if v == nil {
			v = []byte{}
		}
		out = append(out, store.KeyValue{Key: bytes.Clone(item.Key()[len(t.s.prefix):]), Value: v})
		return nil
	})
	if err != nil {
		return nil, mapErr("range", err)
	}
	if t.update {
		// A read that stopped at its limit depends only on the keys up to
		// the last one it returned.
		switch {
		case last == nil:
		case opts.Reverse:
			lo = last
		default:
			hi = append(last, 0)
		}
		t.ranges = append(t.ranges, keyRange{lo, hi})
	}
	return out, nil
}

// scan calls visit for the items with lo <= key < hi in order (descending
// with opts.Reverse), up to opts.Limit of them. If it stopped at the limit
// it returns a copy of the last key visited.
func (t *tx) scan(lo, hi []byte, opts store.RangeOptions, visit func(*badger.Item) error) (last []byte, err error) {
	it := t.txn.NewIterator(badger.IteratorOptions{Prefix: t.s.prefix, Reverse: opts.Reverse})
	defer it.Close()
	n := 0
	if opts.Reverse {
		// Badger's reverse Seek lands on the last key <= hi: step past hi.
		it.Seek(hi)
		if it.Valid() && bytes.Equal(it.Item().Key(), hi) {
			it.Next()
		}
	} else {
		it.Seek(lo)
	}
	for ; it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if opts.Reverse && bytes.Compare(k, lo) < 0 || !opts.Reverse && bytes.Compare(k, hi) >= 0 {
			break
		}
		if err := visit(item); err != nil {
			return nil, err
		}
		n++
		if opts.Limit > 0 && n == opts.Limit {
			return item.KeyCopy(nil), nil
		}
	}
	return nil, nil
}

// Set implements store.Tx.
func (t *tx) Set(key, value []byte) error {
	if err := t.writable(); err != nil {
		return err
	}
	if err := store.CheckSet(key, value); err != nil {
		return err
	}
	if err := t.grow(len(key) + len(value)); err != nil {
		return err
	}
	k := t.full(key)
	// Badger keeps value until commit; the caller may reuse it.
	if err := t.txn.Set(k, bytes.Clone(value)); err != nil {
		return mapErr("set", err)
	}
	t.writes = append(t.writes, k)
	return nil
}

// Clear implements store.Tx.
func (t *tx) Clear(key []byte) error {
	if err := t.writable(); err != nil {
		return err
	}
	if err := store.CheckKey(key); err != nil {
		return err
	}
	if err := t.grow(len(key)); err != nil {
		return err
	}
	k := t.full(key)
	if err := t.txn.Delete(k); err != nil {
		return mapErr("clear", err)
	}
	t.writes = append(t.writes, k)
	return nil
}

// SetStamped implements store.Tx. The key is written under the commit
// lock, with the next values of the Backend's stamp counter.
func (t *tx) SetStamped(prefix, value []byte) error {
	if err := t.writable(); err != nil {
		return err
	}
	if err := store.CheckStamped(prefix, value, len(t.stamped)); err != nil {
		return err
	}
	if err := t.grow(len(prefix) + store.StampBytes + len(value)); err != nil {
		return err
	}
	t.stamped = append(t.stamped, stampedWrite{t.full(prefix), bytes.Clone(value)})
	return nil
}

// ClearRange implements store.Tx. It deletes the keys the transaction sees
// in the range one by one, so clearing many keys can fill Badger's write
// batch (store.ErrTransactionLarge). The range counts as read: a key another
// transaction writes into it meanwhile makes this one conflict and retry,
// so that no key survives a clear that committed after it.
func (t *tx) ClearRange(begin, end []byte) error {
	if err := t.writable(); err != nil {
		return err
	}
	if err := store.CheckKey(begin); err != nil {
		return err
	}
	if err := store.CheckKey(end); err != nil {
		return err
	}
	lo, hi, ok := t.bounds(begin, end)
	if !ok {
		return nil
	}
	if err := t.grow(len(begin) + len(end)); err != nil {
		return err
	}
	var keys [][]byte
	if _, err := t.scan(lo, hi, store.RangeOptions{}, func(item *badger.Item) error {
		keys = append(keys, item.KeyCopy(nil))
		return nil
	}); err != nil {
		return mapErr("clear range", err)
	}
	for _, k := range keys {
		if err := t.txn.Delete(k); err != nil {
			return mapErr("clear range", err)
		}
	}
	t.writes = append(t.writes, keys...)
	t.ranges = append(t.ranges, keyRange{lo, hi})
	return nil
}
