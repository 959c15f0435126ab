// Package storetest is the conformance suite every store backend passes.
//
// A backend's test calls Run with a function that opens a fresh, empty
// Backend:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Backend {
//			b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return b
//		})
//	}
package storetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/store"
)

// Run runs the suite, each subtest on a Backend of its own from open. Run
// closes every Backend it opens; open registers with t.Cleanup whatever
// else it started. The test of MaxTransactionTime sleeps past it and is
// skipped with -short.
func Run(t *testing.T, open func(t *testing.T) store.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b store.Backend)
	}{
		{"GetSetClear", testGetSetClear},
		{"SingleGet", testSingleGet},
		{"ReadYourWrites", testReadYourWrites},
		{"Range", testRange},
		{"ClearRange", testClearRange},
		{"Counter", testCounter},
		{"ConflictRetry", testConflictRetry},
		{"RangeConflict", testRangeConflict},
		{"WriteSkew", testWriteSkew},
		{"ErrorCommitsNothing", testErrorCommitsNothing},
		{"ReadOnly", testReadOnly},
		{"Isolation", testIsolation},
		{"SpaceNames", testSpaceNames},
		{"Limits", testLimits},
		{"ContextCancel", testContextCancel},
		{"TooOld", testTooOld},
		{"Closed", testClosed},
		{"Stamped", testStamped},
		{"StampedConcurrent", testStampedConcurrent},
		{"StampedLimits", testStampedLimits},
		{"GetMany", testGetMany},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t)
			closed := false
			t.Cleanup(func() {
				if !closed {
					if err := b.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				}
			})
			if tc.name == "Closed" {
				closed = true
			}
			tc.fn(t, b)
		})
	}
}

func space(t *testing.T, b store.Backend, name string) store.Store {
	t.Helper()
	s, err := b.Space(name)
	if err != nil {
		t.Fatalf("Space(%q): %v", name, err)
	}
	return s
}

func set(t *testing.T, s store.Store, kv ...string) {
	t.Helper()
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		for i := 0; i+1 < len(kv); i += 2 {
			if err := tx.Set([]byte(kv[i]), []byte(kv[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Transact(set %q): %v", kv, err)
	}
}

func get(t *testing.T, s store.Store, key string) []byte {
	t.Helper()
	var v []byte
	err := s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		v, err = tx.Get([]byte(key))
		return err
	})
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v
}

func rangeKeys(t *testing.T, s store.Store, begin, end string, opts store.RangeOptions) string {
	t.Helper()
	var kvs []store.KeyValue
	err := s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		kvs, err = tx.Range([]byte(begin), []byte(end), opts)
		return err
	})
	if err != nil {
		t.Fatalf("Range(%q, %q, %+v): %v", begin, end, opts, err)
	}
	return joinKeys(kvs)
}

// joinKeys renders keys as "k1=v1 k2=v2", quoting unprintable ones.
func joinKeys(kvs []store.KeyValue) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = fmt.Sprintf("%q=%q", kv.Key, kv.Value)
		parts[i] = strings.ReplaceAll(parts[i], `"`, "")
	}
	return strings.Join(parts, " ")
}

