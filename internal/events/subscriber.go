package events

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/sub"

	"github.com/griddle-mesh/griddle/internal/backoff"
	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/store"
)

// Defaults of SubscriberConfig's zero fields.
const (
	DefaultPollInterval = time.Second
	DefaultBatchSize    = 100
	DefaultRetryMin     = 100 * time.Millisecond
	DefaultRetryMax     = 10 * time.Second
	// MaxBatchSize bounds BatchSize so that one read stays far below the
	// store's transaction size and time limits.
	MaxBatchSize = 10_000
)

// stopSaveTimeout bounds the cursor write a Subscriber makes when Run's ctx
// ends, so that a clean stop does not redeliver what was delivered.
const stopSaveTimeout = 2 * time.Second

// TopicRef names one log a Subscriber follows.
type TopicRef struct {
	Publisher string      // the publishing service
	Topic     string      // the topic in Publisher's log
	Log       store.Store // the key space holding Publisher's log (see PublisherConfig.Log)
}

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	// Name is the subscribing service; it names the cursors. At most one
	// Subscriber per Name and Cursors store should run at a time: two would
	// both deliver every event.
	Name string
	// Cursors is the key space holding the subscriber's cursors (under
	// KeyPrefix): the subscribing service's own space, or a shared events
	// space.
	Cursors store.Store
	// Topics are the logs to follow; at least one, no duplicates.
	Topics []TopicRef
	// Announcers returns the PUB addresses of the publishers to listen to
	// for announcements; it is called when Run starts and at every poll,
	// and dialers are added and closed to match. Nil: poll only.
	Announcers func() []string
	// Deliver hands one event to the subscribing service (the sidecar posts
	// it to the handler's declared path). It is called from one goroutine
	// per topic, in Seq order within a topic; different topics are delivered
	// concurrently. A nil return acknowledges the event. An error is retried
	// with back-off, forever, and the topic waits: an event is never
	// skipped, so a poison event blocks its topic (see TopicStatus.Blocked)
	// until Deliver accepts it. ctx ends when Run's ctx does. Deliver must
	// tolerate duplicates: see Subscriber.
	Deliver func(ctx context.Context, ev Event) error
	// PollInterval is how often every topic's log is read even without an
	// announcement (what a lost announcement costs in latency). 0:
	// DefaultPollInterval.
	PollInterval time.Duration
	// BatchSize is the most events read per log read, and the most events
	// delivered again after a crash. 0: DefaultBatchSize.
	BatchSize int
	// RetryMin and RetryMax bound the back-off between failed deliveries
	// and failed store operations. 0: DefaultRetryMin, DefaultRetryMax.
	RetryMin, RetryMax time.Duration
	// Logger receives delivery failures and recoveries. Nil: slog.Default().
	Logger *slog.Logger
	// OnSkip, when set, is called when events of ref that the subscriber
	// had not delivered were trimmed away (a Retention with Hard set) and
	// it goes on after them: from is the Pos it had delivered, to the Pos
	// the log was trimmed up to. It runs on the topic's goroutine and must
	// not block. The skip is also logged, counted in TopicStatus.Skipped
	// and marked on the next event delivered (Event.SkippedTo).
	OnSkip func(ref TopicRef, from, to Pos)
	// TLS is the client side of mutual TLS toward tls+tcp:// announcers
	// (nil: those are not dialled, and new events are found by polling).
	TLS *tls.Config
}

