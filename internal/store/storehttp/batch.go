package storehttp

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/store"
)

// A batch is a whole transaction run on the client's side: what it read
// (as digests of what it saw) and what it wrote, in order. The server
// commits it in a transaction of its own that reads the same keys and
// ranges again and applies the writes only if it sees what the client saw:
// the client's run was then the same function of the same data, so the
// commit is serializable. When the server's transaction conflicts, the
// server runs it again itself: a batch is a pure function of what it
// reads. When what it reads has changed, the client runs its function
// again (store.ErrConflict).
//
// Encoding (protobuf, written with protowire; unknown fields are refused):
//
//	1 read   (repeated): 1 key, 2 digest (empty: no such key)
//	2 range  (repeated): 1 begin, 2 end, 3 limit, 4 reverse, 5 digest
//	3 write  (repeated): 1 kind, 2 key (begin, prefix), 3 value (end)
type batch struct {
	reads  []readCheck
	ranges []rangeCheck
	writes []write
}

type readCheck struct {
	key    []byte
	digest []byte // nil: the key was absent
}

type rangeCheck struct {
	begin, end []byte
	limit      int
	reverse    bool
	digest     []byte
}

// Kinds of write.
const (
	writeSet        = 1 // key, value
	writeClear      = 2 // key
	writeClearRange = 3 // begin, end
	writeStamped    = 4 // prefix, value
)

type write struct {
	kind int
	a, b []byte
}

// valueDigest is what a batch says of a value read: absent (nil) or the
// SHA-256 of the value.
func valueDigest(v []byte) []byte {
	if v == nil {
		return nil
	}
	d := sha256.Sum256(v)
	return d[:]
}

// rangeDigest is the SHA-256 of a range read's entries, lengths included.
func rangeDigest(kvs []store.KeyValue) []byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, kv := range kvs {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(kv.Key)))])
		h.Write(kv.Key)
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(kv.Value)))])
		h.Write(kv.Value)
	}
	return h.Sum(nil)
}

func (b *batch) appendTo(out []byte) []byte {
	bytesField := func(m []byte, n protowire.Number, v []byte) []byte {
		m = protowire.AppendTag(m, n, protowire.BytesType)
		return protowire.AppendBytes(m, v)
	}
	varint := func(m []byte, n protowire.Number, v uint64) []byte {
		m = protowire.AppendTag(m, n, protowire.VarintType)
		return protowire.AppendVarint(m, v)
	}
	var m []byte
	for _, r := range b.reads {
		m = bytesField(m[:0], 1, r.key)
		if r.digest != nil {
			m = bytesField(m, 2, r.digest)
		}
		out = bytesField(out, 1, m)
	}
	for _, r := range b.ranges {
		m = bytesField(m[:0], 1, r.begin)
		m = bytesField(m, 2, r.end)
		m = varint(m, 3, uint64(r.limit))
		if r.reverse {
			m = varint(m, 4, 1)
		}
		m = bytesField(m, 5, r.digest)
		out = bytesField(out, 2, m)
	}
	for _, w := range b.writes {
		m = varint(m[:0], 1, uint64(w.kind))
		m = bytesField(m, 2, w.a)
		if w.b != nil {
			m = bytesField(m, 3, w.b)
		}
		out = bytesField(out, 3, m)
	}
	return out
}

var errBatch = fmt.Errorf("%w: malformed transaction batch", errBadRequest)

// fields calls f for each field of the message m; f consumes the value.
func fields(m []byte, f func(n protowire.Number, t protowire.Type, v []byte, x uint64) error) error {
	for len(m) > 0 {
		n, t, l := protowire.ConsumeTag(m)
		if l < 0 {
			return errBatch
		}
		m = m[l:]
		var v []byte
		var x uint64
		switch t {
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(m)
		case protowire.VarintType:
			x, l = protowire.ConsumeVarint(m)
		default:
			return errBatch
		}
		if l < 0 {
			return errBatch
		}
		m = m[l:]
		if err := f(n, t, v, x); err != nil {
			return err
		}
	}
	return nil
}