func testGetSetClear(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	if v := get(t, s, "missing"); v != nil {
		t.Errorf("Get(missing) = %q, want nil", v)
	}
	set(t, s, "k", "v", "", "empty key", "bin\x00\xff", "\x00\x01", "empty", "")
	for _, c := range []struct{ key, want string }{
		{"k", "v"}, {"", "empty key"}, {"bin\x00\xff", "\x00\x01"}, {"empty", ""},
	} {
		v := get(t, s, c.key)
		if v == nil || string(v) != c.want {
			t.Errorf("Get(%q) = %q (nil: %v), want %q", c.key, v, v == nil, c.want)
		}
	}
	set(t, s, "k", "v2")
	if v := get(t, s, "k"); string(v) != "v2" {
		t.Errorf("Get(k) after overwrite = %q, want v2", v)
	}
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		return errors.Join(tx.Clear([]byte("k")), tx.Clear([]byte("never set")))
	})
	if err != nil {
		t.Fatalf("Clear: %v", err)
	}
	if v := get(t, s, "k"); v != nil {
		t.Errorf("Get(k) after Clear = %q, want nil", v)
	}
	// The caller may reuse its buffers once Set returns.
	buf := []byte("before")
	err = s.Transact(t.Context(), func(tx store.Tx) error {
		err := tx.Set([]byte("buf"), buf)
		copy(buf, "after!")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := get(t, s, "buf"); string(v) != "before" {
		t.Errorf("Get(buf) = %q, want before (Set must copy the value)", v)
	}
}

func testReadYourWrites(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "a", "1", "c", "3")
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		if err := tx.Set([]byte("b"), []byte("2")); err != nil {
			return err
		}
		if err := tx.Clear([]byte("c")); err != nil {
			return err
		}
		if v, err := tx.Get([]byte("b")); err != nil || string(v) != "2" {
			return fmt.Errorf("Get(b) = %q, %v; want 2", v, err)
		}
		if v, err := tx.Get([]byte("c")); err != nil || v != nil {
			return fmt.Errorf("Get(c) = %q, %v; want nil after Clear", v, err)
		}
		kvs, err := tx.Range(nil, nil, store.RangeOptions{})
		if err != nil {
			return err
		}
		if got, want := joinKeys(kvs), "a=1 b=2"; got != want {
			return fmt.Errorf("Range = %s, want %s", got, want)
		}
		kvs, err = tx.Range(nil, nil, store.RangeOptions{Reverse: true})
		if err != nil {
			return err
		}
		if got, want := joinKeys(kvs), "b=2 a=1"; got != want {
			return fmt.Errorf("Range reverse = %s, want %s", got, want)
		}
		if err := tx.ClearRange([]byte("a"), []byte("b\x00")); err != nil {
			return err
		}
		kvs, err = tx.Range(nil, nil, store.RangeOptions{})
		if err != nil {
			return err
		}
		if len(kvs) != 0 {
			return fmt.Errorf("Range after ClearRange = %s, want nothing", joinKeys(kvs))
		}
		return tx.Set([]byte("d"), []byte("4"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rangeKeys(t, s, "", "", store.RangeOptions{}), "d=4"; got != want {
		t.Errorf("after commit: Range = %s, want %s", got, want)
	}
}

func testRange(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "\xff", "ff", "\xff\xff\x00", "ffff")
	for _, c := range []struct {
		name       string
		begin, end string
		opts       store.RangeOptions
		want       string
	}{
		{"span", "b", "d", store.RangeOptions{}, "b=2 c=3"},
		{"begin between keys", "a\x00", "c", store.RangeOptions{}, "b=2"},
		{"limit", "b", "e", store.RangeOptions{Limit: 2}, "b=2 c=3"},
		{"limit beyond", "b", "d", store.RangeOptions{Limit: 10}, "b=2 c=3"},
		{"reverse", "b", "e", store.RangeOptions{Reverse: true}, "d=4 c=3 b=2"},
		{"reverse end between keys", "a", "c\x00", store.RangeOptions{Reverse: true}, "c=3 b=2 a=1"},
		{"reverse limit", "a", "e", store.RangeOptions{Reverse: true, Limit: 2}, "d=4 c=3"},
		{"whole space", "", "", store.RangeOptions{}, "a=1 b=2 c=3 d=4 e=5 \\xff=ff \\xff\\xff\\x00=ffff"},
		{"whole space reverse limit", "", "", store.RangeOptions{Reverse: true, Limit: 3}, "\\xff\\xff\\x00=ffff \\xff=ff e=5"},
		{"to the end", "e", "", store.RangeOptions{}, "e=5 \\xff=ff \\xff\\xff\\x00=ffff"},
		{"0xff end", "", "\xff\xff", store.RangeOptions{}, "a=1 b=2 c=3 d=4 e=5 \\xff=ff"},
		{"0xff begin", "\xff", "\xff\xff\xff", store.RangeOptions{Reverse: true}, "\\xff\\xff\\x00=ffff \\xff=ff"},
		{"empty", "c", "c", store.RangeOptions{}, ""},
		{"inverted", "d", "b", store.RangeOptions{}, ""},
		{"inverted reverse", "d", "b", store.RangeOptions{Reverse: true}, ""},
		{"between keys", "c\x00", "d", store.RangeOptions{}, ""},
		{"before all", "", "a", store.RangeOptions{Reverse: true}, ""},
	} {
		if got := rangeKeys(t, s, c.begin, c.end, c.opts); got != c.want {
			t.Errorf("%s: Range(%q, %q, %+v) = %s, want %s", c.name, c.begin, c.end, c.opts, got, c.want)
		}
	}
}

func testClearRange(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "a", "1", "b", "2", "c", "3", "d", "4", "e", "5")
	clear := func(begin, end string) {
		t.Helper()
		if err := s.Transact(t.Context(), func(tx store.Tx) error {
			return tx.ClearRange([]byte(begin), []byte(end))
		}); err != nil {
			t.Fatalf("ClearRange(%q, %q): %v", begin, end, err)
		}
	}
	clear("b", "d")
	if got, want := rangeKeys(t, s, "", "", store.RangeOptions{}), "a=1 d=4 e=5"; got != want {
		t.Errorf("after ClearRange(b, d): %s, want %s", got, want)
	}
	clear("e", "a") // inverted: nothing
	if got, want := rangeKeys(t, s, "", "", store.RangeOptions{}), "a=1 d=4 e=5"; got != want {
		t.Errorf("after ClearRange(e, a): %s, want %s", got, want)
	}
	clear("d\x00", "")
	if got, want := rangeKeys(t, s, "", "", store.RangeOptions{}), "a=1 d=4"; got != want {
		t.Errorf("after ClearRange(d\\x00, end): %s, want %s", got, want)
	}
	clear("", "")
	if got := rangeKeys(t, s, "", "", store.RangeOptions{}); got != "" {
		t.Errorf("after ClearRange of the space: %s, want nothing", got)
	}
}