// Validate reports whether c can be used; the error wraps ErrInvalid and
// names the field. It does no I/O.
func (c SubscriberConfig) Validate() error {
	if !ValidName(c.Name) {
		return fmt.Errorf("%w: subscriber name %q: want 1-63 of a-z 0-9 - . not starting with - or .", ErrInvalid, c.Name)
	}
	if c.Cursors == nil {
		return fmt.Errorf("%w: subscriber cursors store is required", ErrInvalid)
	}
	if c.Deliver == nil {
		return fmt.Errorf("%w: subscriber deliver func is required", ErrInvalid)
	}
	if len(c.Topics) == 0 {
		return fmt.Errorf("%w: subscriber topics: at least one is required", ErrInvalid)
	}
	seen := make(map[string]bool, len(c.Topics))
	for i, t := range c.Topics {
		if err := checkNames(t.Publisher, t.Topic); err != nil {
			return fmt.Errorf("subscriber topics[%d]: %w", i, err)
		}
		if t.Log == nil {
			return fmt.Errorf("%w: subscriber topics[%d] (%s/%s): log store is required", ErrInvalid, i, t.Publisher, t.Topic)
		}
		k := t.Publisher + "/" + t.Topic
		if seen[k] {
			return fmt.Errorf("%w: subscriber topics[%d]: %s listed twice", ErrInvalid, i, k)
		}
		seen[k] = true
	}
	switch {
	case c.PollInterval < 0:
		return fmt.Errorf("%w: subscriber poll interval %v is negative", ErrInvalid, c.PollInterval)
	case c.BatchSize < 0 || c.BatchSize > MaxBatchSize:
		return fmt.Errorf("%w: subscriber batch size %d: want 0-%d", ErrInvalid, c.BatchSize, MaxBatchSize)
	case c.RetryMin < 0 || c.RetryMax < 0:
		return fmt.Errorf("%w: subscriber retry bounds must not be negative", ErrInvalid)
	case c.RetryMin > 0 && c.RetryMax > 0 && c.RetryMin > c.RetryMax:
		return fmt.Errorf("%w: subscriber retry min %v exceeds retry max %v", ErrInvalid, c.RetryMin, c.RetryMax)
	}
	return nil
}

// Subscriber delivers the events of its topics, in order per topic, at
// least once, reading each log from a durable cursor.
//
// Delivery: Run reads each log after its cursor in batches of BatchSize,
// calls Deliver for each event in order, and writes the cursor once per
// batch (and before retrying a failed delivery, and when Run's ctx ends).
// So after a crash at most BatchSize events per topic are delivered again;
// after a clean stop none are, unless the final cursor write fails.
// Announcements only wake the reader; the log is the only source of events.
//
// Each topic is independent: a topic blocked on a failing Deliver does not
// delay the others.
type Subscriber struct {
	cfg     SubscriberConfig
	logger  *slog.Logger
	topics  []*topicRun
	byHint  map[string]*topicRun // hintPrefix → topic; read-only after NewSubscriber
	running atomic.Bool
}

// NewSubscriber validates cfg and fills in its defaults. It does no I/O.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = min(DefaultRetryMin, max(cfg.RetryMax, time.Millisecond))
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryMin)
	}
	s := &Subscriber{cfg: cfg, logger: cfg.Logger, byHint: make(map[string]*topicRun, len(cfg.Topics))}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	s.cfg.Topics = slices.Clone(cfg.Topics)
	for _, ref := range s.cfg.Topics {
		t := &topicRun{
			s:    s,
			ref:  ref,
			key:  cursorKey(cfg.Name, ref.Publisher, ref.Topic),
			wake: make(chan struct{}, 1),
			st:   TopicStatus{Publisher: ref.Publisher, Topic: ref.Topic},
		}
		s.topics = append(s.topics, t)
		s.byHint[string(hintPrefix(ref.Publisher, ref.Topic))] = t
	}
	return s, nil
}

// Run delivers events until ctx ends, then returns nil once every goroutine
// it started has stopped and its socket is closed. It returns an error
// without delivering anything if the SUB socket cannot be opened, and
// ErrRunning if another Run of s is in progress. Store and delivery errors
// do not end Run: they are retried, and reported in Status.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	var sock mangos.Socket
	if s.cfg.Announcers != nil {
		var err error
		if sock, err = s.openSub(); err != nil {
			return err
		}
		defer func() { _ = sock.Close() }() // ends receive; runs before cancel and wg.Wait
		wg.Go(func() { s.receive(sock) })
	}
	for _, t := range s.topics {
		wg.Go(func() { t.run(ctx) })
	}

	dialers := make(map[string]mangos.Dialer)
	failed := make(map[string]bool) // addresses whose dialer could not be made, logged once
	s.syncDialers(sock, dialers, failed)
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s.syncDialers(sock, dialers, failed)
			s.wakeAll()
		}
	}
}

