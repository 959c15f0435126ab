package badgerstore

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every wait is covered by a sync that started after it was called, and
// concurrent waits share syncs.
func TestGroupSync(t *testing.T) {
	var syncs, written atomic.Int64
	var syncedUpTo atomic.Int64 // the writes the last sync covered
	g := newGroupSync(func() error {
		syncs.Add(1)
		n := written.Load()
		time.Sleep(time.Millisecond)
		syncedUpTo.Store(n)
		return nil
	}, maxGather)
	const waiters, each = 16, 50
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			for range each {
				mine := written.Add(1)
				if err := g.wait(); err != nil {
					t.Error(err)
					return
				}
				if got := syncedUpTo.Load(); got < mine {
					t.Errorf("wait returned with writes up to %d synced, want %d or more", got, mine)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := syncs.Load(); n >= waiters*each {
		t.Errorf("%d syncs for %d waits: want them shared", n, waiters*each)
	}
	t.Logf("%d syncs for %d waits", syncs.Load(), waiters*each)
}

func TestGroupSyncError(t *testing.T) {
	errDisk := errors.New("disk gone")
	g := newGroupSync(func() error { return errDisk }, maxGather)
	if err := g.wait(); !errors.Is(err, errDisk) {
		t.Errorf("wait = %v, want %v", err, errDisk)
	}
}

// While commits come closer together than gather, a sync about to start
// waits about one gap for the next commit, which it then serves too.
func TestGroupSyncGathers(t *testing.T) {
	var syncs atomic.Int64
	g := newGroupSync(func() error { syncs.Add(1); return nil }, time.Hour)
	g.gap = 300 * time.Millisecond // commits about 300ms apart: under gather
	first := make(chan error, 1)
	go func() { first <- g.wait() }()
	time.Sleep(50 * time.Millisecond) // well within the first sync's wait
	if err := g.wait(); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := syncs.Load(); n != 1 {
		t.Errorf("%d syncs for two commits 50ms apart, want 1", n)
	}

	// Commits further apart than gather never wait for another: here
	// such a wait would last two hours.
	g = newGroupSync(func() error { syncs.Add(1); return nil }, time.Hour)
	g.gap = 2 * time.Hour
	done := make(chan error, 1)
	go func() { done <- g.wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a commit with none near it waited for another")
	}
}
