package events_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
)

// 1,000 events from 4 concurrent publishers on one topic reach the
// subscriber as seqs 1..1000, in order, each exactly once (no crash here).
func TestOrderAndCompleteness(t *testing.T) {
	pubSpace, subSpace := spaces(t)
	const publishers, each = 4, 250
	var pubs []*events.Publisher
	for range publishers {
		pubs = append(pubs, newPublisher(t, "messages", pubSpace, true))
	}
	addrs := func() []string {
		var a []string
		for _, p := range pubs {
			a = append(a, p.Addr())
		}
		return a
	}
	rec := newRecorder(publishers * each)
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace,
		Topics:     []events.TopicRef{{Publisher: "messages", Topic: "message.sent", Log: pubSpace}},
		Announcers: addrs, Deliver: rec.deliver, BatchSize: 50, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, s)
	for _, p := range pubs {
		waitPeers(t, p, 1)
	}

	ctx := context.Background()
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Go(func() {
			for i := range each {
				if err := p.Publish(ctx, "message.sent", body(i)); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	rec.wait(t, 30*time.Second)
	if d := rec.check(t); d != 0 {
		t.Errorf("got %d duplicates without a crash, want 0", d)
	}
	// The recorder sees each event as it is handed over; the status counts a
	// batch once Deliver has returned and its cursor is written.
	waitFor(t, "cursor at the last event", func() bool {
		st := s.Status().Topics[0]
		return st.Cursor == publishers*each && st.Delivered == publishers*each
	})
	st := s.Status().Topics[0]
	if st.Cursor != publishers*each || st.Delivered != publishers*each {
		t.Errorf("status: got cursor %d delivered %d, want %d", st.Cursor, st.Delivered, publishers*each)
	}
}

// The test: 10,000 events published while the subscriber is killed
// and restarted twice. Every event is delivered, in order, none lost;
// duplicates are counted. The first kill lands between a delivery and its
// cursor write (from inside Deliver); the second at a random instant.
func TestKilledAndRestartedTwice(t *testing.T) {
	pubSpace, subSpace := diskSpaces(t)
	const total = 10_000
	p := newPublisher(t, "messages", pubSpace, true)
	rec := newRecorder(total)

	// Each run sees the stores through its own killable wrappers: killing
	// them is the process dying (nothing it does afterwards reaches the
	// store), and its ctx is cancelled at the same instant.
	start := func(hook func(kill func()) func(int)) (stop func()) {
		cursors, logView := &killable{Store: subSpace}, &killable{Store: pubSpace}
		ctx, cancel := context.WithCancel(context.Background())
		kill := func() { cursors.kill(); logView.kill(); cancel() }
		s, err := events.NewSubscriber(events.SubscriberConfig{
			Name: "feed", Cursors: cursors,
			Topics:     []events.TopicRef{{Publisher: "messages", Topic: "message.sent", Log: logView}},
			Announcers: func() []string { return []string{p.Addr()} },
			Deliver:    rec.deliver, PollInterval: 200 * time.Millisecond, BatchSize: 100,
			Logger: quietLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		var h func(int)
		if hook != nil {
			h = hook(kill)
		}
		rec.newRun(h)
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		return func() {
			kill()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}

	// Publish in the background, in three phases: the publisher waits at
	// each gate until the subscriber has been killed, so that both kills and
	// both restarts happen while events are still being published (and some
	// are published while no subscriber runs).
	gate1, gate2 := make(chan struct{}), make(chan struct{})
	pubDone := make(chan struct{})
	var published atomic.Int64
	var pubBusy time.Duration // time spent publishing, gates excluded
	go func() {
		defer close(pubDone)
		for i := range total {
			switch i {
			case 4000:
				<-gate1
			case 7000:
				<-gate2
			}
			t0 := time.Now()
			if err := p.Publish(context.Background(), "message.sent", body(i)); err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
			pubBusy += time.Since(t0)
			published.Add(1)
		}
	}()
	defer func() { // on an early t.Fatal, let the publisher finish
		for _, g := range []chan struct{}{gate1, gate2} {
			select {
			case <-g:
			default:
				close(g)
			}
		}
		<-pubDone
	}()

	// Run 1: killed from inside Deliver after a random number of deliveries,
	// after the delivery is acknowledged and before its cursor is written.
	n1 := 500 + rand.IntN(3000)
	killed1 := make(chan struct{})
	var once1 sync.Once
	stop1 := start(func(kill func()) func(int) {
		return func(n int) {
			if n == n1 {
				once1.Do(func() { kill(); close(killed1) })
			}
		}
	})
	select {
	case <-killed1:
	case <-time.After(60 * time.Second):
		t.Fatal("run 1 never reached its kill point")
	}
	stop1()
	t.Logf("run 1 killed after %d deliveries; %d published so far", n1, published.Load())
	close(gate1)
	time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond) // published while down

	// Run 2: killed at a random instant.
	stop2 := start(nil)
	time.Sleep(time.Duration(20+rand.IntN(200)) * time.Millisecond)
	stop2()
	t.Logf("run 2 killed at a random instant; %d published so far", published.Load())
	close(gate2)
	time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond)

	// Run 3: runs to the end.
	deliverStart := time.Now()
	stop3 := start(nil)
	<-pubDone
	rec.wait(t, 60*time.Second)
	stop3()
	dups := rec.check(t)
	t.Logf("10,000 events: %d duplicates; publishing took %v (%.0f events/s, one transaction each); run 3 delivered the rest %v after its start",
		dups, pubBusy.Round(time.Millisecond), total/pubBusy.Seconds(), time.Since(deliverStart).Round(time.Millisecond))
}