func (s *Subscriber) openSub() (mangos.Socket, error) {
	sock, err := sub.NewSocket()
	if err != nil {
		return nil, fmt.Errorf("events: subscriber %s: new sub socket: %w", s.cfg.Name, err)
	}
	opts := []struct {
		name  string
		value any
	}{
		{mangos.OptionDialAsynch, true},
		{mangos.OptionReconnectTime, 100 * time.Millisecond},
		{mangos.OptionMaxReconnectTime, 2 * time.Second},
		{mangos.OptionReadQLen, 1024},
	}
	for _, o := range opts {
		if err := sock.SetOption(o.name, o.value); err != nil {
			_ = sock.Close()
			return nil, fmt.Errorf("events: subscriber %s: set %s: %w", s.cfg.Name, o.name, err)
		}
	}
	for hp := range s.byHint {
		if err := sock.SetOption(mangos.OptionSubscribe, []byte(hp)); err != nil {
			_ = sock.Close()
			return nil, fmt.Errorf("events: subscriber %s: subscribe: %w", s.cfg.Name, err)
		}
	}
	// A new connection may follow missed announcements: read every log.
	sock.SetPipeEventHook(func(ev mangos.PipeEvent, _ mangos.Pipe) {
		if ev == mangos.PipeEventAttached {
			s.wakeAll()
		}
	})
	return sock, nil
}

// syncDialers makes the socket's dialers match Announcers(). Dialers reconnect
// on their own; a closed socket closes them all.
func (s *Subscriber) syncDialers(sock mangos.Socket, dialers map[string]mangos.Dialer, failed map[string]bool) {
	if sock == nil {
		return
	}
	want := make(map[string]bool)
	for _, addr := range s.cfg.Announcers() {
		want[addr] = true
		if dialers[addr] != nil {
			continue
		}
		d, err := sock.NewDialer(addr, tlsOption(s.cfg.TLS))
		if err == nil {
			if err = d.Dial(); err != nil {
				_ = d.Close()
			}
		}
		if err != nil {
			if !failed[addr] {
				failed[addr] = true
				s.logger.Warn("events: cannot dial announcer; polling only", "subscriber", s.cfg.Name, "address", addr, "err", err)
			}
			continue
		}
		delete(failed, addr)
		dialers[addr] = d
	}
	for addr, d := range dialers {
		if !want[addr] {
			_ = d.Close()
			delete(dialers, addr)
		}
	}
	for addr := range failed {
		if !want[addr] {
			delete(failed, addr)
		}
	}
}

// receive turns announcements into wake-ups until sock is closed.
func (s *Subscriber) receive(sock mangos.Socket) {
	for {
		b, err := sock.Recv()
		if err != nil {
			return // closed by Run
		}
		prefix, seq, ok := parseHint(b)
		if t := s.byHint[prefix]; ok && t != nil {
			t.noteHead(seq)
			t.poke()
		}
	}
}

func (s *Subscriber) wakeAll() {
	for _, t := range s.topics {
		t.poke()
	}
}

// TopicStatus is the delivery state of one topic.
type TopicStatus struct {
	Publisher, Topic string
	// Cursor is the Seq of the last event delivered (acknowledged by
	// Deliver).
	Cursor uint64
	// Head is the highest Seq known to exist: from the last log read or
	// announcement.
	Head uint64
	// Lag is Head - Cursor: 0 when every event known is delivered. Seqs
	// have gaps, so it is an upper bound of the events not yet delivered,
	// not their number.
	Lag uint64
	// Delivered counts acknowledged deliveries since the Subscriber was made.
	Delivered uint64
	// Failures counts failed Deliver calls (each was retried).
	Failures uint64
	// Skipped counts the times events this subscriber had not delivered
	// were trimmed away (a Retention with Hard set, see Trimmer) and it
	// went on after them.
	Skipped uint64
	// Blocked is true while the event after Cursor is failing: the topic waits for it.
	Blocked bool
	// LastError is the last delivery or store error, "" if none; it stays
	// after recovery, with its time.
	LastError   string
	LastErrorAt time.Time
}

// SubscriberStatus is a snapshot of a Subscriber.
type SubscriberStatus struct {
	Name    string
	Running bool
	Topics  []TopicStatus // in SubscriberConfig.Topics order
}