// decodeBatch is the inverse of appendTo; errors wrap errBadRequest. The
// batch's slices alias m.
func decodeBatch(m []byte) (*batch, error) {
	b := &batch{}
	isBytes := func(t protowire.Type) error {
		if t != protowire.BytesType {
			return errBatch
		}
		return nil
	}
	err := fields(m, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
		if err := isBytes(t); err != nil {
			return err
		}
		switch n {
		case 1:
			var r readCheck
			r.key = []byte{}
			err := fields(v, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
				if err := isBytes(t); err != nil {
					return err
				}
				switch n {
				case 1:
					r.key = v
				case 2:
					r.digest = v
				default:
					return errBatch
				}
				return nil
			})
			b.reads = append(b.reads, r)
			return err
		case 2:
			var r rangeCheck
			err := fields(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
				switch {
				case n == 1 && t == protowire.BytesType:
					r.begin = v
				case n == 2 && t == protowire.BytesType:
					r.end = v
				case n == 3 && t == protowire.VarintType && x <= 1<<31-1:
					r.limit = int(x)
				case n == 4 && t == protowire.VarintType:
					r.reverse = x != 0
				case n == 5 && t == protowire.BytesType:
					r.digest = v
				default:
					return errBatch
				}
				return nil
			})
			b.ranges = append(b.ranges, r)
			return err
		case 3:
			var w write
			err := fields(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
				switch {
				case n == 1 && t == protowire.VarintType && x >= writeSet && x <= writeStamped:
					w.kind = int(x)
				case n == 2 && t == protowire.BytesType:
					w.a = v
				case n == 3 && t == protowire.BytesType:
					w.b = v
				default:
					return errBatch
				}
				return nil
			})
			if err == nil && w.kind == 0 {
				err = errBatch
			}
			if w.a == nil {
				w.a = []byte{}
			}
			if w.b == nil && (w.kind == writeSet || w.kind == writeStamped) {
				w.b = []byte{}
			}
			b.writes = append(b.writes, w)
			return err
		}
		return errBatch
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// errStale reports that a batch's reads no longer hold; the client runs
// its function again. It does not wrap store.ErrConflict, so that the
// server's Transact does not retry what cannot succeed.
var errStale = errors.New("storehttp: what the transaction read has changed")

// apply runs b in tx: checks its reads, then writes.
func (b *batch) apply(tx store.Tx) error {
	for _, r := range b.reads {
		v, err := tx.Get(r.key)
		if err != nil {
			return err
		}
		if !bytes.Equal(valueDigest(v), r.digest) {
			return errStale
		}
	}
	for _, r := range b.ranges {
		kvs, err := tx.Range(r.begin, r.end, store.RangeOptions{Limit: r.limit, Reverse: r.reverse})
		if err != nil {
			return err
		}
		if !bytes.Equal(rangeDigest(kvs), r.digest) {
			return errStale
		}
	}
	for _, w := range b.writes {
		var err error
		switch w.kind {
		case writeSet:
			err = tx.Set(w.a, w.b)
		case writeClear:
			err = tx.Clear(w.a)
		case writeClearRange:
			err = tx.ClearRange(w.a, w.b)
		case writeStamped:
			err = tx.SetStamped(w.a, w.b)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// stampedPrefixes are the distinct prefixes of b's stamped writes.
func (b *batch) stampedPrefixes() [][]byte {
	var out [][]byte
	for _, w := range b.writes {
		if w.kind == writeStamped && !slices.ContainsFunc(out, func(p []byte) bool { return bytes.Equal(p, w.a) }) {
			out = append(out, bytes.Clone(w.a))
		}
	}
	return out
}

// logPrefix starts the keys of the event log's entries (eventlog).
var logPrefix = []byte(eventlog.KeyPrefix + "l/")

// readsLog reports whether b read a key or a range of the event log.
func (b *batch) readsLog() bool {
	for _, r := range b.reads {
		if bytes.HasPrefix(r.key, logPrefix) {
			return true
		}
	}
	for _, r := range b.ranges {
		// [begin, end) meets the log's keys unless it ends before them or
		// begins after them.
		endsBefore := len(r.end) > 0 && bytes.Compare(r.end, logPrefix) <= 0
		beginsAfter := bytes.Compare(r.begin, logPrefix) > 0 && !bytes.HasPrefix(r.begin, logPrefix)
		if !endsBefore && !beginsAfter {
			return true
		}
	}
	return false
}

// The encodings of OpGetMany: the request is field 1 (repeated) holding
// each key; the answer is field 1 (repeated) holding, per key, a message
// of 1 found (varint) and 2 value.

func appendGetMany(b []byte, keys [][]byte) []byte {
	b = append(b, OpGetMany)
	for _, k := range keys {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, k)
	}
	return b
}

func decodeKeys(m []byte) ([][]byte, error) {
	var keys [][]byte
	err := fields(m, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
		if n != 1 || t != protowire.BytesType {
			return errBatch
		}
		keys = append(keys, v)
		return nil
	})
	return keys, err
}

func appendValues(b []byte, vals [][]byte) []byte {
	var m []byte
	for _, v := range vals {
		m = m[:0]
		if v != nil {
			m = protowire.AppendTag(m, 1, protowire.VarintType)
			m = protowire.AppendVarint(m, 1)
			m = protowire.AppendTag(m, 2, protowire.BytesType)
			m = protowire.AppendBytes(m, v)
		}
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b
}

func decodeValues(m []byte) ([][]byte, error) {
	var vals [][]byte
	err := fields(m, func(n protowire.Number, t protowire.Type, v []byte, _ uint64) error {
		if n != 1 || t != protowire.BytesType {
			return errBatch
		}
		var found bool
		var val []byte
		err := fields(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
			switch {
			case n == 1 && t == protowire.VarintType:
				found = x != 0
			case n == 2 && t == protowire.BytesType:
				val = v
			default:
				return errBatch
			}
			return nil
		})
		if err != nil {
			return err
		}
		if found && val == nil {
			val = []byte{}
		}
		if !found {
			val = nil
		}
		vals = append(vals, val)
		return nil
	})
	return vals, err
}
