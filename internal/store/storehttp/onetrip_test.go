package storehttp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// countingServer serves a Server over in-memory Badger and counts the
// requests it receives, by path.
type countingServer struct {
	mu    sync.Mutex
	paths []string
}

func (c *countingServer) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.paths
	c.paths = nil
	return p
}

func serveCounting(t *testing.T) (store.Store, store.Store, *countingServer) {
	t.Helper()
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := storehttp.NewServer(b)
	cs := &countingServer{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		cs.paths = append(cs.paths, r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:])
		cs.mu.Unlock()
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
		b.Close()
	})
	// HTTP only: the requests counted are the operations.
	remote, err := storehttp.NewClient(ts.Client(), ts.URL, storehttp.HTTPOnly()).Space("svc")
	if err != nil {
		t.Fatal(err)
	}
	local, err := b.Space("svc")
	if err != nil {
		t.Fatal(err)
	}
	return remote, local, cs
}

// The common shapes of transaction cost as many requests as they read,
// plus one for the commit; a transaction that only writes is one request.
func TestOneTripRequests(t *testing.T) {
	remote, local, cs := serveCounting(t)
	if err := local.Transact(t.Context(), func(tx store.Tx) error { return tx.Set([]byte("seen"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		fn   func(tx store.Tx) error
		want string // the paths requested, in order
	}{
		{"write only", func(tx store.Tx) error {
			if err := tx.Set([]byte("m/1"), []byte("hello")); err != nil {
				return err
			}
			return tx.SetStamped([]byte("log/"), []byte("sent"))
		}, "op"},
		{"read then write", func(tx store.Tx) error {
			v, err := tx.Get([]byte("seen"))
			if err != nil || v == nil {
				return fmt.Errorf("seen = %q, %v", v, err)
			}
			return tx.Set([]byte("f/1"), []byte("entry"))
		}, "op op"},
		{"three reads together, then a write", func(tx store.Tx) error {
			vs, err := store.GetMany(tx, []byte("seen"), []byte("nope"), []byte("m/1"))
			if err != nil || string(vs[0]) != "1" || vs[1] != nil || string(vs[2]) != "hello" {
				return fmt.Errorf("GetMany = %q, %v", vs, err)
			}
			return tx.Set([]byte("f/2"), []byte("entry"))
		}, "op op"},
		{"read own write", func(tx store.Tx) error {
			if err := tx.Set([]byte("k"), []byte("v")); err != nil {
				return err
			}
			v, err := tx.Get([]byte("k"))
			if err != nil || string(v) != "v" {
				return fmt.Errorf("k = %q, %v, want v", v, err)
			}
			return nil
		}, "op"},
		{"read only, one key", func(tx store.Tx) error {
			_, err := tx.Get([]byte("seen"))
			return err
		}, "op"},
		{"range after a write: one request per operation", func(tx store.Tx) error {
			if err := tx.Set([]byte("r/1"), []byte("x")); err != nil {
				return err
			}
			kvs, err := tx.Range([]byte("r/"), []byte("r0"), store.RangeOptions{})
			if err != nil || len(kvs) != 1 {
				return fmt.Errorf("range = %d entries, %v, want 1", len(kvs), err)
			}
			return nil
		}, "txns set range commit"},
		{"range after a write, its error ignored: the same", func(tx store.Tx) error {
			if err := tx.Set([]byte("r/2"), []byte("y")); err != nil {
				return err
			}
			_, _ = tx.Range([]byte("r/"), []byte("r0"), store.RangeOptions{})
			return nil
		}, "txns set range commit"},
	} {
		cs.take()
		if err := remote.Transact(t.Context(), tc.fn); err != nil {
			t.Errorf("%s: Transact: %v", tc.name, err)
			continue
		}
		if got := strings.Join(cs.take(), " "); got != tc.want {
			t.Errorf("%s: requests %q, want %q", tc.name, got, tc.want)
		}
	}
	var v []byte
	if err := local.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		v, err = tx.Get([]byte("f/1"))
		return err
	}); err != nil || string(v) != "entry" {
		t.Errorf("f/1 = %q, %v, want entry", v, err)
	}
}

// A value the function read that changes before the commit makes it run
// again; the second run sees the change.
func TestOneTripStaleRead(t *testing.T) {
	remote, local, _ := serveCounting(t)
	set := func(v string) {
		t.Helper()
		if err := local.Transact(t.Context(), func(tx store.Tx) error { return tx.Set([]byte("n"), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	set("1")
	runs := 0
	err := remote.Transact(t.Context(), func(tx store.Tx) error {
		runs++
		v, err := tx.Get([]byte("n"))
		if err != nil {
			return err
		}
		if runs == 1 {
			set("2")
		}
		return tx.Set([]byte("n"), append(v, '+'))
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	_ = local.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		got, _ = tx.Get([]byte("n"))
		return nil
	})
	if runs != 2 || string(got) != "2+" {
		t.Errorf("ran %d times, n = %q; want 2 runs and 2+", runs, got)
	}
}

// A function that fails after two reads fails only if both reads still
// hold: otherwise it runs again.
func TestOneTripErrorAfterStaleReads(t *testing.T) {
	remote, local, _ := serveCounting(t)
	write := func(k, v string) {
		t.Helper()
		if err := local.Transact(t.Context(), func(tx store.Tx) error { return tx.Set([]byte(k), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "1")
	write("b", "1")
	errUneven := errors.New("a and b differ")
	runs := 0
	err := remote.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		runs++
		a, err := tx.Get([]byte("a"))
		if err != nil {
			return err
		}
		if runs == 1 {
			// a and b change together, between the two reads.
			if err := local.Transact(t.Context(), func(tx store.Tx) error {
				return errors.Join(tx.Set([]byte("a"), []byte("2")), tx.Set([]byte("b"), []byte("2")))
			}); err != nil {
				return err
			}
		}
		b, err := tx.Get([]byte("b"))
		if err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			return errUneven
		}
		return nil
	})
	if err != nil || runs != 2 {
		t.Errorf("ReadTransact = %v after %d runs; want nil after 2 (the first saw a mix of two states)", err, runs)
	}
}

// Concurrent increments through OneTrip: conflicts are retried at the
// server or by the client, and no increment is lost.
func TestOneTripCounter(t *testing.T) {
	remote, local, _ := serveCounting(t)
	const workers, each = 8, 20
	var runs atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				err := remote.Transact(context.Background(), func(tx store.Tx) error {
					runs.Add(1)
					v, err := tx.Get([]byte("c"))
					if err != nil {
						return err
					}
					var n int
					if v != nil {
						fmt.Sscan(string(v), &n)
					}
					return tx.Set([]byte("c"), fmt.Appendf(nil, "%d", n+1))
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	var v []byte
	_ = local.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		v, _ = tx.Get([]byte("c"))
		return nil
	})
	if string(v) != fmt.Sprint(workers*each) {
		t.Errorf("c = %s, want %d", v, workers*each)
	}
	t.Logf("%d runs for %d increments", runs.Load(), workers*each)
}

// Any operation is answered, never a panic: an error, or a result.
func FuzzOp(f *testing.F) {
	f.Add([]byte{storehttp.OpCommit, 0x1a, 0x07, 0x08, 0x01, 0x12, 0x01, 'k', 0x1a, 0x00})
	f.Add([]byte{storehttp.OpCommit, 0x0a, 0x03, 0x0a, 0x01, 'k'})
	f.Add([]byte{storehttp.OpCommit, 0x12, 0x02, 0x18, 0x01})
	f.Add([]byte{storehttp.OpRange, 0x0a, 0x01, 'a'})
	f.Add(storehttp.AppendGet(nil, []byte("k")))
	f.Add([]byte{storehttp.OpGetMany, 0x0a, 0x01, 'k', 0x0a, 0x00})
	f.Add([]byte{storehttp.OpCommit, 0x1a, 0x04, 0x08, 0x04, 0x12, 0x00})
	b, err := badgerstore.Open(f.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	srv := storehttp.NewServer(b, storehttp.WithSpace("svc"))
	f.Cleanup(func() { srv.Close() })
	f.Fuzz(func(t *testing.T, op []byte) {
		ans := srv.Op(context.Background(), op)
		if _, err := storehttp.Decode(ans); err != nil && strings.Contains(err.Error(), "unknown answer") {
			t.Errorf("answer %x: %v", ans, err)
		}
	})
}

// WithCommitted hears of each batch commit that wrote stamped keys, with
// their distinct prefixes, and of no other.
func TestWithCommitted(t *testing.T) {
	var mu sync.Mutex
	var heard []string
	c, _ := serve(t, storehttp.WithCommitted(func(prefixes [][]byte) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range prefixes {
			heard = append(heard, string(p))
		}
	}))
	s, err := c.Space("svc")
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []func(tx store.Tx) error{
		func(tx store.Tx) error { return tx.Set([]byte("k"), []byte("v")) },
		func(tx store.Tx) error {
			return errors.Join(tx.SetStamped([]byte("a/"), nil), tx.SetStamped([]byte("b/"), nil), tx.SetStamped([]byte("a/"), nil))
		},
	} {
		if err := s.Transact(t.Context(), fn); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(heard, " "); got != "a/ b/" {
		t.Errorf("heard %q, want %q", got, "a/ b/")
	}
}

// Stats: 16 writers appending to the event log alongside state conflict
// on nothing (LogRetries 0); writers that read a key of the log and write
// it conflict, and those conflicts are counted as the log's.
func TestStatsLogRetries(t *testing.T) {
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := storehttp.NewServer(b)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()
	hc := ts.Client()
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 32
	s, err := storehttp.NewClient(hc, ts.URL).Space("messages")
	if err != nil {
		t.Fatal(err)
	}
	log := []byte("\xffevents/l/messages/message.sent/")
	run := func(fn func(w, i int) func(tx store.Tx) error) {
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := range 20 {
					if err := s.Transact(context.Background(), fn(w, i)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	run(func(w, i int) func(tx store.Tx) error {
		return func(tx store.Tx) error {
			return errors.Join(tx.Set(fmt.Appendf(nil, "m/%d/%d", w, i), []byte("x")), tx.SetStamped(log, []byte("ev")))
		}
	})
	if st := srv.Stats(); st.Commits != 320 || st.Retries != 0 || st.Stale != 0 || st.LogRetries != 0 {
		t.Errorf("appends: stats %+v, want 320 commits and no retry", st)
	}
	head := append(bytes.Clone(log), "head"...)
	run(func(w, i int) func(tx store.Tx) error {
		return func(tx store.Tx) error {
			v, err := tx.Get(head)
			if err != nil {
				return err
			}
			return tx.Set(head, append(v, 'x'))
		}
	})
	if st := srv.Stats(); st.LogRetries == 0 || st.LogRetries != st.Retries+st.Stale {
		t.Errorf("a hot key in the log: stats %+v, want its conflicts counted as the log's", st)
	}
}
