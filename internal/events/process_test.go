package events_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// Environment of the subscriber child process.
const (
	childEnv        = "GRIDDLE_EVENTS_TEST_CHILD" // set: run as the child
	childStoreEnv   = "GRIDDLE_EVENTS_TEST_STORE" // storehttp base URL
	childPubEnv     = "GRIDDLE_EVENTS_TEST_PUB"   // announcer address
	childDeliverEnv = "GRIDDLE_EVENTS_TEST_DELIVER"
	childRunEnv     = "GRIDDLE_EVENTS_TEST_RUN"
)

// subscriberChild is the subscriber process: it reaches the store over
// storehttp and delivers each event as an HTTP POST (X-Run, X-Seq, X-Id
// headers) until it is killed or its stdin closes.
func subscriberChild() int {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // the parent gone (stdin closed): stop
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	hc := &http.Client{Timeout: 10 * time.Second}
	backend := storehttp.NewClient(hc, os.Getenv(childStoreEnv))
	logSpace, err := backend.Space("messages")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cursors, err := backend.Space("feed")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	deliverURL, run := os.Getenv(childDeliverEnv), os.Getenv(childRunEnv)
	s, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: cursors,
		Topics:     []events.TopicRef{{Publisher: "messages", Topic: "message.sent", Log: logSpace}},
		Announcers: func() []string { return []string{os.Getenv(childPubEnv)} },
		Deliver: func(ctx context.Context, ev events.Event) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, deliverURL, nil)
			if err != nil {
				return err
			}
			req.Header.Set("X-Run", run)
			req.Header.Set("X-Seq", strconv.FormatUint(ev.Seq, 10))
			req.Header.Set("X-Id", ev.ID)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				return fmt.Errorf("deliver: status %d", resp.StatusCode)
			}
			return nil
		},
		PollInterval: 200 * time.Millisecond,
		Logger:       quietLogger(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// The test with a real subscriber process killed with SIGKILL twice:
// the store is shared over storehttp, events arrive as HTTP POSTs.
func TestSubscriberProcessKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts subscriber processes")
	}
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	srv := storehttp.NewServer(b)
	storeTS := httptest.NewServer(srv)
	t.Cleanup(func() { storeTS.Close(); _ = srv.Close() })
	pubSpace, err := b.Space("messages")
	if err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, "messages", pubSpace, true)

	const total = 10_000
	rec := newRecorder(total)
	deliverTS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		run, err1 := strconv.Atoi(r.Header.Get("X-Run"))
		seq, err2 := strconv.ParseUint(r.Header.Get("X-Seq"), 10, 64)
		if err1 != nil || err2 != nil || r.Header.Get("X-Id") == "" {
			http.Error(w, "bad delivery", http.StatusBadRequest)
			return
		}
		rec.record(run, seq, r.Header.Get("X-Id"))
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(deliverTS.Close)

	start := func(run int) (kill func()) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", childStoreEnv+"="+storeTS.URL, childPubEnv+"="+p.Addr(),
			childDeliverEnv+"="+deliverTS.URL, childRunEnv+"="+strconv.Itoa(run))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logged := make(chan struct{})
		go func() {
			defer close(logged)
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				t.Logf("child %d: %s", run, sc.Text())
			}
		}()
		var once sync.Once
		kill = func() {
			once.Do(func() {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				<-logged       // EOF once the process is gone; Wait must follow the reads
				_ = cmd.Wait() // "signal: killed"
				_ = stdin.Close()
			})
		}
		t.Cleanup(kill)
		return kill
	}

	gate1, gate2 := make(chan struct{}), make(chan struct{})
	pubDone := make(chan struct{})
	// 16 publishers at once on the one topic; they pause at 4,000 and
	// 7,000 events published until the gates open.
	const publishers = 16
	var published atomic.Int64
	var pubs sync.WaitGroup
	for w := range publishers {
		pubs.Go(func() {
			for i := w; i < total; i += publishers {
				switch n := published.Load(); {
				case n >= 7000:
					<-gate2
					fallthrough
				case n >= 4000:
					<-gate1
				}
				if err := p.Publish(context.Background(), "message.sent", body(i)); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				published.Add(1)
			}
		})
	}
	go func() {
		pubs.Wait()
		close(pubDone)
	}()
	open := func(g chan struct{}) {
		select {
		case <-g:
		default:
			close(g)
		}
	}
	defer func() { open(gate1); open(gate2); <-pubDone }()

	// Process 1: SIGKILL after a random number of deliveries, while it is
	// delivering (mid-batch: its cursor lags behind).
	kill1 := start(1)
	n1 := 500 + rand.IntN(3000)
	waitFor(t, "process 1 delivering", func() bool { return rec.delivered() >= n1 })
	kill1()
	t.Logf("process 1 killed after %d deliveries; %d published", rec.delivered(), published.Load())
	open(gate1)

	// Process 2: SIGKILL at a random instant once it delivers.
	before := rec.delivered()
	kill2 := start(2)
	waitFor(t, "process 2 delivering", func() bool { return rec.delivered() > before })
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	kill2()
	t.Logf("process 2 killed after %d deliveries in all; %d published", rec.delivered(), published.Load())
	open(gate2)

	// Process 3: to the end.
	kill3 := start(3)
	<-pubDone
	rec.wait(t, 120*time.Second)
	kill3()
	dups := rec.check(t)
	if n := p.Retries(); n != 0 {
		t.Errorf("publishers' transactions retried %d times, want 0: appends must not conflict", n)
	}
	t.Logf("10,000 events from %d publishers through 3 subscriber processes (2 SIGKILLed): %d duplicates, %d retries", publishers, dups, p.Retries())
}
