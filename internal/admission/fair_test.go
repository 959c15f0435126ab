package admission

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestFairKeysDoNotShedEachOther: a key whose limit and queue are full
// sheds its own requests; another key is admitted at once.
func TestFairKeysDoNotShedEachOther(t *testing.T) {
	f, err := NewFair(Config{InitialLimit: 8, MinLimit: 8, MaxLimit: 8, QueueSize: 1, MaxWait: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	var held []Ticket
	for range 8 {
		tk, err := f.Acquire(context.Background(), "slow")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, tk)
	}
	if _, err := f.Acquire(context.Background(), "slow"); !errors.Is(err, ErrShed) {
		t.Fatalf("ninth request to the full key: %v, want ErrShed", err)
	}
	for i := range 8 {
		tk, err := f.Acquire(context.Background(), "fast")
		if err != nil {
			t.Fatalf("request %d to another key while the first is full: %v, want admitted", i, err)
		}
		f.Release(tk, true)
	}
	for _, tk := range held {
		f.Release(tk, true)
	}
	st := f.Stats()
	if st["slow"].InFlight != 0 || st["fast"].InFlight != 0 || len(st) != 2 {
		t.Errorf("stats after all releases: %+v, want two keys with nothing in flight", st)
	}
}

func TestBytes(t *testing.T) {
	if _, err := NewBytes(0); err == nil {
		t.Error("NewBytes(0) accepted")
	}
	b, _ := NewBytes(10)
	if !b.TryAcquire(6) || b.TryAcquire(5) || !b.TryAcquire(4) || b.InUse() != 10 {
		t.Fatalf("after 6, 5 (refused), 4: in use %d, want 10", b.InUse())
	}
	b.Release(6)
	b.Release(4)
	if b.InUse() != 0 {
		t.Errorf("in use %d after releasing all, want 0", b.InUse())
	}
}
