package events

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/store"
)

// Retention bounds one topic's log. The zero value keeps everything.
type Retention struct {
	// MaxAge: events published longer ago than this are trimmed; 0: no
	// bound.
	MaxAge time.Duration
	// MaxEvents: the oldest events beyond this many are trimmed; 0: no
	// bound.
	MaxEvents int
	// Hard lets the trim remove events that a live subscriber has not
	// delivered yet; such a subscriber skips them and says so (its
	// TopicStatus.Skipped, and a warning in its log). Without Hard the
	// trim stops at the oldest cursor it is told of, so the log may grow
	// past the bounds while a subscriber lags.
	Hard bool
}

// TrimmerConfig configures a Trimmer.
type TrimmerConfig struct {
	// Publisher names the log's publisher; Log is the key space holding it
	// (PublisherConfig's Name and Log).
	Publisher string
	Log       store.Store
	// Topics are the bounds per topic; topics not listed are not trimmed.
	Topics map[string]Retention
	// Cursors returns the cursors of the live subscribers of topic (the
	// Pos each has delivered); the trim keeps every event after the
	// oldest, unless the topic's Retention is Hard. Nil: no subscriber is
	// known, and the bounds alone decide.
	Cursors func(ctx context.Context, topic string) ([]Pos, error)
	// Interval is how often Run trims; 0 means 10 s. Between two trims a
	// topic grows by what is published meanwhile: to hold a cap within
	// 10%, make an interval's events at most a tenth of it. A trim reads
	// the events published since the last one and those it removes, not
	// the whole log, so a short interval costs little.
	Interval time.Duration
	// Logger receives trim failures; nil: slog.Default().
	Logger *slog.Logger
	// OnTrim, when set, is called after each trim of a topic with the
	// events it removed and the events the log holds now, as the Trimmer
	// counts them. It must not block.
	OnTrim func(topic string, removed, left int)
}

// Validate reports whether c can be used; the error wraps ErrInvalid and
// names the field.
func (c TrimmerConfig) Validate() error {
	if !ValidName(c.Publisher) {
		return fmt.Errorf("%w: trimmer publisher %q", ErrInvalid, c.Publisher)
	}
	if c.Log == nil {
		return fmt.Errorf("%w: trimmer log store is required", ErrInvalid)
	}
	if c.Interval < 0 {
		return fmt.Errorf("%w: trimmer interval %v is negative", ErrInvalid, c.Interval)
	}
	for topic, r := range c.Topics {
		switch {
		case !ValidTopic(topic):
			return fmt.Errorf("%w: trimmer topic %q", ErrInvalid, topic)
		case r.MaxAge < 0:
			return fmt.Errorf("%w: topic %s: max age %v is negative", ErrInvalid, topic, r.MaxAge)
		case r.MaxEvents < 0:
			return fmt.Errorf("%w: topic %s: max events %d is negative", ErrInvalid, topic, r.MaxEvents)
		}
	}
	return nil
}

// Trimmer enforces Retention on a publisher's log, in the background (Run)
// or when asked (Trim). Trimming removes the oldest events in small
// transactions that never conflict with appends.
//
// A Trimmer counts each log once, then keeps the count by reading only
// what was appended since its last trim (and counts again every
// recountEvery trims): it assumes it is the only one removing events from
// its logs, so run one per publisher (the sidecar elects one instance).
type Trimmer struct {
	cfg TrimmerConfig

	mu     sync.Mutex // held by Trim; guards counts
	counts map[string]*logCount
}

// logCount is what a Trimmer knows of one log's length.
type logCount struct {
	upTo   Pos // the newest event counted
	n      int // events in the log up to upTo
	rounds int // trims since the log was last counted in full
}

// trimBatch is how many events one trimming transaction removes at most,
// and one read returns.
const trimBatch = 1000

// recountEvery is how many trims reuse a count before the log is counted
// in full again.
const recountEvery = 100

// NewTrimmer validates cfg.
func NewTrimmer(cfg TrimmerConfig) (*Trimmer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Trimmer{cfg: cfg, counts: make(map[string]*logCount)}, nil
}