// Status returns a snapshot of every topic's delivery state. Safe to call at
// any time, from any goroutine.
func (s *Subscriber) Status() SubscriberStatus {
	st := SubscriberStatus{Name: s.cfg.Name, Running: s.running.Load(), Topics: make([]TopicStatus, 0, len(s.topics))}
	for _, t := range s.topics {
		t.mu.Lock()
		ts := t.st
		t.mu.Unlock()
		if ts.Head > ts.Cursor {
			ts.Lag = ts.Head - ts.Cursor
		}
		st.Topics = append(st.Topics, ts)
	}
	return st
}

// topicRun delivers one topic. Its run goroutine is owned by Subscriber.Run.
type topicRun struct {
	s    *Subscriber
	ref  TopicRef
	key  []byte        // cursor key
	wake chan struct{} // capacity 1: a pending wake-up

	mu sync.Mutex // guards st
	st TopicStatus
}

func (t *topicRun) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *topicRun) noteHead(seq uint64) {
	t.mu.Lock()
	t.st.Head = max(t.st.Head, seq)
	t.mu.Unlock()
}

func (t *topicRun) noteError(err error) {
	t.mu.Lock()
	t.st.LastError, t.st.LastErrorAt = err.Error(), time.Now()
	t.mu.Unlock()
}

