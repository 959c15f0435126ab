package events_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(subscriberChild()) // the test binary re-executed as a subscriber process
	}
	goleak.VerifyTestMain(m)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// spaces opens an in-memory Badger backend for the test and returns two of
// its key spaces: the publisher's (which holds its log) and the subscriber's
// (which holds its cursors). The backend closes after the test's other
// cleanups (subscribers, publishers) have run.
func spaces(t *testing.T) (pubSpace, subSpace store.Store) {
	t.Helper()
	return openSpaces(t, badgerstore.Config{InMemory: true})
}

// diskSpaces is spaces with the backend on disk.
func diskSpaces(t testing.TB) (pubSpace, subSpace store.Store) {
	t.Helper()
	return openSpaces(t, badgerstore.Config{Dir: t.TempDir(), GCInterval: -1})
}

func openSpaces(t testing.TB, cfg badgerstore.Config) (pubSpace, subSpace store.Store) {
	t.Helper()
	b, err := badgerstore.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close badger: %v", err)
		}
	})
	if pubSpace, err = b.Space("messages"); err != nil {
		t.Fatal(err)
	}
	if subSpace, err = b.Space("feed"); err != nil {
		t.Fatal(err)
	}
	return pubSpace, subSpace
}

// recorder is a Deliver func that checks the delivery contract as it goes:
// within one Subscriber (a "run") seqs are consecutive; across runs no seq is
// ever skipped (a run starts at most one past the highest seq seen). Seqs
// have gaps in general; the tests that use a recorder publish one event per
// transaction on one topic of an embedded store, whose commit counter then
// numbers them 1, 2, 3...
type recorder struct {
	want uint64 // distinct seqs expected; done closes when all are seen

	mu        sync.Mutex
	run       int            // the run deliver records into
	last      map[int]uint64 // run → its last seq
	max       uint64
	ids       map[string]int // event id → deliveries
	seqID     map[uint64]string
	total     int
	problems  []string
	done      chan struct{}
	closeOnce sync.Once
	hook      func(n int) // called with the run's delivery count after each delivery, under mu
	runCount  int
}

func newRecorder(want uint64) *recorder {
	return &recorder{want: want, last: map[int]uint64{}, ids: map[string]int{}, seqID: map[uint64]string{}, done: make(chan struct{})}
}

// newRun marks a restart: deliver's next delivery starts a new run.
func (r *recorder) newRun(hook func(n int)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.run++
	r.runCount = 0
	r.hook = hook
}

func (r *recorder) deliver(_ context.Context, ev events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recordLocked(r.run, ev.Seq, ev.ID)
	r.runCount++
	if r.hook != nil {
		r.hook(r.runCount)
	}
	return nil
}

// record notes a delivery made by run.
func (r *recorder) record(run int, seq uint64, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recordLocked(run, seq, id)
}

func (r *recorder) recordLocked(run int, seq uint64, id string) {
	last, started := r.last[run]
	switch {
	case started && seq != last+1:
		r.problems = append(r.problems, fmt.Sprintf("run %d: got seq %d after %d, want %d", run, seq, last, last+1))
	case !started && seq > r.max+1:
		r.problems = append(r.problems, fmt.Sprintf("run %d: started at seq %d, but only %d were delivered: skipped", run, seq, r.max))
	}
	if old, ok := r.seqID[seq]; ok && old != id {
		r.problems = append(r.problems, fmt.Sprintf("seq %d delivered with ids %s and %s", seq, old, id))
	}
	r.seqID[seq] = id
	r.last[run] = seq
	r.max = max(r.max, seq)
	r.ids[id]++
	r.total++
	if uint64(len(r.ids)) >= r.want {
		r.closeOnce.Do(func() { close(r.done) })
	}
}

// delivered returns the number of deliveries so far, duplicates included.
func (r *recorder) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// check reports the contract violations and returns the duplicate count.
func (r *recorder) check(t *testing.T) (duplicates int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		t.Error(p)
	}
	for seq := uint64(1); seq <= r.want; seq++ {
		if _, ok := r.seqID[seq]; !ok {
			t.Errorf("seq %d never delivered", seq)
		}
	}
	if got := uint64(len(r.ids)); got != r.want {
		t.Errorf("got %d distinct events, want %d", got, r.want)
	}
	return r.total - len(r.ids)
}

func (r *recorder) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(d):
		r.mu.Lock()
		n := len(r.ids)
		r.mu.Unlock()
		t.Fatalf("timed out after %v: %d of %d events delivered", d, n, r.want)
	}
}

// runSubscriber starts s.Run and returns a stop func that cancels it and
// waits for it, failing t if Run returned an error.
func runSubscriber(t *testing.T, s *events.Subscriber) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newPublisher(t *testing.T, name string, log store.Store, listen bool) *events.Publisher {
	t.Helper()
	cfg := events.PublisherConfig{Name: name, Log: log, Logger: quietLogger()}
	if listen {
		cfg.Listen = "tcp://127.0.0.1:0"
	}
	p, err := events.NewPublisher(cfg)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func body(i int) events.Event {
	return events.Event{ContentType: "text/plain", Body: fmt.Appendf(nil, "event %d", i)}
}

// waitPeers waits until p has n subscriber connections attached. Tests that
// close a Publisher call it first: mangos v3.4.2 has a data race between a
// listener's Close and a handshake still in progress on it
// (transport/conn.go: handshake writes conn.open, Close reads it), which
// the race detector reports when a Publisher closes while a subscriber is
// still connecting.
func waitPeers(t *testing.T, p *events.Publisher, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d subscriber connections to %s", n, p.Addr()), func() bool { return p.Peers() == n })
}