// testCounter: 50 transactions at once, each incrementing one counter 100
// times, lose nothing; under that contention some attempts conflict.
func testCounter(t *testing.T, b store.Backend) {
	const workers, increments = 50, 100
	s := space(t, b, "svc")
	var calls atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range increments {
				err := s.Transact(t.Context(), func(tx store.Tx) error {
					calls.Add(1)
					v, err := tx.Get([]byte("counter"))
					if err != nil {
						return err
					}
					n := 0
					if v != nil {
						if _, err := fmt.Sscan(string(v), &n); err != nil {
							return err
						}
					}
					return tx.Set([]byte("counter"), fmt.Appendf(nil, "%d", n+1))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Transact: %v", err)
	}
	if got, want := string(get(t, s, "counter")), fmt.Sprint(workers*increments); got != want {
		t.Errorf("counter = %s, want %s", got, want)
	}
	if calls.Load() <= workers*increments {
		t.Errorf("fn ran %d times for %d commits: want retries under contention", calls.Load(), workers*increments)
	}
	t.Logf("%d attempts for %d commits", calls.Load(), workers*increments)
}

// testConflictRetry: a key read by a transaction and written by another
// before it commits makes it run again, and the second run sees the write.
func testConflictRetry(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "k", "0")
	calls := 0
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		calls++
		v, err := tx.Get([]byte("k"))
		if err != nil {
			return err
		}
		if calls == 1 {
			set(t, s, "k", "10")
		}
		return tx.Set([]byte("k"), append(v, '+'))
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Errorf("fn ran %d times, want 2 (one conflict)", calls)
	}
	if got := string(get(t, s, "k")); got != "10+" {
		t.Errorf("k = %q, want 10+", got)
	}
}

