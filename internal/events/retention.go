package events

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
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
	// 10%, make an interval's events at most a tenth of it.
	Interval time.Duration
	// Logger receives trim failures; nil: slog.Default().
	Logger *slog.Logger
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
type Trimmer struct {
	cfg TrimmerConfig
}

// trimBatch is how many events one trimming transaction removes at most.
const trimBatch = 1000

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
	return &Trimmer{cfg: cfg}, nil
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
	cut, err := t.cut(ctx, topic, r)
	if err != nil || cut == (Pos{}) {
		return 0, err
	}
	if !r.Hard && t.cfg.Cursors != nil {
		cursors, err := t.cfg.Cursors(ctx, topic)
		if err != nil {
			return 0, fmt.Errorf("events: trim %s/%s: cursors: %w", t.cfg.Publisher, topic, err)
		}
		for _, c := range cursors {
			if bytes.Compare(c[:], cut[:]) < 0 {
				cut = c
			}
		}
	}
	total := 0
	for {
		var n int
		err := t.cfg.Log.Transact(ctx, func(tx store.Tx) error {
			var err error
			n, err = eventlog.TrimTx(tx, t.cfg.Publisher, topic, cut, trimBatch)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < trimBatch {
			return total, nil
		}
	}
}

// cut is the position up to which the bounds let topic's log go (the zero
// Pos: nothing).
func (t *Trimmer) cut(ctx context.Context, topic string, r Retention) (Pos, error) {
	begin, end := eventlog.LogRange(t.cfg.Publisher, topic)
	var cut Pos
	later := func(p Pos) {
		if bytes.Compare(p[:], cut[:]) > 0 {
			cut = p
		}
	}
	if r.MaxEvents > 0 {
		// The newest MaxEvents+1 entries: the oldest of them goes.
		var kvs []store.KeyValue
		err := t.cfg.Log.ReadTransact(ctx, func(tx store.ReadTx) error {
			var err error
			kvs, err = tx.Range(begin, end, store.RangeOptions{Limit: r.MaxEvents + 1, Reverse: true})
			return err
		})
		if err != nil {
			return Pos{}, fmt.Errorf("events: trim %s/%s: %w", t.cfg.Publisher, topic, err)
		}
		if len(kvs) > r.MaxEvents {
			p, err := eventlog.PosOfKey(t.cfg.Publisher, topic, kvs[len(kvs)-1].Key)
			if err != nil {
				return Pos{}, err
			}
			later(p)
		}
	}
	if r.MaxAge > 0 {
		old := time.Now().Add(-r.MaxAge)
		after := Pos{}
		for {
			var evs []Event
			err := t.cfg.Log.ReadTransact(ctx, func(tx store.ReadTx) error {
				var err error
				evs, err = eventlog.ScanAfterTx(tx, t.cfg.Publisher, topic, after, trimBatch)
				return err
			})
			if err != nil {
				return Pos{}, fmt.Errorf("events: trim %s/%s: %w", t.cfg.Publisher, topic, err)
			}
			young := false
			for _, ev := range evs {
				if !ev.Time.Before(old) {
					young = true
					break
				}
				later(ev.Pos)
			}
			if young || len(evs) < trimBatch {
				break
			}
			after = evs[len(evs)-1].Pos
		}
	}
	return cut, nil
}
