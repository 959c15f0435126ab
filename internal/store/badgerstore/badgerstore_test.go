package badgerstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storetest"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(writerEnv); dir != "" {
		os.Exit(writer(dir)) // the test binary re-executed as a writer process
	}
	goleak.VerifyTestMain(m)
}

func openMem(t *testing.T) store.Backend {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformanceInMemory(t *testing.T) { storetest.Run(t, openMem) }

func TestConformanceOnDisk(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Backend {
		b, err := badgerstore.Open(t.Context(), badgerstore.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// With memtables large enough, Badger admits what FoundationDB admits, and
// the store's own count stops the rest at MaxTransactionBytes.
func TestTransactionBytesLimit(t *testing.T) {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true, MemTableSize: 72 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.Space("svc")
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, store.MaxValueBytes-16)
	fill := func(n int) error {
		return s.Transact(t.Context(), func(tx store.Tx) error {
			for i := range n {
				if err := tx.Set(fmt.Appendf(nil, "k%015d", i), value); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := fill(store.MaxTransactionBytes / store.MaxValueBytes); err != nil {
		t.Errorf("a transaction of %d bytes: %v, want nil", store.MaxTransactionBytes/store.MaxValueBytes*store.MaxValueBytes, err)
	}
	if err := fill(store.MaxTransactionBytes/store.MaxValueBytes + 1); !errors.Is(err, store.ErrTransactionLarge) || strings.Contains(err.Error(), "Badger") {
		t.Errorf("a transaction over %d bytes: %v, want the store's own %v", store.MaxTransactionBytes, err, store.ErrTransactionLarge)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  badgerstore.Config
		ok   bool
	}{
		{"dir", badgerstore.Config{Dir: "/x"}, true},
		{"memory", badgerstore.Config{InMemory: true}, true},
		{"neither", badgerstore.Config{}, false},
		{"both", badgerstore.Config{Dir: "/x", InMemory: true}, false},
		{"tiny memtable", badgerstore.Config{InMemory: true, MemTableSize: 1 << 20}, false},
		{"huge value log", badgerstore.Config{Dir: "/x", ValueLogFileSize: 4 << 30}, false},
	} {
		err := c.cfg.Validate()
		if (err == nil) != c.ok || err != nil && !errors.Is(err, badgerstore.ErrConfig) {
			t.Errorf("%s: Validate() = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// The value log collector runs and stops with Close (goleak checks).
func TestGCStops(t *testing.T) {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{Dir: t.TempDir(), GCInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func benchSpace(b *testing.B) store.Store {
	bk, err := badgerstore.Open(context.Background(), badgerstore.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bk.Close() })
	s, err := bk.Space("profiles")
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkBadgerGet(b *testing.B) {
	s := benchSpace(b)
	ctx := context.Background()
	value := bytes.Repeat([]byte("p"), 200)
	if err := s.Transact(ctx, func(tx store.Tx) error { return tx.Set([]byte("profile/42"), value) }); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		err := s.ReadTransact(ctx, func(tx store.ReadTx) error {
			_, err := tx.Get([]byte("profile/42"))
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBadgerSet(b *testing.B) {
	s := benchSpace(b)
	ctx := context.Background()
	value := bytes.Repeat([]byte("p"), 200)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		err := s.Transact(ctx, func(tx store.Tx) error {
			return tx.Set(fmt.Appendf(nil, "profile/%d", i), value)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestStampsAfterReopen: the stamp counter survives a restart, so stamped
// keys written after it sort after those written before.
func TestStampsAfterReopen(t *testing.T) {
	dir := t.TempDir()
	var keys [][]byte
	for round := range 2 {
		b, err := badgerstore.Open(t.Context(), badgerstore.Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.Space("svc")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			err := s.Transact(t.Context(), func(tx store.Tx) error {
				return tx.SetStamped([]byte("log/"), fmt.Appendf(nil, "%d/%d", round, i))
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		keys = nil
		err = s.ReadTransact(t.Context(), func(tx store.ReadTx) error {
			kvs, err := tx.Range([]byte("log/"), []byte("log0"), store.RangeOptions{})
			for _, kv := range kvs {
				keys = append(keys, append(kv.Key, kv.Value...))
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, k := range keys {
		got = append(got, string(k[len("log/")+store.StampBytes:]))
	}
	if want := "0/0 0/1 0/2 1/0 1/1 1/2"; strings.Join(got, " ") != want {
		t.Errorf("values in stamp order = %q, want %q", strings.Join(got, " "), want)
	}
}

// BenchmarkCommit: concurrent small write transactions (a Set and a
// SetStamped, as a message and its event) on disk, synced and not.
func BenchmarkCommit(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		b.Run(fmt.Sprintf("NoSync=%v", noSync), func(b *testing.B) {
			bk, err := badgerstore.Open(b.Context(), badgerstore.Config{Dir: b.TempDir(), NoSync: noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer bk.Close()
			s, err := bk.Space("messages")
			if err != nil {
				b.Fatal(err)
			}
			value := bytes.Repeat([]byte("m"), 200)
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					err := s.Transact(context.Background(), func(tx store.Tx) error {
						if err := tx.Set(fmt.Appendf(nil, "m/%p/%d", pb, i), value); err != nil {
							return err
						}
						return tx.SetStamped([]byte("log/"), value)
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkCommitSteady is BenchmarkCommit in memory once the commit log
// holds as many commits as it keeps (store.MaxTransactionTime and a
// second of them): from then on every commit also drops an old one.
func BenchmarkCommitSteady(b *testing.B) {
	bk, err := badgerstore.Open(b.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	defer bk.Close()
	s, err := bk.Space("messages")
	if err != nil {
		b.Fatal(err)
	}
	value := bytes.Repeat([]byte("m"), 200)
	var n atomic.Uint64
	commit := func() error {
		i := n.Add(1)
		return s.Transact(context.Background(), func(tx store.Tx) error {
			if err := tx.Set(fmt.Appendf(nil, "m/%d", i), value); err != nil {
				return err
			}
			return tx.SetStamped([]byte("log/"), value)
		})
	}
	var wg sync.WaitGroup
	until := time.Now().Add(store.MaxTransactionTime + 2*time.Second)
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(until) {
				if err := commit(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := commit(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