// testRangeConflict: a key written into a range that a transaction read
// (and found empty) makes it run again: no phantoms.
func testRangeConflict(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "log/0001", "first", "zzz", "other")
	calls := 0
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		calls++
		kvs, err := tx.Range([]byte("log/"), []byte("log0"), store.RangeOptions{Reverse: true, Limit: 1})
		if err != nil {
			return err
		}
		if calls == 1 {
			set(t, s, "log/0002", "second") // lands after what was read
			set(t, s, "zzz", "unrelated")   // outside: no conflict by itself
		}
		next := "log/0001"
		if len(kvs) == 1 {
			next = string(kvs[0].Key[:len(kvs[0].Key)-1]) + string(kvs[0].Key[len(kvs[0].Key)-1]+1)
		}
		return tx.Set([]byte(next), []byte("appended"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Errorf("fn ran %d times, want 2 (a phantom in the range read)", calls)
	}
	if got, want := rangeKeys(t, s, "log/", "log0", store.RangeOptions{}), "log/0001=first log/0002=second log/0003=appended"; got != want {
		t.Errorf("log = %s, want %s", got, want)
	}
}

// testWriteSkew: two transactions that each read x and y and then write one
// of them cannot both commit on the same snapshot.
func testWriteSkew(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "x", "1", "y", "1")
	var both sync.WaitGroup
	both.Add(2)
	var calls atomic.Int64
	// take sets own to 0 if the other is still 1: at least one must stay 1.
	take := func(own, other string) error {
		first := true
		return s.Transact(t.Context(), func(tx store.Tx) error {
			calls.Add(1)
			o, err := tx.Get([]byte(other))
			if err != nil {
				return err
			}
			if _, err := tx.Get([]byte(own)); err != nil {
				return err
			}
			if first {
				first = false
				both.Done()
				both.Wait() // both have read before either commits
			}
			if string(o) != "1" {
				return nil
			}
			return tx.Set([]byte(own), []byte("0"))
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- take("x", "y") }()
	go func() { errs <- take("y", "x") }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	x, y := string(get(t, s, "x")), string(get(t, s, "y"))
	if x == "0" && y == "0" {
		t.Errorf("x = %s, y = %s: both transactions committed (write skew)", x, y)
	}
	if calls.Load() != 3 {
		t.Errorf("fn ran %d times, want 3 (one retry)", calls.Load())
	}
}

func testErrorCommitsNothing(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	errBoom := errors.New("boom")
	calls := 0
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		calls++
		if err := tx.Set([]byte("k"), []byte("v")); err != nil {
			return err
		}
		return fmt.Errorf("handler: %w", errBoom)
	})
	if !errors.Is(err, errBoom) {
		t.Errorf("Transact = %v, want %v", err, errBoom)
	}
	if calls != 1 {
		t.Errorf("fn ran %d times, want 1", calls)
	}
	if v := get(t, s, "k"); v != nil {
		t.Errorf("k = %q after fn failed, want nil", v)
	}
}

