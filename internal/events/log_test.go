package events_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/store"
)

// A transaction that appends an event and then fails publishes nothing: the
// event and the state change commit together or not at all.
func TestAppendTxAtomicWithState(t *testing.T) {
	space, _ := spaces(t)
	ctx := context.Background()
	errHandler := errors.New("handler: validation failed")
	err := space.Transact(ctx, func(tx store.Tx) error {
		if err := tx.Set([]byte("messages/1"), []byte("hello")); err != nil {
			return err
		}
		if err := events.AppendTx(tx, "messages", "message.sent", body(1)); err != nil {
			return err
		}
		return errHandler
	})
	if !errors.Is(err, errHandler) {
		t.Fatalf("Transact: got %v, want the handler's error", err)
	}
	head, evs := readLog(t, space, "messages", "message.sent")
	if head != 0 || len(evs) != 0 {
		t.Errorf("after a failed transaction: got head %d and %d events, want none", head, len(evs))
	}

	// The same transaction, committed: state and event both appear.
	if err := space.Transact(ctx, func(tx store.Tx) error {
		if err := tx.Set([]byte("messages/1"), []byte("hello")); err != nil {
			return err
		}
		return events.AppendTx(tx, "messages", "message.sent", events.Event{ID: "msg-1", Body: []byte("hello")})
	}); err != nil {
		t.Fatal(err)
	}
	head, evs = readLog(t, space, "messages", "message.sent")
	if len(evs) != 1 || head == 0 || evs[0].Seq != head || evs[0].ID != "msg-1" || string(evs[0].Body) != "hello" || evs[0].Time.IsZero() {
		t.Errorf("after commit: got head %d events %+v, want one event msg-1 at the head with a time", head, evs)
	}
}

