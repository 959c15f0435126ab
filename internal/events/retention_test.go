package events_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/store"
)

func newTrimmer(t *testing.T, log store.Store, topics map[string]events.Retention, cursors func(context.Context, string) ([]events.Pos, error)) *events.Trimmer {
	t.Helper()
	tr, err := events.NewTrimmer(events.TrimmerConfig{Publisher: "messages", Log: log, Topics: topics, Cursors: cursors, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func publishN(t *testing.T, p *events.Publisher, topic string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := p.Publish(context.Background(), topic, body(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// A capped topic stays near its cap however much is published, keeping
// the newest events; an uncapped one keeps everything.
func TestRetentionMaxEvents(t *testing.T) {
	space, _ := spaces(t)
	p := newPublisher(t, "messages", space, false)
	tr := newTrimmer(t, space, map[string]events.Retention{"capped": {MaxEvents: 100}}, nil)
	for round := range 20 {
		publishN(t, p, "capped", round*50, 50)
		publishN(t, p, "free", round*50, 50)
		if _, err := tr.Trim(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, evs := readLog(t, space, "messages", "capped"); len(evs) > 100 {
			t.Fatalf("round %d: %d events after the trim, cap 100", round, len(evs))
		}
	}
	_, evs := readLog(t, space, "messages", "capped")
	if len(evs) != 100 || string(evs[0].Body) != "event 900" || string(evs[99].Body) != "event 999" {
		t.Errorf("capped: %d events from %q, want the newest 100 (event 900 on)", len(evs), evs[0].Body)
	}
	if _, evs := readLog(t, space, "messages", "free"); len(evs) != 1000 {
		t.Errorf("free: %d events, want all 1000", len(evs))
	}
}

func TestRetentionMaxAge(t *testing.T) {
	space, _ := spaces(t)
	old := time.Now().Add(-time.Hour)
	if err := space.Transact(t.Context(), func(tx store.Tx) error {
		for i := range 5 {
			if err := events.AppendTx(tx, "messages", "t", events.Event{Time: old, Body: fmt.Appendf(nil, "old %d", i)}); err != nil {
				return err
			}
		}
		return events.AppendTx(tx, "messages", "t", events.Event{Body: []byte("new")})
	}); err != nil {
		t.Fatal(err)
	}
	tr := newTrimmer(t, space, map[string]events.Retention{"t": {MaxAge: time.Minute}}, nil)
	n, err := tr.Trim(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, evs := readLog(t, space, "messages", "t"); n != 5 || len(evs) != 1 || string(evs[0].Body) != "new" {
		t.Errorf("removed %d, left %d; want the 5 old ones removed and the new one kept", n, len(evs))
	}
}

// Without Hard, the trim stops at the oldest live cursor; with Hard it
// does not, and the lagging subscriber is told it skipped.
func TestRetentionCursors(t *testing.T) {
	pubSpace, subSpace := spaces(t)
	p := newPublisher(t, "messages", pubSpace, false)
	publishN(t, p, "t", 0, 50)
	_, all := readLog(t, pubSpace, "messages", "t")
	lagging := all[9].Pos // delivered up to event 9
	cursors := func(context.Context, string) ([]events.Pos, error) { return []events.Pos{lagging}, nil }

	soft := newTrimmer(t, pubSpace, map[string]events.Retention{"t": {MaxEvents: 10}}, cursors)
	if _, err := soft.Trim(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, evs := readLog(t, pubSpace, "messages", "t"); len(evs) != 40 || string(evs[0].Body) != "event 10" {
		t.Fatalf("soft trim left %d events, want the 40 after the cursor", len(evs))
	}

	// The lagging subscriber's cursor is stored; then a hard trim passes it.
	if err := subSpace.Transact(t.Context(), func(tx store.Tx) error {
		return tx.Set(eventlog.CursorKey("feed", "messages", "t"), lagging[:])
	}); err != nil {
		t.Fatal(err)
	}
	hard := newTrimmer(t, pubSpace, map[string]events.Retention{"t": {MaxEvents: 10, Hard: true}}, cursors)
	if _, err := hard.Trim(t.Context()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	var skippedTo []uint64
	var skips [][2]events.Pos
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace, Logger: quietLogger(), PollInterval: 20 * time.Millisecond,
		Topics: []events.TopicRef{{Publisher: "messages", Topic: "t", Log: pubSpace}},
		Deliver: func(_ context.Context, ev events.Event) error {
			mu.Lock()
			got = append(got, string(ev.Body))
			skippedTo = append(skippedTo, ev.SkippedTo)
			mu.Unlock()
			return nil
		},
		OnSkip: func(_ events.TopicRef, from, to events.Pos) {
			mu.Lock()
			skips = append(skips, [2]events.Pos{from, to})
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, s)
	waitFor(t, "the 10 events left delivered", func() bool { return s.Status().Topics[0].Delivered == 10 })
	st := s.Status().Topics[0]
	mu.Lock()
	defer mu.Unlock()
	if st.Skipped != 1 || got[0] != "event 40" {
		t.Errorf("skipped %d, first delivered %q; want 1 skip and event 40 first", st.Skipped, got[0])
	}
	if want := all[39].Seq; skippedTo[0] != want || skippedTo[1] != 0 {
		t.Errorf("SkippedTo of the first two events delivered: %d, %d; want %d (event 39's seq), then 0", skippedTo[0], skippedTo[1], want)
	}
	if len(skips) != 1 || skips[0][0] != lagging || skips[0][1] != all[39].Pos {
		t.Errorf("OnSkip calls: %v; want one, from the cursor (event 9) to event 39", skips)
	}
}

// A Subscriber registers on the logs it follows, and RegisteredCursors
// finds its stored cursor there: a soft trim keeps what it has not
// delivered, whether it runs or not, until it is unregistered.
func TestRetentionRegisteredCursors(t *testing.T) {
	pubSpace, subSpace := spaces(t)
	p := newPublisher(t, "messages", pubSpace, false)
	publishN(t, p, "t", 0, 50)
	var delivered atomic.Int32
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace, Logger: quietLogger(), PollInterval: 10 * time.Millisecond, BatchSize: 5,
		RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond,
		Topics: []events.TopicRef{{Publisher: "messages", Topic: "t", Log: pubSpace}},
		Deliver: func(context.Context, events.Event) error {
			if delivered.Load() >= 20 {
				return errors.New("not now") // the subscriber lags at event 19
			}
			delivered.Add(1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := runSubscriber(t, s)
	waitFor(t, "20 events delivered and the topic blocked", func() bool {
		st := s.Status().Topics[0]
		return st.Delivered == 20 && st.Blocked
	})
	stop() // a stopped subscriber still holds the log: its cursor is stored

	cursors := events.RegisteredCursors(pubSpace, "messages", func(name string) (store.Store, error) {
		if name != "feed" {
			return nil, fmt.Errorf("unknown subscriber %q", name)
		}
		return subSpace, nil
	})
	got, err := cursors(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	_, all := readLog(t, pubSpace, "messages", "t")
	if len(got) != 1 || got[0] != all[19].Pos {
		t.Fatalf("registered cursors %v, want feed's at event 19", got)
	}
	tr := newTrimmer(t, pubSpace, map[string]events.Retention{"t": {MaxEvents: 5}}, cursors)
	if _, err := tr.Trim(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, evs := readLog(t, pubSpace, "messages", "t"); len(evs) != 30 || string(evs[0].Body) != "event 20" {
		t.Fatalf("soft trim left %d events from %q, want the 30 feed has not delivered", len(evs), evs[0].Body)
	}
	if err := pubSpace.Transact(t.Context(), func(tx store.Tx) error {
		return eventlog.UnregisterTx(tx, "feed", "messages", "t")
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Trim(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, evs := readLog(t, pubSpace, "messages", "t"); len(evs) != 5 || string(evs[0].Body) != "event 45" {
		t.Fatalf("after unregistering, the trim left %d events, want the newest 5", len(evs))
	}
}

func TestTrimmerValidate(t *testing.T) {
	st, _ := spaces(t)
	for _, tc := range []struct {
		name string
		cfg  events.TrimmerConfig
	}{
		{"bad publisher", events.TrimmerConfig{Publisher: "-x", Log: st}},
		{"no log", events.TrimmerConfig{Publisher: "messages"}},
		{"bad topic", events.TrimmerConfig{Publisher: "messages", Log: st, Topics: map[string]events.Retention{"a/b": {}}}},
		{"negative cap", events.TrimmerConfig{Publisher: "messages", Log: st, Topics: map[string]events.Retention{"t": {MaxEvents: -1}}}},
	} {
		if _, err := events.NewTrimmer(tc.cfg); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", tc.name, err)
		}
	}
}

// Run keeps a capped topic within 10% of its cap while publishers keep
// publishing (here 2,000 events/s against a cap of 2,000, trimmed every
// 20 ms: the cap is held when the interval's events are a small share of
// it, 2% here, which leaves 100 ms of slack for a trim delayed on a busy
// machine).
func TestTrimmerRunHoldsCap(t *testing.T) {
	space, _ := spaces(t)
	p := newPublisher(t, "messages", space, false)
	tr, err := events.NewTrimmer(events.TrimmerConfig{Publisher: "messages", Log: space, Logger: quietLogger(),
		Topics: map[string]events.Retention{"t": {MaxEvents: 2000}}, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = tr.Run(ctx) })
	for w := range 4 {
		wg.Go(func() {
			tick := time.NewTicker(2 * time.Millisecond) // 500/s each
			defer tick.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				if err := p.Publish(ctx, "t", body(w*1_000_000+i)); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		})
	}
	most, samples := 0, 0
	for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, evs := readLog(t, space, "messages", "t")
		most = max(most, len(evs))
		samples++
	}
	cancel()
	wg.Wait()
	if most > 2200 || most < 2000 {
		t.Errorf("the log held up to %d events over %d samples, want the cap of 2,000 reached and never exceeded by more than 10%%", most, samples)
	}
	t.Logf("up to %d events over %d samples", most, samples)
}
