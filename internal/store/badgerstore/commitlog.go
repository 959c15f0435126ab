package badgerstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/griddle-mesh/griddle/internal/store"
)

// keyRange is [lo, hi) over full keys.
type keyRange struct{ lo, hi []byte }

func (r keyRange) contains(k []byte) bool {
	return bytes.Compare(r.lo, k) <= 0 && bytes.Compare(k, r.hi) < 0
}

// commitLog remembers which keys recent commits wrote, so that a committing
// transaction can learn whether a key landed in a range it read after its
// snapshot was taken. Badger checks single keys; this checks ranges.
//
// Every commit that writes runs under mu, Badger's commit included, and is
// numbered: position() read before a snapshot is taken is at most the
// number of the last commit that snapshot contains, so "commits numbered
// above start" covers every commit the snapshot missed (and at worst a few
// it did not, which only costs a retry).
type commitLog struct {
	pos atomic.Uint64

	mu sync.Mutex
	// entries[head:] are the commits remembered, ascending seq, none older
	// than keep; the expired ones before head are dropped in bulk once
	// they are half the slice, so that dropping costs O(1) per commit (at
	// 2,000 commits/s, keep holds about 12,000).
	entries []commitEntry
	head    int
	stamp   uint64 // the last stamp counter value committed (stampKey)
}

// stampKey holds the stamp counter, written by every commit that stamps
// keys, in the same Badger transaction. It is outside every key space.
var stampKey = []byte("\x00stamp")

// stampOf is the store.StampBytes stamp of counter value c, the i-th
// stamped key of its transaction.
func stampOf(c uint64, i int) []byte {
	b := make([]byte, 2, store.StampBytes)
	b = binary.BigEndian.AppendUint64(b, c)
	return binary.BigEndian.AppendUint16(b, uint16(i))
}

type commitEntry struct {
	seq  uint64
	at   time.Time
	keys [][]byte
}

// keep is how long entries are kept: longer than any attempt may live.
const keep = time.Duration(store.MaxTransactionTime) + time.Second

func (l *commitLog) position() uint64 { return l.pos.Load() }

// commit checks t's ranges against the commits after t.start, sends t's
// Badger transaction to be committed (t.committed answers whether it was),
// and records its writes: if Badger then finds a conflict, the record only
// makes others retry needlessly. A transaction that wrote nothing commits
// trivially (t.committed stays nil).
//
// Stamped keys take the counter value after l.stamp, one per commit; the
// new counter is written with them, so it never goes back across restarts.
func (l *commitLog) commit(t *tx) error {
	if len(t.writes) == 0 && len(t.stamped) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(t.ranges) > 0 {
		if err := l.check(t.start, t.ranges); err != nil {
			return err
		}
	}
	next := l.stamp
	if len(t.stamped) > 0 {
		next++
	}
	for i, w := range t.stamped {
		k := append(w.prefix, stampOf(next, i)...)
		if err := t.txn.Set(k, w.value); err != nil {
			return mapErr("commit", err)
		}
		t.writes = append(t.writes, k)
	}
	if next != l.stamp {
		if err := t.txn.Set(stampKey, binary.BigEndian.AppendUint64(nil, next)); err != nil {
			return mapErr("commit", err)
		}
	}
	// Badger applies commits in the order they are sent, under its own
	// lock, here under mu: the stamps' order. The commit is waited for
	// after mu is released, so that commits pipeline into Badger's writer,
	// which writes them in batches (and the Backend syncs them so).
	done := make(chan error, 1)
	t.txn.CommitWith(func(err error) { done <- err })
	t.committed = done
	l.stamp = next
	now := time.Now()
	for l.head < len(l.entries) && now.Sub(l.entries[l.head].at) > keep {
		l.entries[l.head] = commitEntry{} // its keys can go
		l.head++
	}
	if l.head > 0 && l.head >= len(l.entries)/2 {
		n := copy(l.entries, l.entries[l.head:])
		clear(l.entries[n:])
		l.entries, l.head = l.entries[:n], 0
	}
	seq := l.pos.Load() + 1
	l.entries = append(l.entries, commitEntry{seq: seq, at: now, keys: t.writes})
	l.pos.Store(seq)
	return nil
}

// check returns ErrConflict if a commit numbered above start wrote into one
// of ranges. Called with mu held.
func (l *commitLog) check(start uint64, ranges []keyRange) error {
	live := l.entries[l.head:]
	if start < l.pos.Load() && (len(live) == 0 || live[0].seq > start+1) {
		return fmt.Errorf("%w: commits since the transaction began were forgotten", store.ErrConflict)
	}
	for i := len(live) - 1; i >= 0 && live[i].seq > start; i-- {
		for _, k := range live[i].keys {
			for _, r := range ranges {
				if r.contains(k) {
					return fmt.Errorf("%w: a range this transaction read was written to", store.ErrConflict)
				}
			}
		}
	}
	return nil
}
