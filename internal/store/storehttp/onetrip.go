package storehttp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp/storepb"
)

// Caller sends one operation (OpGet, OpRange, OpCommit) to a Server's
// Op, in the Server's own space, and returns the answer: a unary call on
// the connection between a handler and its sidecar, or one HTTP request.
type Caller func(ctx context.Context, op []byte) ([]byte, error)

// OneTrip is a store.Store whose transactions run on the caller's side and
// reach the server in as few round trips as their shape allows: each read
// the transaction's function makes is one round trip (reads of keys it
// wrote, or read before, none), its writes are buffered and sent with the
// commit, and the commit is one round trip, in which the server checks
// that what the function read still holds, applies the writes, and retries
// its own conflicts. A transaction that only writes (such as storing a
// message and appending an event) is one round trip; one that reads a key
// and writes is two. Reads are checked again at commit, so the result is
// serializable; a function that returns an error after two reads or more
// has them checked too, so that it never acts on a mix of two states.
//
// A transaction whose function reads a range after writing runs again in
// the fallback Store (one round trip per operation), which sees its own
// writes in ranges; so does a function that keeps going after such a read
// failed.
//
// OneTrip implements store.Getter. It is safe for concurrent use.
type OneTrip struct {
	call     Caller
	fallback store.Store
}

var (
	_ store.Store  = (*OneTrip)(nil)
	_ store.Getter = (*OneTrip)(nil)
)

// NewOneTrip returns a OneTrip sending operations with call, falling back
// to fallback, a Store over the same key space.
func NewOneTrip(call Caller, fallback store.Store) *OneTrip {
	return &OneTrip{call: call, fallback: fallback}
}

// Get implements store.Getter: one OpGet.
func (o *OneTrip) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := store.CheckKey(key); err != nil {
		return nil, err
	}
	b, err := o.call(ctx, AppendGet(nil, key))
	if err != nil {
		return nil, err
	}
	return DecodeGet(b)
}

// Transact implements store.Store.
func (o *OneTrip) Transact(ctx context.Context, fn func(tx store.Tx) error) error {
	return o.run(ctx, true, func(t *bufTx) error { return fn(t) }, func() error { return o.fallback.Transact(ctx, fn) })
}

// ReadTransact implements store.Store.
func (o *OneTrip) ReadTransact(ctx context.Context, fn func(tx store.ReadTx) error) error {
	return o.run(ctx, false, func(t *bufTx) error { return fn(bufReadTx{t}) }, func() error { return o.fallback.ReadTransact(ctx, fn) })
}

func (o *OneTrip) run(ctx context.Context, write bool, fn func(*bufTx) error, fallback func() error) error {
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		t := &bufTx{o: o, ctx: ctx, write: write, deadline: start.Add(store.MaxTransactionTime)}
		err := fn(t)
		if t.fellBack {
			return fallback()
		}
		switch {
		case err == nil:
			err = t.commit()
		case errors.Is(err, store.ErrConflict):
		case t.reads() > 1:
			// Was err a consequence of what the function read? Only if
			// that still holds.
			if cerr := t.check(); cerr != nil {
				err = cerr
			}
		}
		if err == nil || !errors.Is(err, store.ErrConflict) {
			return err
		}
		if err := store.Wait(ctx, store.Backoff(n, time.Since(start))); err != nil {
			return err
		}
	}
}

// errFallback fails the read that makes a transaction run again in the
// fallback Store.
var errFallback = errors.New("storehttp: the transaction runs again with a round trip per operation")

// bufTx is one attempt of a OneTrip transaction.
type bufTx struct {
	o        *OneTrip
	ctx      context.Context
	write    bool
	deadline time.Time
	fellBack bool

	b       batch
	seen    map[string][]byte // keys read → value (nil: absent)
	bytes   int
	stamped int
}

var (
	_ store.Tx         = (*bufTx)(nil)
	_ store.ManyGetter = (*bufTx)(nil)
	_ store.ManyGetter = bufReadTx{}
)

type bufReadTx struct{ t *bufTx }

