package backoff

import (
	"context"
	"testing"
	"time"
)

func TestWaitGrowsAndStopsWithContext(t *testing.T) {
	b := New(time.Millisecond, 4*time.Millisecond)
	for _, want := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond} {
		if b.next != want {
			t.Fatalf("next wait %v, want %v", b.next, want)
		}
		if !b.Wait(context.Background()) {
			t.Fatal("Wait with a live context reported it ended")
		}
	}
	b.Reset()
	if b.next != time.Millisecond {
		t.Errorf("after Reset the next wait is %v, want the minimum", b.next)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if New(time.Hour, time.Hour).Wait(ctx) {
		t.Error("Wait with an ended context reported it live")
	}
}
