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

// Announcements are hints: with no PUB socket at all, or with the publisher's
// socket closed halfway, polling still delivers everything.
func TestLostAnnouncements(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen bool
		close  bool // close the PUB socket after half the events
	}{
		{name: "no socket", listen: false},
		{name: "socket closed halfway", listen: true, close: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pubSpace, subSpace := spaces(t)
			p := newPublisher(t, "messages", pubSpace, tc.listen)
			const n = 200
			rec := newRecorder(n)
			s, err := events.NewSubscriber(events.SubscriberConfig{
				Name: "feed", Cursors: subSpace,
				Topics: []events.TopicRef{{Publisher: "messages", Topic: "message.sent", Log: pubSpace}},
				// An address nobody listens on stands in for a lost announcer.
				Announcers: func() []string { return []string{p.Addr(), "tcp://127.0.0.1:1"} },
				Deliver:    rec.deliver, PollInterval: 50 * time.Millisecond, Logger: quietLogger(),
			})
			if err != nil {
				t.Fatal(err)
			}
			runSubscriber(t, s)
			if tc.listen {
				waitPeers(t, p, 1)
			}
			for i := range n {
				if tc.close && i == n/2 {
					if err := p.Close(); err != nil {
						t.Fatal(err)
					}
					// Closed publishers refuse to publish; keep appending to
					// the log directly, as a handler's transaction would.
				}
				if p2 := i >= n/2 && tc.close; p2 {
					if err := pubSpace.Transact(context.Background(), func(tx store.Tx) error {
						err := events.AppendTx(tx, "messages", "message.sent", body(i))
						return err
					}); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := p.Publish(context.Background(), "message.sent", body(i)); err != nil {
					t.Fatal(err)
				}
			}
			rec.wait(t, 20*time.Second)
			if d := rec.check(t); d != 0 {
				t.Errorf("got %d duplicates, want 0", d)
			}
		})
	}
}

// With a poll interval far longer than the test, only announcements over the
// real PUB/SUB sockets can wake the subscriber.
func TestAnnouncementWakesSubscriber(t *testing.T) {
	pubSpace, subSpace := spaces(t)
	p := newPublisher(t, "messages", pubSpace, true)
	got := make(chan events.Event, 16)
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace,
		Topics:     []events.TopicRef{{Publisher: "messages", Topic: "message.sent", Log: pubSpace}},
		Announcers: func() []string { return []string{p.Addr()} },
		Deliver: func(_ context.Context, ev events.Event) error {
			got <- ev
			return nil
		},
		PollInterval: time.Hour, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, s)

	// Announcements sent before the publisher has attached the connection
	// are lost (the subscriber would find those events at its next poll).
	waitPeers(t, p, 1)
	// One topic in the log's key space: Seqs are 1, 2, 3...
	var seq uint64
	publish := func() {
		t.Helper()
		if err := p.Publish(context.Background(), "message.sent", body(int(seq+1))); err != nil {
			t.Fatal(err)
		}
		seq++
	}
	// await reports whether seq arrives within d, checking the order.
	var last uint64
	await := func(d time.Duration) bool {
		t.Helper()
		timeout := time.After(d)
		for last < seq {
			select {
			case ev := <-got:
				if ev.Seq != last+1 || ev.Publisher != "messages" || ev.Topic != "message.sent" || string(ev.Body) != fmt.Sprintf("event %d", ev.Seq) {
					t.Fatalf("got %+v, want seq %d of messages/message.sent with body %q", ev, last+1, fmt.Sprintf("event %d", last+1))
				}
				last = ev.Seq
			case <-timeout:
				return false
			}
		}
		return true
	}
	// Connected: every announcement now wakes the subscriber at once.
	for range 20 {
		start := time.Now()
		publish()
		if !await(5 * time.Second) {
			t.Fatalf("seq %d not delivered within 5s of its announcement (poll interval: 1h)", seq)
		}
		if seq == last && seq%10 == 0 {
			t.Logf("announcement to delivery: %v", time.Since(start))
		}
	}
}