func (r bufReadTx) Get(key []byte) ([]byte, error)          { return r.t.Get(key) }
func (r bufReadTx) GetMany(keys [][]byte) ([][]byte, error) { return r.t.GetMany(keys) }
func (r bufReadTx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	return r.t.Range(begin, end, opts)
}

func (t *bufTx) reads() int { return len(t.b.reads) + len(t.b.ranges) }

func (t *bufTx) live() error {
	if err := t.ctx.Err(); err != nil {
		return err
	}
	if time.Now().After(t.deadline) {
		return fmt.Errorf("%w: attempt ran longer than %v", store.ErrTransactionTime, time.Duration(store.MaxTransactionTime))
	}
	if t.fellBack {
		return errFallback
	}
	return nil
}

// Get implements store.ReadTx.
func (t *bufTx) Get(key []byte) ([]byte, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	if err := store.CheckKey(key); err != nil {
		return nil, err
	}
	if v, ok := t.written(key); ok {
		return v, nil
	}
	if v, ok := t.seen[string(key)]; ok {
		return bytes.Clone(v), nil
	}
	b, err := t.o.call(t.ctx, AppendGet(nil, key))
	if err != nil {
		return nil, err
	}
	v, err := DecodeGet(b)
	if err != nil {
		return nil, err
	}
	if t.seen == nil {
		t.seen = map[string][]byte{}
	}
	t.seen[string(key)] = v
	t.b.reads = append(t.b.reads, readCheck{key: bytes.Clone(key), digest: valueDigest(v)})
	return bytes.Clone(v), nil
}

// GetMany implements store.ManyGetter: the keys neither written nor read
// before in the transaction are read in one round trip.
func (t *bufTx) GetMany(keys [][]byte) ([][]byte, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	out := make([][]byte, len(keys))
	var need [][]byte
	var at []int
	for i, k := range keys {
		if err := store.CheckKey(k); err != nil {
			return nil, err
		}
		if v, ok := t.written(k); ok {
			out[i] = v
		} else if v, ok := t.seen[string(k)]; ok {
			out[i] = bytes.Clone(v)
		} else {
			need, at = append(need, k), append(at, i)
		}
	}
	switch len(need) {
	case 0:
		return out, nil
	case 1:
		v, err := t.Get(need[0])
		out[at[0]] = v
		return out, err
	}
	b, err := t.o.call(t.ctx, appendGetMany(nil, need))
	if err != nil {
		return nil, err
	}
	m, err := Decode(b)
	if err != nil {
		return nil, err
	}
	vals, err := decodeValues(m)
	if err != nil || len(vals) != len(need) {
		return nil, fmt.Errorf("storehttp: decoding the answer: %d values for %d keys (%v)", len(vals), len(need), err)
	}
	if t.seen == nil {
		t.seen = map[string][]byte{}
	}
	for j, v := range vals {
		k := need[j]
		if _, dup := t.seen[string(k)]; !dup {
			t.seen[string(k)] = v
			t.b.reads = append(t.b.reads, readCheck{key: bytes.Clone(k), digest: valueDigest(v)})
		}
		out[at[j]] = bytes.Clone(v)
	}
	return out, nil
}

// written returns what the transaction's own writes made of key, if they
// touched it.
func (t *bufTx) written(key []byte) ([]byte, bool) {
	for i := len(t.b.writes) - 1; i >= 0; i-- {
		w := t.b.writes[i]
		switch w.kind {
		case writeSet:
			if bytes.Equal(w.a, key) {
				return bytes.Clone(w.b), true
			}
		case writeClear:
			if bytes.Equal(w.a, key) {
				return nil, true
			}
		case writeClearRange:
			if bytes.Compare(w.a, key) <= 0 && (len(w.b) == 0 || bytes.Compare(key, w.b) < 0) {
				return nil, true
			}
		}
	}
	return nil, false
}

