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
	})
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
	g := newGroupSync(func() error { return errDisk })
	if err := g.wait(); !errors.Is(err, errDisk) {
		t.Errorf("wait = %v, want %v", err, errDisk)
	}
}
