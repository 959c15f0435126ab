package events_test

import (
	"context"
	"fmt"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
)

// A "messages" service stores a message and publishes an event in one
// transaction; a "feed" service receives it.
func Example() {
	ctx := context.Background()
	backend, err := badgerstore.Open(ctx, badgerstore.Config{InMemory: true})
	if err != nil {
		panic(err)
	}
	defer backend.Close()
	messages, _ := backend.Space("messages")
	feed, _ := backend.Space("feed")

	pub, err := events.NewPublisher(events.PublisherConfig{Name: "messages", Log: messages, Listen: "tcp://127.0.0.1:0"})
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	got := make(chan events.Event)
	sub, err := events.NewSubscriber(events.SubscriberConfig{
		Name:       "feed",
		Cursors:    feed,
		Topics:     []events.TopicRef{{Publisher: "messages", Topic: "message.sent", Log: messages}},
		Announcers: func() []string { return []string{pub.Addr()} },
		Deliver: func(ctx context.Context, ev events.Event) error {
			select {
			case got <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		PollInterval: 100 * time.Millisecond,
	})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Run(runCtx) }()
	defer func() { stop(); <-done }()

	// Announcements reach the subscribers connected when they are sent
	// (the others poll); wait for this one so that the example is prompt.
	for pub.Peers() == 0 {
		time.Sleep(10 * time.Millisecond)
	}

	// The handler's transaction: state and event commit together.
	err = messages.Transact(ctx, func(tx store.Tx) error {
		if err := tx.Set([]byte("inbox/ann/1"), []byte("hi Ann")); err != nil {
			return err
		}
		return events.AppendTx(tx, "messages", "message.sent", events.Event{
			ContentType: "application/json", Body: []byte(`{"to":"ann"}`),
		})
	})
	if err != nil {
		panic(err)
	}
	pub.Announce("message.sent")

	ev := <-got
	fmt.Println(ev.Publisher, ev.Topic, ev.Seq, string(ev.Body))
	// Output: messages message.sent 1 {"to":"ann"}
}