// Range implements store.ReadTx. After a write (other than SetStamped),
// it makes the transaction run again in the fallback Store.
func (t *bufTx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	if err := errors.Join(store.CheckKey(begin), store.CheckKey(end)); err != nil {
		return nil, err
	}
	if len(t.b.writes) > t.stamped {
		t.fellBack = true
		return nil, errFallback
	}
	limit := int32(min(max(opts.Limit, 0), 1<<31-1))
	req := &storepb.RangeRequest{Begin: begin, End: end, Limit: limit, Reverse: opts.Reverse}
	op, _ := proto.MarshalOptions{}.MarshalAppend([]byte{OpRange}, req)
	b, err := t.o.call(t.ctx, op)
	if err != nil {
		return nil, err
	}
	m, err := Decode(b)
	if err != nil {
		return nil, err
	}
	var resp storepb.RangeResponse
	if err := proto.Unmarshal(m, &resp); err != nil {
		return nil, fmt.Errorf("storehttp: decoding the answer: %w", err)
	}
	kvs := kvsOf(&resp)
	t.b.ranges = append(t.b.ranges, rangeCheck{begin: bytes.Clone(begin), end: bytes.Clone(end),
		limit: int(limit), reverse: opts.Reverse, digest: rangeDigest(kvs)})
	return kvs, nil
}

func (t *bufTx) writable(n int) error {
	if !t.write {
		return store.ErrReadOnly
	}
	if err := t.live(); err != nil {
		return err
	}
	if t.bytes+n > store.MaxTransactionBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", store.ErrTransactionLarge, t.bytes+n, store.MaxTransactionBytes)
	}
	t.bytes += n
	return nil
}

// Set implements store.Tx.
func (t *bufTx) Set(key, value []byte) error {
	if err := store.CheckSet(key, value); err != nil {
		return err
	}
	if err := t.writable(len(key) + len(value)); err != nil {
		return err
	}
	t.b.writes = append(t.b.writes, write{kind: writeSet, a: bytes.Clone(key), b: bytes.Clone(value)})
	return nil
}

// Clear implements store.Tx.
func (t *bufTx) Clear(key []byte) error {
	if err := store.CheckKey(key); err != nil {
		return err
	}
	if err := t.writable(len(key)); err != nil {
		return err
	}
	t.b.writes = append(t.b.writes, write{kind: writeClear, a: bytes.Clone(key)})
	return nil
}

// ClearRange implements store.Tx.
func (t *bufTx) ClearRange(begin, end []byte) error {
	if err := errors.Join(store.CheckKey(begin), store.CheckKey(end)); err != nil {
		return err
	}
	if err := t.writable(len(begin) + len(end)); err != nil {
		return err
	}
	t.b.writes = append(t.b.writes, write{kind: writeClearRange, a: bytes.Clone(begin), b: append([]byte{}, end...)})
	return nil
}

// SetStamped implements store.Tx.
func (t *bufTx) SetStamped(prefix, value []byte) error {
	if err := store.CheckStamped(prefix, value, t.stamped); err != nil {
		return err
	}
	if err := t.writable(len(prefix) + store.StampBytes + len(value)); err != nil {
		return err
	}
	t.b.writes = append(t.b.writes, write{kind: writeStamped, a: bytes.Clone(prefix), b: bytes.Clone(value)})
	t.stamped++
	return nil
}

// commit sends the batch, unless there is nothing to send: no writes and
// at most one read (which was a consistent snapshot by itself).
func (t *bufTx) commit() error {
	if len(t.b.writes) == 0 && t.reads() <= 1 {
		return nil
	}
	if err := t.live(); err != nil {
		return err
	}
	return t.send(&t.b)
}

// check asks whether what the transaction read still holds.
func (t *bufTx) check() error {
	return t.send(&batch{reads: t.b.reads, ranges: t.b.ranges})
}

func (t *bufTx) send(b *batch) error {
	ans, err := t.o.call(t.ctx, b.appendTo([]byte{OpCommit}))
	if err != nil {
		return err
	}
	_, err = Decode(ans)
	return err
}

// kvsOf converts a RangeResponse, with the store's empty-not-nil keys and
// values.
func kvsOf(resp *storepb.RangeResponse) []store.KeyValue {
	if len(resp.Kvs) == 0 {
		return nil
	}
	kvs := make([]store.KeyValue, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = store.KeyValue{Key: kv.Key, Value: kv.Value}
		if kvs[i].Key == nil {
			kvs[i].Key = []byte{}
		}
		if kvs[i].Value == nil {
			kvs[i].Value = []byte{}
		}
	}
	return kvs
}