// A failing Deliver blocks its topic without skipping, while another topic
// keeps flowing; when Deliver recovers the topic resumes in order.
func TestFailingDeliverBlocksTopic(t *testing.T) {
	pubSpace, subSpace := spaces(t)
	p := newPublisher(t, "messages", pubSpace, true)
	const n, poison = 20, 5
	var healed atomic.Bool
	var mu sync.Mutex
	seen := map[string][]string{}  // topic → bodies delivered
	lastSeq := map[string]uint64{} // topic → Seq of the last delivered
	poisonBody := string(body(poison - 1).Body)
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace,
		Topics: []events.TopicRef{
			{Publisher: "messages", Topic: "poisoned", Log: pubSpace},
			{Publisher: "messages", Topic: "healthy", Log: pubSpace},
		},
		Announcers: func() []string { return []string{p.Addr()} },
		Deliver: func(_ context.Context, ev events.Event) error {
			if ev.Topic == "poisoned" && string(ev.Body) == poisonBody && !healed.Load() {
				return errors.New("handler answered 500")
			}
			mu.Lock()
			seen[ev.Topic] = append(seen[ev.Topic], string(ev.Body))
			lastSeq[ev.Topic] = ev.Seq
			mu.Unlock()
			return nil
		},
		PollInterval: 20 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond,
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, s)
	waitPeers(t, p, 1)
	for i := range n {
		for _, topic := range []string{"poisoned", "healthy"} {
			if err := p.Publish(context.Background(), topic, body(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, "healthy topic delivered and poisoned topic retrying", func() bool {
		st := s.Status()
		return st.Topics[1].Delivered == n && st.Topics[0].Failures >= 3
	})
	st := s.Status().Topics[0]
	mu.Lock()
	blockedAt := lastSeq["poisoned"]
	if got, want := fmt.Sprint(seen["poisoned"]), fmt.Sprint(bodies(0, poison-1)); got != want {
		t.Errorf("while blocked: got poisoned events %s, want %s", got, want)
	}
	mu.Unlock()
	if !st.Blocked || st.Delivered != poison-1 || st.Cursor != blockedAt || st.Head <= st.Cursor || st.Lag != st.Head-st.Cursor || st.LastError != "handler answered 500" {
		t.Errorf("blocked status: got %+v, want blocked at cursor %d after %d deliveries, a head beyond it, last error set", st, blockedAt, poison-1)
	}
	// The cursor was saved before retrying: a restart now would resume at 5.
	var cur uint64
	if err := subSpace.ReadTransact(context.Background(), func(tx store.ReadTx) error {
		p, err := events.CursorTx(tx, "feed", "messages", "poisoned")
		cur = p.Seq()
		return err
	}); err != nil || cur != blockedAt {
		t.Errorf("stored cursor while blocked: got %d, %v, want %d", cur, err, blockedAt)
	}

	healed.Store(true)
	waitFor(t, "poisoned topic recovered", func() bool { return s.Status().Topics[0].Delivered == n })
	st = s.Status().Topics[0]
	if st.Blocked || st.Lag != 0 {
		t.Errorf("after recovery: got %+v, want not blocked, lag 0", st)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, topic := range []string{"poisoned", "healthy"} {
		if got, want := fmt.Sprint(seen[topic]), fmt.Sprint(bodies(0, n)); got != want {
			t.Errorf("%s: got events %s, want %s", topic, got, want)
		}
	}
}

// bodies are the bodies of body(from) to body(to-1).
func bodies(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, string(body(i).Body))
	}
	return out
}

// A clean stop saves the cursor: a new Subscriber on the same store delivers
// nothing twice.
func TestCleanRestartNoDuplicates(t *testing.T) {
	pubSpace, subSpace := spaces(t)
	p := newPublisher(t, "messages", pubSpace, false)
	const n = 250
	rec := newRecorder(n)
	mk := func() *events.Subscriber {
		s, err := events.NewSubscriber(events.SubscriberConfig{
			Name: "feed", Cursors: subSpace,
			Topics:  []events.TopicRef{{Publisher: "messages", Topic: "t", Log: pubSpace}},
			Deliver: rec.deliver, PollInterval: 10 * time.Millisecond, BatchSize: 1000, Logger: quietLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for i := range n {
		if i == 100 || i == 200 {
			rec.newRun(nil)
			s := mk()
			stop := runSubscriber(t, s)
			waitFor(t, "caught up", func() bool { return s.Status().Topics[0].Cursor == uint64(i) })
			stop()
		}
		if err := p.Publish(context.Background(), "t", body(i)); err != nil {
			t.Fatal(err)
		}
	}
	rec.newRun(nil)
	runSubscriber(t, mk())
	rec.wait(t, 10*time.Second)
	if d := rec.check(t); d != 0 {
		t.Errorf("got %d duplicates after clean stops, want 0", d)
	}
}

func TestRunTwice(t *testing.T) {
	pubSpace, subSpace := spaces(t)
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace,
		Topics:  []events.TopicRef{{Publisher: "messages", Topic: "t", Log: pubSpace}},
		Deliver: func(context.Context, events.Event) error { return nil }, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, s)
	waitFor(t, "running", func() bool { return s.Status().Running })
	if err := s.Run(context.Background()); !errors.Is(err, events.ErrRunning) {
		t.Errorf("second Run: got %v, want ErrRunning", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// AnnounceCommitted wakes subscribers of the topics whose log prefixes a
// commit stamped, and ignores other prefixes.
func TestAnnounceCommitted(t *testing.T) {
	pubSpace, subSpace := spaces(t)
	p := newPublisher(t, "messages", pubSpace, true)
	got := make(chan events.Event, 1)
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace, Logger: quietLogger(), PollInterval: time.Hour,
		Topics:     []events.TopicRef{{Publisher: "messages", Topic: "message.sent", Log: pubSpace}},
		Announcers: func() []string { return []string{p.Addr()} },
		Deliver: func(_ context.Context, ev events.Event) error {
			got <- ev
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, s)
	waitPeers(t, p, 1)
	time.Sleep(100 * time.Millisecond) // the first poll, at start, found nothing
	if err := pubSpace.Transact(t.Context(), func(tx store.Tx) error {
		return events.AppendTx(tx, "messages", "message.sent", body(1))
	}); err != nil {
		t.Fatal(err)
	}
	prefix, _ := eventlog.LogRange("messages", "message.sent")
	other, _ := eventlog.LogRange("billing", "message.sent")
	p.AnnounceCommitted()([][]byte{[]byte("not/an/event/log/"), other, prefix})
	select {
	case ev := <-got:
		if string(ev.Body) != "event 1" {
			t.Errorf("delivered %q, want event 1", ev.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not delivered within 5s of the announcement (poll interval: 1h)")
	}
}
