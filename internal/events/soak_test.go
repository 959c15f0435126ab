package events_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
)

// soakEnv sets the length of TestRetentionSoak (a Go duration, e.g. 10m);
// without it the test runs for soakShort. soakBytesEnv sets the size of
// each event's text (200 bytes by default; from about 1 KiB on, Badger
// keeps values in its value log, which only its GC shrinks).
const (
	soakEnv      = "GRIDDLE_RETENTION_SOAK"
	soakBytesEnv = "GRIDDLE_RETENTION_SOAK_BYTES"
	soakShort    = 15 * time.Second
)

// TestRetentionSoak publishes steadily into a topic capped at 10,000
// events (3,000 in the short run), on Badger on disk with its default settings (synced commits,
// value-log GC), while a subscriber follows the topic and a Trimmer (with
// the subscriber's registered cursor, as the sidecar runs it) holds the
// cap. Every second it counts the log and measures the store's directory.
// It checks that the log, once full, stays between the cap and 10% over
// it; with GRIDDLE_RETENTION_SOAK=10m (the README's run) it also checks
// that disk use levels off: the largest size of the last third of the run
// is at most 20% over that of the second third.
func TestRetentionSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("a soak test")
	}
	d := soakShort
	long := false
	if v := os.Getenv(soakEnv); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration", soakEnv, v)
		}
		long = true
	}
	const writers = 4
	// The short run holds a smaller cap, trimmed more often, at half the
	// rate, so that it fills within the run and its 10% of slack (600 ms of
	// publishing, six trims) holds when CI's -race run of every package
	// keeps the machine busy: at 1,000/s a trim 310 ms late broke it.
	rate, capEvents, interval := 500, 3_000, 100*time.Millisecond // rate: events per second offered, in total
	if long {
		rate, capEvents, interval = 1_000, 10_000, 500*time.Millisecond
	}
	dir := t.TempDir()
	b, err := badgerstore.Open(t.Context(), badgerstore.Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close badger: %v", err)
		}
	})
	pubSpace, _ := b.Space("messages")
	subSpace, _ := b.Space("feed")
	p := newPublisher(t, "messages", pubSpace, true)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	var mu sync.Mutex
	delivered := 0
	sub, err := events.NewSubscriber(events.SubscriberConfig{
		Name: "feed", Cursors: subSpace, Logger: quietLogger(), BatchSize: 1000,
		Topics:     []events.TopicRef{{Publisher: "messages", Topic: "message.sent", Log: pubSpace}},
		Announcers: func() []string { return []string{p.Addr()} },
		Deliver: func(context.Context, events.Event) error {
			mu.Lock()
			delivered++
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, sub)
	waitPeers(t, p, 1)

	tr, err := events.NewTrimmer(events.TrimmerConfig{
		Publisher: "messages", Log: pubSpace, Logger: quietLogger(), Interval: interval,
		Topics: map[string]events.Retention{"message.sent": {MaxEvents: capEvents, MaxAge: 24 * time.Hour}},
		Cursors: events.RegisteredCursors(pubSpace, "messages", func(name string) (store.Store, error) {
			return b.Space(name)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = tr.Run(ctx) })

	var published, failed sync.Map // writer → count
	text := strings.Repeat("pancakes on Sunday? ", 10)
	if v := os.Getenv(soakBytesEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 64<<10 {
			t.Fatalf("%s=%q: want 1 to 65536", soakBytesEnv, v)
		}
		text = strings.Repeat("x", n)
	}
	for w := range writers {
		wg.Go(func() {
			tick := time.NewTicker(time.Second * writers / time.Duration(rate))
			defer tick.Stop()
			n, bad := 0, 0
			defer func() { published.Store(w, n); failed.Store(w, bad) }()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				ev := events.Event{ContentType: "application/json",
					Body: fmt.Appendf(nil, `{"id":"%d-%d","from":"1001","to":"42","text":%q}`, w, i, text)}
				if err := p.Publish(ctx, "message.sent", ev); err != nil {
					if ctx.Err() != nil {
						return
					}
					bad++
					continue
				}
				n++
			}
		})
	}

	type sample struct {
		at     time.Duration
		events int
		disk   int64
	}
	var samples []sample
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < d {
		<-tick.C
		samples = append(samples, sample{time.Since(start).Round(time.Second), countLog(t, pubSpace), dirSize(t, dir)})
	}
	cancel()
	wg.Wait()

	sum := func(m *sync.Map) (n int) {
		m.Range(func(_, v any) bool { n += v.(int); return true })
		return n
	}
	full, most := false, 0
	for i, s := range samples {
		if i%10 == 0 || i == len(samples)-1 {
			t.Logf("%6v  %6d events  %7.1f MiB on disk", s.at, s.events, float64(s.disk)/(1<<20))
		}
		if s.events >= capEvents {
			full = true
		}
		if full {
			most = max(most, s.events)
		}
		if full && (s.events > capEvents*11/10 || s.events < capEvents*9/10) {
			t.Errorf("at %v the log held %d events; want within 10%% of the cap of %d", s.at, s.events, capEvents)
		}
	}
	mu.Lock()
	t.Logf("published %d (%d failed), delivered %d, most events once full %d", sum(&published), sum(&failed), delivered, most)
	mu.Unlock()
	if !full {
		t.Errorf("the log never reached its cap of %d in %v", capEvents, d)
	}
	if long && len(samples) >= 9 {
		third := len(samples) / 3
		peak := func(ss []sample) (m int64) {
			for _, s := range ss {
				m = max(m, s.disk)
			}
			return m
		}
		mid, last := peak(samples[third:2*third]), peak(samples[2*third:])
		t.Logf("disk: largest %.1f MiB in the second third, %.1f MiB in the last", float64(mid)/(1<<20), float64(last)/(1<<20))
		if float64(last) > 1.2*float64(mid) {
			t.Errorf("disk use grew from %d to %d bytes between the second and the last third: it does not level off", mid, last)
		}
	}
}

func countLog(t *testing.T, st store.Store) int {
	t.Helper()
	begin, end := eventlog.LogRange("messages", "message.sent")
	n := 0
	for {
		var kvs []store.KeyValue
		if err := st.ReadTransact(context.Background(), func(tx store.ReadTx) error {
			var err error
			kvs, err = tx.Range(begin, end, store.RangeOptions{Limit: 5000})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		n += len(kvs)
		if len(kvs) < 5000 {
			return n
		}
		begin = append(kvs[len(kvs)-1].Key, 0)
	}
}

// dirSize is the disk space the files under dir take (their allocated
// blocks, as du counts them: Badger's files are preallocated).
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file Badger removed meanwhile
		}
		if info, err := d.Info(); err == nil && !d.IsDir() {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			} else {
				n += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
