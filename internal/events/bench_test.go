package events_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/store"
)

// BenchmarkPublish: one Publish (its own transaction) per event, on disk.
func BenchmarkPublish(b *testing.B) {
	pubSpace, _ := diskSpaces(b)
	p, err := events.NewPublisher(events.PublisherConfig{Name: "messages", Log: pubSpace, Listen: "tcp://127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ev := events.Event{ContentType: "application/json", Body: make([]byte, 200)}
	b.ResetTimer()
	for b.Loop() {
		if err := p.Publish(context.Background(), "t", ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkCatchUp: a subscriber delivering a backlog of b.N events (reads,
// Deliver, cursor writes), on disk.
func BenchmarkCatchUp(b *testing.B) {
	pubSpace, subSpace := diskSpaces(b)
	ev := events.Event{ContentType: "application/json", Body: make([]byte, 200)}
	for i := 0; i < b.N; i += 100 {
		if err := pubSpace.Transact(context.Background(), func(tx store.Tx) error {
			for j := i; j < min(i+100, b.N); j++ {
				if err := events.AppendTx(tx, "messages", "t", ev); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	done := make(chan struct{})
	n := 0
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace,
		Topics: []events.TopicRef{{Publisher: "messages", Topic: "t", Log: pubSpace}},
		Deliver: func(context.Context, events.Event) error {
			if n++; n == b.N {
				close(done)
			}
			return nil
		},
		PollInterval: time.Hour, Logger: quietLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	b.ResetTimer()
	go func() { errc <- s.Run(ctx) }()
	<-done
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLive: b.N events published one transaction each by 4 goroutines
// while a subscriber, woken by announcements, delivers them; the time runs
// until the last one is delivered. On disk.
func BenchmarkLive(b *testing.B) {
	pubSpace, subSpace := diskSpaces(b)
	p, err := events.NewPublisher(events.PublisherConfig{Name: "messages", Log: pubSpace, Listen: "tcp://127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	done := make(chan struct{})
	n := 0
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace,
		Topics:     []events.TopicRef{{Publisher: "messages", Topic: "t", Log: pubSpace}},
		Announcers: func() []string { return []string{p.Addr()} },
		Deliver: func(context.Context, events.Event) error {
			if n++; n == b.N {
				close(done)
			}
			return nil
		},
		Logger: quietLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	for p.Peers() == 0 {
		time.Sleep(time.Millisecond)
	}
	ev := events.Event{ContentType: "application/json", Body: make([]byte, 200)}
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < b.N; i += 4 {
				if err := p.Publish(context.Background(), "t", ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	<-done
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