// run delivers the topic until ctx ends.
func (t *topicRun) run(ctx context.Context) {
	cfg := &t.s.cfg
	b := backoff.New(cfg.RetryMin, cfg.RetryMax)
	var cursor Pos
	for {
		err := t.register(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		t.noteError(err)
		if !b.Wait(ctx) {
			return
		}
	}
	for {
		c, err := t.loadCursor(ctx)
		if err == nil {
			cursor = c
			break
		}
		if ctx.Err() != nil {
			return
		}
		t.noteError(err)
		if !b.Wait(ctx) {
			return
		}
	}
	b.Reset()
	t.mu.Lock()
	t.st.Cursor = cursor.Seq()
	t.mu.Unlock()

	saved := cursor
	save := func(ctx context.Context) error {
		if cursor == saved {
			return nil
		}
		if err := t.saveCursor(ctx, cursor); err != nil {
			return err
		}
		saved = cursor
		return nil
	}
	defer func() {
		// A clean stop keeps its progress, so a restart redelivers nothing.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopSaveTimeout)
		defer cancel()
		if err := save(sctx); err != nil {
			t.s.logger.Warn("events: cursor not saved at stop; events will be delivered again",
				"subscriber", cfg.Name, "publisher", t.ref.Publisher, "topic", t.ref.Topic,
				"cursor", cursor, "saved", saved, "err", err)
		}
	}()

	var skippedTo uint64 // marked on the next event delivered
	for {
		evs, head, trimmed, err := t.read(ctx, cursor)
		if err == nil && cursor != (Pos{}) && bytes.Compare(cursor[:], trimmed[:]) < 0 {
			t.s.logger.Warn("events: events not yet delivered were trimmed away; going on after them",
				"subscriber", cfg.Name, "publisher", t.ref.Publisher, "topic", t.ref.Topic,
				"cursor", cursor.Seq(), "trimmed_to", trimmed.Seq())
			if cfg.OnSkip != nil {
				cfg.OnSkip(t.ref, cursor, trimmed)
			}
			cursor, skippedTo = trimmed, trimmed.Seq()
			t.mu.Lock()
			t.st.Cursor = cursor.Seq()
			t.st.Skipped++
			t.mu.Unlock()
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			t.noteError(err)
			if !b.Wait(ctx) {
				return
			}
			continue
		}
		b.Reset()
		t.noteHead(head)
		for _, ev := range evs {
			ev.SkippedTo, skippedTo = skippedTo, 0
			if ctx.Err() != nil || !t.deliver(ctx, ev, save) {
				return
			}
			cursor = ev.Pos
			t.mu.Lock()
			t.st.Cursor = cursor.Seq()
			t.st.Delivered++
			t.mu.Unlock()
		}
		if err := save(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			t.noteError(err) // kept in memory; the next save writes it
		}
		if len(evs) == cfg.BatchSize {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		}
	}
}

// deliver calls Deliver until it accepts ev, and reports false if ctx ended
// first. Before the first retry it saves the cursor, so that progress made
// before a poison event survives a restart.
func (t *topicRun) deliver(ctx context.Context, ev Event, save func(context.Context) error) bool {
	cfg := &t.s.cfg
	var b *backoff.Backoff
	for attempt := 1; ; attempt++ {
		err := cfg.Deliver(ctx, ev)
		if err == nil {
			if attempt > 1 {
				t.mu.Lock()
				t.st.Blocked = false
				t.mu.Unlock()
				t.s.logger.Info("events: delivery recovered", "subscriber", cfg.Name,
					"publisher", ev.Publisher, "topic", ev.Topic, "seq", ev.Seq, "attempts", attempt)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		t.mu.Lock()
		t.st.Failures++
		t.st.Blocked = true
		t.st.LastError, t.st.LastErrorAt = err.Error(), time.Now()
		t.mu.Unlock()
		if attempt == 1 {
			t.s.logger.Warn("events: delivery failed; retrying, topic blocked", "subscriber", cfg.Name,
				"publisher", ev.Publisher, "topic", ev.Topic, "seq", ev.Seq, "id", ev.ID, "err", err)
			if err := save(ctx); err != nil && ctx.Err() == nil {
				t.noteError(err)
			}
			b = backoff.New(cfg.RetryMin, cfg.RetryMax)
		}
		if !b.Wait(ctx) {
			return false
		}
	}
}

// read returns the next batch after cursor and the log's head, from one
// snapshot of the log.
func (t *topicRun) read(ctx context.Context, cursor Pos) (evs []Event, head uint64, trimmed Pos, err error) {
	err = t.ref.Log.ReadTransact(ctx, func(tx store.ReadTx) error {
		h, err := HeadTx(tx, t.ref.Publisher, t.ref.Topic)
		if err != nil {
			return err
		}
		head = h.Seq()
		if trimmed, err = eventlog.TrimmedTx(tx, t.ref.Publisher, t.ref.Topic); err != nil {
			return err
		}
		evs, err = ScanAfterTx(tx, t.ref.Publisher, t.ref.Topic, cursor, t.s.cfg.BatchSize)
		return err
	})
	if err != nil {
		return nil, 0, Pos{}, fmt.Errorf("events: subscriber %s: read %s/%s: %w", t.s.cfg.Name, t.ref.Publisher, t.ref.Topic, err)
	}
	return evs, head, trimmed, nil
}

// register records the subscriber on its log, so that trims keep what it
// has not delivered (eventlog.RegisterTx).
func (t *topicRun) register(ctx context.Context) error {
	err := t.ref.Log.Transact(ctx, func(tx store.Tx) error {
		return eventlog.RegisterTx(tx, t.s.cfg.Name, t.ref.Publisher, t.ref.Topic)
	})
	if err != nil {
		return fmt.Errorf("events: subscriber %s: register on %s/%s: %w", t.s.cfg.Name, t.ref.Publisher, t.ref.Topic, err)
	}
	return nil
}

func (t *topicRun) loadCursor(ctx context.Context) (Pos, error) {
	var cursor Pos
	err := t.s.cfg.Cursors.ReadTransact(ctx, func(tx store.ReadTx) error {
		v, err := tx.Get(t.key)
		if err != nil {
			return err
		}
		cursor, err = decodePos(v)
		return err
	})
	if err != nil {
		return Pos{}, fmt.Errorf("events: subscriber %s: load cursor %s/%s: %w", t.s.cfg.Name, t.ref.Publisher, t.ref.Topic, err)
	}
	return cursor, nil
}

// saveCursor stores cursor unless the stored one is already further (cursors
// never move back).
func (t *topicRun) saveCursor(ctx context.Context, cursor Pos) error {
	err := t.s.cfg.Cursors.Transact(ctx, func(tx store.Tx) error {
		v, err := tx.Get(t.key)
		if err != nil {
			return err
		}
		old, err := decodePos(v)
		if err != nil {
			return err
		}
		if bytes.Compare(old[:], cursor[:]) >= 0 {
			return nil
		}
		return tx.Set(t.key, encodePos(cursor))
	})
	if err != nil {
		return fmt.Errorf("events: subscriber %s: save cursor %s/%s: %w", t.s.cfg.Name, t.ref.Publisher, t.ref.Topic, err)
	}
	return nil
}