// Concurrent transactions appending to one topic, each with a state change
// of its own, never conflict on the log: every transaction runs once, and
// the log holds each event once, in commit order (each writer's events in
// the order it committed them), with growing positions.
func TestAppendTxConcurrent(t *testing.T) {
	space, _ := spaces(t)
	const writers, each = 16, 50
	var runs atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				err := space.Transact(context.Background(), func(tx store.Tx) error {
					runs.Add(1)
					if err := tx.Set(fmt.Appendf(nil, "state/%d/%d", w, i), []byte("x")); err != nil {
						return err
					}
					return events.AppendTx(tx, "messages", "t", events.Event{ID: fmt.Sprintf("%d-%d", w, i)})
				})
				if err != nil {
					t.Errorf("Transact: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := runs.Load(); got != writers*each {
		t.Errorf("transactions ran %d times for %d commits: want no conflict retries", got, writers*each)
	}
	head, evs := readLog(t, space, "messages", "t")
	if len(evs) != writers*each || head != evs[len(evs)-1].Seq {
		t.Fatalf("got head %d and %d events, want %d ending at the head", head, len(evs), writers*each)
	}
	next := make([]int, writers)
	for i, ev := range evs {
		if i > 0 && bytes.Compare(evs[i-1].Pos[:], ev.Pos[:]) >= 0 {
			t.Errorf("log[%d]: position %s after %s, want growing", i, ev.Pos, evs[i-1].Pos)
		}
		var w, n int
		if _, err := fmt.Sscanf(ev.ID, "%d-%d", &w, &n); err != nil || n != next[w] {
			t.Fatalf("log[%d]: event %s where %d-%d was next (%v)", i, ev.ID, w, next[w], err)
		}
		next[w]++
	}
}

// 16 publishers on one topic: no Publish runs twice (Retries stays 0).
func TestPublishersDoNotConflict(t *testing.T) {
	space, _ := spaces(t)
	p := newPublisher(t, "messages", space, false)
	const publishers, each = 16, 40
	var wg sync.WaitGroup
	for w := range publishers {
		wg.Go(func() {
			for i := range each {
				if err := p.Publish(context.Background(), "t", events.Event{ID: fmt.Sprintf("%d-%d", w, i)}); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := p.Retries(); got != 0 {
		t.Errorf("Retries() = %d, want 0", got)
	}
	if _, evs := readLog(t, space, "messages", "t"); len(evs) != publishers*each {
		t.Errorf("log holds %d events, want %d", len(evs), publishers*each)
	}
}

// Topics and publishers are separate logs: names that share a prefix do not
// leak into each other's scans.
func TestLogsAreSeparate(t *testing.T) {
	space, _ := spaces(t)
	for _, l := range []struct{ pub, topic string }{{"a", "t"}, {"a", "t.x"}, {"a", "t"}, {"a.b", "t"}, {"a", "t-"}} {
		if err := space.Transact(context.Background(), func(tx store.Tx) error {
			err := events.AppendTx(tx, l.pub, l.topic, events.Event{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		pub, topic string
		want       int
	}{{"a", "t", 2}, {"a", "t.x", 1}, {"a.b", "t", 1}, {"a", "t-", 1}, {"a", "u", 0}} {
		head, evs := readLog(t, space, tc.pub, tc.topic)
		if len(evs) != tc.want || len(evs) > 0 && head != evs[len(evs)-1].Seq || len(evs) == 0 && head != 0 {
			t.Errorf("%s/%s: got head %d and %d events, want %d ending at the head", tc.pub, tc.topic, head, len(evs), tc.want)
		}
	}
}

func TestAppendTxRejects(t *testing.T) {
	space, _ := spaces(t)
	for _, tc := range []struct {
		name, pub, topic string
		ev               events.Event
		want             error
	}{
		{name: "empty publisher", pub: "", topic: "t", want: events.ErrInvalid},
		{name: "upper-case publisher", pub: "Messages", topic: "t", want: events.ErrInvalid},
		{name: "slash in topic", pub: "messages", topic: "a/b", want: events.ErrInvalid},
		{name: "nul in topic", pub: "messages", topic: "a\x00b", want: events.ErrInvalid},
		{name: "long topic", pub: "messages", topic: strings.Repeat("t", events.MaxTopicLen+1), want: events.ErrInvalid},
		{name: "body over the value limit", pub: "messages", topic: "t", ev: events.Event{Body: make([]byte, store.MaxValueBytes)}, want: events.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := space.Transact(context.Background(), func(tx store.Tx) error {
				err := events.AppendTx(tx, tc.pub, tc.topic, tc.ev)
				return err
			})
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	st, _ := spaces(t)
	deliver := func(context.Context, events.Event) error { return nil }
	good := events.SubscriberConfig{Name: "feed", Cursors: st, Deliver: deliver,
		Topics: []events.TopicRef{{Publisher: "messages", Topic: "t", Log: st}}}
	for _, tc := range []struct {
		name  string
		edit  func(c *events.SubscriberConfig)
		field string // in the message; "" for a valid config
	}{
		{name: "valid", edit: func(*events.SubscriberConfig) {}},
		{name: "bad name", edit: func(c *events.SubscriberConfig) { c.Name = "-feed" }, field: "subscriber name"},
		{name: "no cursors", edit: func(c *events.SubscriberConfig) { c.Cursors = nil }, field: "cursors"},
		{name: "no deliver", edit: func(c *events.SubscriberConfig) { c.Deliver = nil }, field: "deliver"},
		{name: "no topics", edit: func(c *events.SubscriberConfig) { c.Topics = nil }, field: "topics"},
		{name: "bad topic", edit: func(c *events.SubscriberConfig) { c.Topics[0].Topic = "a/b" }, field: "topics[0]"},
		{name: "no log", edit: func(c *events.SubscriberConfig) { c.Topics[0].Log = nil }, field: "log store"},
		{name: "duplicate topic", edit: func(c *events.SubscriberConfig) { c.Topics = append(c.Topics, c.Topics[0]) }, field: "listed twice"},
		{name: "negative poll", edit: func(c *events.SubscriberConfig) { c.PollInterval = -time.Second }, field: "poll interval"},
		{name: "huge batch", edit: func(c *events.SubscriberConfig) { c.BatchSize = events.MaxBatchSize + 1 }, field: "batch size"},
		{name: "retry min over max", edit: func(c *events.SubscriberConfig) { c.RetryMin, c.RetryMax = time.Second, time.Millisecond }, field: "retry min"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			c.Topics = append([]events.TopicRef(nil), good.Topics...)
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.field != "" && (!errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), tc.field)):
				t.Errorf("got %v, want ErrInvalid naming %q", err, tc.field)
			}
			if _, nerr := events.NewSubscriber(c); (nerr == nil) != (err == nil) {
				t.Errorf("NewSubscriber and Validate disagree: %v vs %v", nerr, err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		cfg  events.PublisherConfig
	}{
		{"bad name", events.PublisherConfig{Name: "", Log: st}},
		{"no log", events.PublisherConfig{Name: "messages"}},
	} {
		if _, err := events.NewPublisher(tc.cfg); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("publisher %s: got %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := events.NewPublisher(events.PublisherConfig{Name: "messages", Log: st, Listen: "bogus://x"}); err == nil {
		t.Error("publisher with a bad listen URL: got nil error")
	}
}

func TestPublishAfterClose(t *testing.T) {
	st, _ := spaces(t)
	p := newPublisher(t, "messages", st, true)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), "t", events.Event{}); !errors.Is(err, events.ErrClosed) {
		t.Errorf("got %v, want ErrClosed", err)
	}
	p.Announce("t") // a no-op after Close, not a panic
}

// readLog returns the Seq of a log's last event (0: none) and its events.
func readLog(t *testing.T, st store.Store, pub, topic string) (head uint64, evs []events.Event) {
	t.Helper()
	if err := st.ReadTransact(context.Background(), func(tx store.ReadTx) error {
		p, err := events.HeadTx(tx, pub, topic)
		if err != nil {
			return err
		}
		head = p.Seq()
		evs, err = events.ScanTx(tx, pub, topic, 0, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return head, evs
}