func testReadOnly(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "k", "v")
	err := s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		if v, err := tx.Get([]byte("k")); err != nil || string(v) != "v" {
			return fmt.Errorf("Get(k) = %q, %v; want v", v, err)
		}
		if w, ok := tx.(store.Tx); ok {
			if err := w.Set([]byte("k"), []byte("w")); !errors.Is(err, store.ErrReadOnly) {
				return fmt.Errorf("Set in ReadTransact = %v, want %v", err, store.ErrReadOnly)
			}
			if err := w.ClearRange(nil, nil); !errors.Is(err, store.ErrReadOnly) {
				return fmt.Errorf("ClearRange in ReadTransact = %v, want %v", err, store.ErrReadOnly)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := get(t, s, "k"); string(v) != "v" {
		t.Errorf("k = %q, want v", v)
	}
}

// testIsolation: nothing done through one space reaches another's keys,
// whatever the bytes of keys and ranges, and names that are prefixes of
// each other included.
func testIsolation(t *testing.T, b store.Backend) {
	names := []string{"a", "ab", "a-b", "a.b", "b"}
	keys := []string{"", "\x00", "x", "ab", "\xff", "\xff\xff", "\xff\xff\xff\xff"}
	for _, n := range names {
		s := space(t, b, n)
		err := s.Transact(t.Context(), func(tx store.Tx) error {
			for _, k := range keys {
				if err := tx.Set([]byte(k), []byte(n)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(n string) {
		t.Helper()
		s := space(t, b, n)
		for _, k := range keys {
			if v := get(t, s, k); string(v) != n {
				t.Errorf("space %q: Get(%q) = %q, want %q", n, k, v, n)
			}
		}
		for _, opts := range []store.RangeOptions{{}, {Reverse: true}} {
			for _, r := range [][2]string{{"", ""}, {"", "\xff\xff"}, {"\x00", "\xff\xff\xff\xff\xff"}} {
				var kvs []store.KeyValue
				err := s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
					var err error
					kvs, err = tx.Range([]byte(r[0]), []byte(r[1]), opts)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				for _, kv := range kvs {
					if string(kv.Value) != n {
						t.Errorf("space %q: Range(%q, %q, %+v) returned %q=%q of another space", n, r[0], r[1], opts, kv.Key, kv.Value)
					}
				}
			}
		}
	}
	for _, n := range names {
		check(n)
	}
	// Clearing all of "a" leaves every other space whole.
	a := space(t, b, "a")
	err := a.Transact(t.Context(), func(tx store.Tx) error {
		for _, r := range [][2]string{{"", "\xff\xff"}, {"", ""}, {"\x00", "\xff\xff\xff\xff\xff"}} {
			if err := tx.ClearRange([]byte(r[0]), []byte(r[1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := rangeKeys(t, a, "", "", store.RangeOptions{}); got != "" {
		t.Errorf("space a after clearing it: %s, want nothing", got)
	}
	for _, n := range names[1:] {
		check(n)
	}
}

func testSpaceNames(t *testing.T, b store.Backend) {
	for _, name := range []string{"", "A", "a_b", "a/b", "a b", "é", strings.Repeat("a", store.MaxSpaceBytes+1)} {
		if _, err := b.Space(name); !errors.Is(err, store.ErrSpace) {
			t.Errorf("Space(%q) = %v, want %v", name, err, store.ErrSpace)
		}
	}
	for _, name := range []string{"a", "0", "profiles", "my-svc.v2", strings.Repeat("z", store.MaxSpaceBytes)} {
		if _, err := b.Space(name); err != nil {
			t.Errorf("Space(%q) = %v, want nil", name, err)
		}
	}
}

func testLimits(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	bigKey := bytes.Repeat([]byte("k"), store.MaxKeyBytes+1)
	okKey := bigKey[:store.MaxKeyBytes]
	bigValue := bytes.Repeat([]byte("v"), store.MaxValueBytes+1)
	okValue := bigValue[:store.MaxValueBytes]
	for _, c := range []struct {
		name string
		op   func(tx store.Tx) error
		want error
	}{
		{"key at limit", func(tx store.Tx) error { return tx.Set(okKey, []byte("v")) }, nil},
		{"value at limit", func(tx store.Tx) error { return tx.Set([]byte("k"), okValue) }, nil},
		{"Set key", func(tx store.Tx) error { return tx.Set(bigKey, []byte("v")) }, store.ErrKeyTooLarge},
		{"Get key", func(tx store.Tx) error { _, err := tx.Get(bigKey); return err }, store.ErrKeyTooLarge},
		{"Clear key", func(tx store.Tx) error { return tx.Clear(bigKey) }, store.ErrKeyTooLarge},
		{"Set value", func(tx store.Tx) error { return tx.Set([]byte("k"), bigValue) }, store.ErrValueTooLarge},
	} {
		err := s.Transact(t.Context(), c.op)
		if c.want == nil && err != nil || !errors.Is(err, c.want) {
			t.Errorf("%s: Transact = %v, want %v", c.name, err, c.want)
		}
	}
	if v := get(t, s, string(okKey)); string(v) != "v" {
		t.Errorf("key of %d bytes: Get = %q, want v", len(okKey), v)
	}
	// More than MaxTransactionBytes in one transaction.
	n := 0
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		for n = 0; n <= store.MaxTransactionBytes/store.MaxValueBytes+1; n++ {
			if err := tx.Set(fmt.Appendf(nil, "big/%03d", n), okValue); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, store.ErrTransactionLarge) {
		t.Errorf("%d values of %d bytes: Transact = %v, want %v", n, len(okValue), err, store.ErrTransactionLarge)
	}
	if got := rangeKeys(t, s, "big/", "big0", store.RangeOptions{Limit: 1}); got != "" {
		t.Errorf("the transaction that was too large committed %s", got[:min(len(got), 20)])
	}
}

func testContextCancel(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	var calls atomic.Int64
	err := s.Transact(ctx, func(tx store.Tx) error {
		calls.Add(1)
		if err := tx.Set([]byte("k"), []byte("v")); err != nil {
			return err
		}
		return fmt.Errorf("always: %w", store.ErrConflict)
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Transact on a conflict forever = %v, want %v", err, context.DeadlineExceeded)
	}
	if calls.Load() < 2 {
		t.Errorf("fn ran %d times before ctx ended, want retries", calls.Load())
	}
	done, cancelDone := context.WithCancel(t.Context())
	cancelDone()
	err = s.ReadTransact(done, func(store.ReadTx) error {
		t.Error("fn ran under a cancelled ctx")
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ReadTransact(cancelled) = %v, want %v", err, context.Canceled)
	}
	if v := get(t, s, "k"); v != nil {
		t.Errorf("k = %q, want nil", v)
	}
}

func testTooOld(t *testing.T, b store.Backend) {
	if testing.Short() {
		t.Skip("sleeps past MaxTransactionTime")
	}
	t.Parallel()
	s := space(t, b, "svc")
	calls := 0
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		calls++
		if _, err := tx.Get([]byte("k")); err != nil {
			return err
		}
		time.Sleep(time.Duration(store.MaxTransactionTime) + 200*time.Millisecond)
		if err := tx.Set([]byte("k"), []byte("late")); err != nil {
			return err
		}
		return nil
	})
	if !errors.Is(err, store.ErrTransactionTime) {
		t.Errorf("Transact after %v = %v, want %v", time.Duration(store.MaxTransactionTime), err, store.ErrTransactionTime)
	}
	if calls != 1 {
		t.Errorf("fn ran %d times, want 1 (too old is not retried)", calls)
	}
	if v := get(t, s, "k"); v != nil {
		t.Errorf("k = %q, want nil", v)
	}
}

func testClosed(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "k", "v")
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err := s.Transact(t.Context(), func(store.Tx) error { return nil })
	if !errors.Is(err, store.ErrClosed) {
		t.Errorf("Transact after Close = %v, want %v", err, store.ErrClosed)
	}
	err = s.ReadTransact(t.Context(), func(store.ReadTx) error { return nil })
	if !errors.Is(err, store.ErrClosed) {
		t.Errorf("ReadTransact after Close = %v, want %v", err, store.ErrClosed)
	}
}

// testSingleGet checks store.Get, which takes a backend's one-step read
// where it has one, against what transactions wrote.
func testSingleGet(t *testing.T, b store.Backend) {
	ctx := t.Context()
	a, err := b.Space("a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.Space("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Transact(ctx, func(tx store.Tx) error {
		return errors.Join(tx.Set([]byte("k"), []byte("v")), tx.Set([]byte("empty"), []byte{}))
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		s    store.Store
		key  string
		want []byte
	}{
		{"present", a, "k", []byte("v")},
		{"empty value", a, "empty", []byte{}},
		{"absent", a, "nope", nil},
		{"other space", other, "k", nil},
	} {
		got, err := store.Get(ctx, tt.s, []byte(tt.key))
		if err != nil || !bytes.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("%s: Get(%q) = %q, %v; want %q", tt.name, tt.key, got, err, tt.want)
		}
	}
	if _, err := store.Get(ctx, a, make([]byte, store.MaxKeyBytes+1)); !errors.Is(err, store.ErrKeyTooLarge) {
		t.Errorf("Get of an oversized key: %v, want ErrKeyTooLarge", err)
	}
}

// stampedRange reads the keys under prefix, checking that each is prefix
// and a stamp.
func stampedRange(t *testing.T, s store.Store, prefix string) []store.KeyValue {
	t.Helper()
	var kvs []store.KeyValue
	err := s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		kvs, err = tx.Range([]byte(prefix), []byte(prefix+"\xff"), store.RangeOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("Range(%q): %v", prefix, err)
	}
	for _, kv := range kvs {
		if len(kv.Key) != len(prefix)+store.StampBytes || !bytes.HasPrefix(kv.Key, []byte(prefix)) {
			t.Fatalf("stamped key %x: want %q and %d bytes of stamp", kv.Key, prefix, store.StampBytes)
		}
	}
	return kvs
}

// testStamped: SetStamped keys are completed at commit, later commits'
// stamps sort after earlier ones, one transaction's in call order; a
// transaction that fails writes none.
func testStamped(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	for _, vals := range [][]string{{"a1", "a2", "a3"}, {"b1"}, {"c1", "c2"}} {
		err := s.Transact(t.Context(), func(tx store.Tx) error {
			for _, v := range vals {
				if err := tx.SetStamped([]byte("log/"), []byte(v)); err != nil {
					return err
				}
			}
			return tx.Set([]byte("other"), []byte(vals[0]))
		})
		if err != nil {
			t.Fatalf("Transact(SetStamped %q): %v", vals, err)
		}
	}
	errBoom := errors.New("boom")
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		if err := tx.SetStamped([]byte("log/"), []byte("never")); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Transact = %v, want %v", err, errBoom)
	}
	kvs := stampedRange(t, s, "log/")
	var got []string
	for _, kv := range kvs {
		got = append(got, string(kv.Value))
	}
	if want := "a1 a2 a3 b1 c1 c2"; strings.Join(got, " ") != want {
		t.Fatalf("stamped values in key order = %q, want %q", strings.Join(got, " "), want)
	}
	stamp := func(i int) []byte { return kvs[i].Key[len("log/"):] }
	for i, tc := range []struct {
		a, b    int
		sameTxn bool
	}{{0, 1, true}, {1, 2, true}, {2, 3, false}, {3, 4, false}, {4, 5, true}} {
		commitA, commitB := stamp(tc.a)[:10], stamp(tc.b)[:10]
		if got := bytes.Equal(commitA, commitB); got != tc.sameTxn {
			t.Errorf("row %d: commit part of stamps %x and %x equal = %v, want %v", i, stamp(tc.a), stamp(tc.b), got, tc.sameTxn)
		}
	}
	for i, want := range []uint16{0, 1, 2, 0, 0, 1} {
		if got := binary.BigEndian.Uint16(stamp(i)[10:]); got != want {
			t.Errorf("stamp %x: order in its transaction %d, want %d", stamp(i), got, want)
		}
	}
	if got := string(get(t, s, "other")); got != "c1" {
		t.Errorf("other = %q, want c1 (written with the stamped keys)", got)
	}
	// Another space's stamped keys stay in it.
	o := space(t, b, "other")
	if got := stampedRange(t, o, "log/"); len(got) != 0 {
		t.Errorf("other space holds %d stamped keys, want 0", len(got))
	}
}

// testStampedConcurrent: transactions that only append stamped keys under
// one prefix never conflict, and every append is kept, each writer's in
// its order.
func testStampedConcurrent(t *testing.T, b store.Backend) {
	const writers, appends = 16, 25
	s := space(t, b, "svc")
	var calls atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				err := s.Transact(t.Context(), func(tx store.Tx) error {
					calls.Add(1)
					return tx.SetStamped([]byte("log/"), fmt.Appendf(nil, "%02d/%02d", w, i))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Transact: %v", err)
	}
	if got := calls.Load(); got != writers*appends {
		t.Errorf("fn ran %d times for %d commits: want no conflict retries", got, writers*appends)
	}
	kvs := stampedRange(t, s, "log/")
	if len(kvs) != writers*appends {
		t.Fatalf("%d stamped keys, want %d", len(kvs), writers*appends)
	}
	next := make([]int, writers)
	for _, kv := range kvs {
		var w, i int
		if _, err := fmt.Sscanf(string(kv.Value), "%d/%d", &w, &i); err != nil {
			t.Fatalf("value %q: %v", kv.Value, err)
		}
		if i != next[w] {
			t.Fatalf("writer %d: append %d found where %d was next: out of commit order", w, i, next[w])
		}
		next[w]++
	}
}

func testStampedLimits(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	for _, tc := range []struct {
		name          string
		prefix, value int
		want          error
	}{
		{"longest prefix", store.MaxKeyBytes - store.StampBytes, 1, nil},
		{"prefix too long", store.MaxKeyBytes - store.StampBytes + 1, 1, store.ErrKeyTooLarge},
		{"value too large", 1, store.MaxValueBytes + 1, store.ErrValueTooLarge},
	} {
		err := s.Transact(t.Context(), func(tx store.Tx) error {
			return tx.SetStamped(bytes.Repeat([]byte("p"), tc.prefix), make([]byte, tc.value))
		})
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: Transact = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// testGetMany: store.GetMany reads keys as Get does, own writes included,
// in order, repeats and absent keys too.
func testGetMany(t *testing.T, b store.Backend) {
	s := space(t, b, "svc")
	set(t, s, "a", "1", "b", "2", "e", "")
	check := func(name string, got [][]byte, want ...string) {
		t.Helper()
		var g []string
		for _, v := range got {
			if v == nil {
				g = append(g, "<nil>")
			} else {
				g = append(g, fmt.Sprintf("%q", v))
			}
		}
		if strings.Join(g, " ") != strings.Join(want, " ") {
			t.Errorf("%s: GetMany = %s, want %s", name, strings.Join(g, " "), strings.Join(want, " "))
		}
	}
	err := s.Transact(t.Context(), func(tx store.Tx) error {
		if err := tx.Set([]byte("c"), []byte("3")); err != nil {
			return err
		}
		if err := tx.Clear([]byte("b")); err != nil {
			return err
		}
		got, err := store.GetMany(tx, []byte("a"), []byte("missing"), []byte("c"), []byte("b"), []byte("a"), []byte("e"))
		if err != nil {
			return err
		}
		check("in a transaction that wrote c and cleared b", got, `"1"`, "<nil>", `"3"`, "<nil>", `"1"`, `""`)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		got, err := store.GetMany(tx, []byte("c"), []byte("b"), []byte("a"))
		if err != nil {
			return err
		}
		check("after", got, `"3"`, "<nil>", `"1"`)
		got, err = store.GetMany(tx)
		if err != nil {
			return err
		}
		check("no keys", got)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