// Run trims every Interval until ctx ends, then returns nil. Failures are
// logged and tried again at the next interval.
func (t *Trimmer) Run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	for {
		if _, err := t.Trim(ctx); err != nil && ctx.Err() == nil {
			t.cfg.Logger.Warn("events: trim failed", "publisher", t.cfg.Publisher, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Trim trims every topic once and returns how many events it removed.
func (t *Trimmer) Trim(ctx context.Context) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	total := 0
	for topic, r := range t.cfg.Topics {
		n, err := t.trimTopic(ctx, topic, r)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (t *Trimmer) trimTopic(ctx context.Context, topic string, r Retention) (int, error) {
	if r.MaxAge == 0 && r.MaxEvents == 0 {
		return 0, nil
	}
	c, err := t.count(ctx, topic)
	if err != nil {
		return 0, err
	}
	cut, err := t.cut(ctx, topic, r, c.n)
	if err != nil || cut == (Pos{}) {
		return 0, err
	}
	if !r.Hard && t.cfg.Cursors != nil {
		cursors, err := t.cfg.Cursors(ctx, topic)
		if err != nil {
			return 0, fmt.Errorf("events: trim %s/%s: cursors: %w", t.cfg.Publisher, topic, err)
		}
		for _, cur := range cursors {
			if bytes.Compare(cur[:], cut[:]) < 0 {
				cut = cur
			}
		}
	}
	total := 0
	defer func() {
		c.n = max(c.n-total, 0)
		if t.cfg.OnTrim != nil {
			t.cfg.OnTrim(topic, total, c.n)
		}
	}()
	for {
		var n int
		err := t.cfg.Log.Transact(ctx, func(tx store.Tx) error {
			var err error
			n, err = eventlog.TrimTx(tx, t.cfg.Publisher, topic, cut, trimBatch)
			return err
		})
		if err != nil {
			delete(t.counts, topic) // how much went is not known: count again
			return total, err
		}
		total += n
		if n < trimBatch {
			return total, nil
		}
	}
}

// count brings the count of topic's log up to date: by reading what was
// appended since the last count, or the whole log every recountEvery trims.
func (t *Trimmer) count(ctx context.Context, topic string) (*logCount, error) {
	c := t.counts[topic]
	if c == nil || c.rounds >= recountEvery {
		c = &logCount{}
		t.counts[topic] = c
	}
	c.rounds++
	for {
		evs, err := t.scan(ctx, topic, c.upTo, trimBatch)
		if err != nil {
			delete(t.counts, topic)
			return nil, err
		}
		c.n += len(evs)
		if len(evs) > 0 {
			c.upTo = evs[len(evs)-1].Pos
		}
		if len(evs) < trimBatch {
			return c, nil
		}
	}
}

// scan reads up to limit events of topic after the position after.
func (t *Trimmer) scan(ctx context.Context, topic string, after Pos, limit int) ([]Event, error) {
	var evs []Event
	err := t.cfg.Log.ReadTransact(ctx, func(tx store.ReadTx) error {
		var err error
		evs, err = eventlog.ScanAfterTx(tx, t.cfg.Publisher, topic, after, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("events: trim %s/%s: %w", t.cfg.Publisher, topic, err)
	}
	return evs, nil
}

// cut is the position up to which the bounds let topic's log go (the zero
// Pos: nothing), for a log of n events.
func (t *Trimmer) cut(ctx context.Context, topic string, r Retention, n int) (Pos, error) {
	var cut Pos
	if r.MaxEvents > 0 && n > r.MaxEvents {
		// The oldest n - MaxEvents go.
		for excess, after := n-r.MaxEvents, (Pos{}); excess > 0; {
			evs, err := t.scan(ctx, topic, after, min(excess, trimBatch))
			if err != nil {
				return Pos{}, err
			}
			if len(evs) == 0 {
				break
			}
			excess -= len(evs)
			after = evs[len(evs)-1].Pos
			cut = after
		}
	}
	if r.MaxAge > 0 {
		old := time.Now().Add(-r.MaxAge)
		after := cut // everything up to cut goes anyway
		for batch := 16; ; batch = trimBatch {
			evs, err := t.scan(ctx, topic, after, batch)
			if err != nil {
				return Pos{}, err
			}
			young := false
			for _, ev := range evs {
				if !ev.Time.Before(old) {
					young = true
					break
				}
				cut = ev.Pos
			}
			if young || len(evs) < batch {
				break
			}
			after = evs[len(evs)-1].Pos
		}
	}
	return cut, nil
}

// RegisteredCursors returns a TrimmerConfig.Cursors that finds the
// subscribers of a topic where they register (eventlog.RegisterTx: in the
// publisher's log store, log) and reads each one's cursor from the store
// cursors returns for its name. A registered subscriber counts whether it
// runs now or not, so one that was stopped or restarted loses nothing; a
// subscriber gone for good holds the log back until it is unregistered
// (eventlog.UnregisterTx) or the topic's Retention is Hard.
func RegisteredCursors(log store.Store, publisher string, cursors func(subscriber string) (store.Store, error)) func(ctx context.Context, topic string) ([]Pos, error) {
	return func(ctx context.Context, topic string) ([]Pos, error) {
		var names []string
		err := log.ReadTransact(ctx, func(tx store.ReadTx) error {
			var err error
			names, err = eventlog.SubscribersTx(tx, publisher, topic)
			return err
		})
		if err != nil {
			return nil, err
		}
		out := make([]Pos, 0, len(names))
		for _, name := range names {
			st, err := cursors(name)
			if err != nil {
				return nil, fmt.Errorf("subscriber %s: %w", name, err)
			}
			var p Pos
			err = st.ReadTransact(ctx, func(tx store.ReadTx) error {
				var err error
				p, err = CursorTx(tx, name, publisher, topic)
				return err
			})
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	}
}
