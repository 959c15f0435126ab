package eventlog

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/griddle-mesh/griddle/internal/store"
)

// KeyPrefix starts every key this package writes. It is reserved: a
// service's own keys must not start with it, and a service that clears its
// whole key space must stop below it (ClearRange(nil, []byte(KeyPrefix)))
// or it wipes its event log and its subscription cursors.
//
// Layout below the prefix (names never contain '/', see ValidTopic):
//
//	l/<publisher>/<topic>/<stamp, store.StampBytes> → one encoded Event
//	t/<publisher>/<topic>                           → the Pos of the last event trimmed away
//	c/<subscriber>/<publisher>/<topic>              → cursor: the Pos last delivered
//	r/<publisher>/<topic>/<subscriber>              → "": subscriber follows this log
//
// Cursors live in the subscriber's key space, registrations (r/) in the
// publisher's, beside the log: whoever trims a log finds there whose
// cursors it must respect.
//
// A log entry's key is completed by the store when the appending
// transaction commits (store.Tx.SetStamped), so appends read nothing and
// concurrent publishers never conflict on the log.
const KeyPrefix = "\xffevents/"

// MaxTopicLen is the longest topic name accepted.
const MaxTopicLen = 128

// Pos is an event's position in its log: the stamp the store gave its key
// at commit. Positions of one log only grow in commit order; the zero Pos
// is before every event.
type Pos [store.StampBytes]byte

// Seq is the sequence number of an event at p: bytes 2 to 9 of the stamp,
// big-endian (the embedded store's commit counter; FoundationDB's commit
// version, less its top 2 bytes, and order in its batch). Seqs grow with
// commits, with gaps; events that one transaction appends to one topic
// share theirs, and are told apart by Pos.
func (p Pos) Seq() uint64 { return binary.BigEndian.Uint64(p[2:10]) }

// String is p in hexadecimal.
func (p Pos) String() string { return hex.EncodeToString(p[:]) }

// Event is one published event. The zero Time and empty ID are filled in by
// AppendTx; Publisher, Topic, Pos and Seq are set when the log is read and
// ignored on input.
type Event struct {
	Publisher   string    // the service whose log holds the event
	Topic       string    // the topic within Publisher's log
	Pos         Pos       // position in (Publisher, Topic)
	Seq         uint64    // Pos.Seq(): growing with commits, with gaps
	ID          string    // unique id, stable across redeliveries; random 32 hex digits when empty
	Time        time.Time // when it was published; time.Now() when zero
	ContentType string    // media type of Body; may be empty
	Body        []byte
	// SkippedTo is set by a Subscriber on the first event it delivers
	// after events it had not delivered were trimmed away (a hard
	// Retention): the Seq they were trimmed up to. 0 otherwise; never
	// stored.
	SkippedTo uint64
}

// ValidName reports whether s can name a publishing or subscribing service:
// 1-63 of a-z 0-9 - . not starting with - or . (the discovery rule).
func ValidName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-.") == "" && s[0] != '-' && s[0] != '.'
}

// ValidTopic reports whether s can name a topic: 1-MaxTopicLen of
// A-Z a-z 0-9 - . _ not starting with - or . (e.g. "message.sent").
func ValidTopic(s string) bool {
	if s == "" || len(s) > MaxTopicLen {
		return false
	}
	return strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._") == "" &&
		s[0] != '-' && s[0] != '.'
}

func checkNames(publisher, topic string) error {
	if !ValidName(publisher) {
		return fmt.Errorf("%w: publisher %q: want 1-63 of a-z 0-9 - . not starting with - or .", ErrInvalid, publisher)
	}
	if !ValidTopic(topic) {
		return fmt.Errorf("%w: topic %q: want 1-%d of A-Z a-z 0-9 - . _ not starting with - or .", ErrInvalid, topic, MaxTopicLen)
	}
	return nil
}

// logPrefix is l/<publisher>/<topic>/; logEnd is the first key after every
// entry of that log ('0' follows '/').
func logPrefix(publisher, topic string) []byte {
	return []byte(KeyPrefix + "l/" + publisher + "/" + topic + "/")
}

func logEnd(publisher, topic string) []byte {
	return []byte(KeyPrefix + "l/" + publisher + "/" + topic + "0")
}

// logKeyAfter is the first key of the log after the entry at p.
func logKeyAfter(publisher, topic string, p Pos) []byte {
	return append(append(logPrefix(publisher, topic), p[:]...), 0)
}

func cursorKey(subscriber, publisher, topic string) []byte {
	return []byte(KeyPrefix + "c/" + subscriber + "/" + publisher + "/" + topic)
}

// encodePos is a cursor's stored form.
func encodePos(p Pos) []byte { return bytes.Clone(p[:]) }

// decodePos reads a cursor; nil (no key) is the zero Pos. An 8-byte value
// is a cursor of the log's earlier layout (sequence numbers): it reads as
// the zero Pos, so the subscriber starts at the log's beginning.
func decodePos(v []byte) (Pos, error) {
	var p Pos
	switch len(v) {
	case 0, 8:
		return p, nil
	case len(p):
		copy(p[:], v)
		return p, nil
	}
	return p, fmt.Errorf("%w: cursor value of %d bytes", ErrCorrupt, len(v))
}

// AppendTx appends ev to the log of (publisher, topic) inside tx. The log
// lives in the key space tx writes to, under KeyPrefix; to publish
// atomically with a state change, run AppendTx in the same transaction,
// which means the publisher's log lives in the publisher's own key space.
//
// The event's key is completed when tx commits (store.Tx.SetStamped):
// AppendTx reads nothing, so appends to one topic do not conflict, and the
// log is in commit order. Its Pos and Seq are known only once the log is
// read. If tx does not commit (fn returns an error, or ctx ends), nothing
// is published. tx must not read the log it appends to (see SetStamped).
// After Transact returns nil, call Publisher.Announce to wake subscribers.
func AppendTx(tx store.Tx, publisher, topic string, ev Event) error {
	if err := checkNames(publisher, topic); err != nil {
		return err
	}
	if ev.ID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand contract)
		ev.ID = hex.EncodeToString(b[:])
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Publisher, ev.Topic, ev.Seq = publisher, topic, 0
	val := encodeEvent(ev)
	if len(val) > store.MaxValueBytes {
		return fmt.Errorf("%w: %d bytes encoded, limit %d", ErrTooLarge, len(val), store.MaxValueBytes)
	}
	if err := tx.SetStamped(logPrefix(publisher, topic), val); err != nil {
		return fmt.Errorf("events: append %s/%s: %w", publisher, topic, err)
	}
	return nil
}

// HeadTx returns the position of the last event of (publisher, topic),
// the zero Pos when there is none.
func HeadTx(tx store.ReadTx, publisher, topic string) (Pos, error) {
	if err := checkNames(publisher, topic); err != nil {
		return Pos{}, err
	}
	kvs, err := tx.Range(logPrefix(publisher, topic), logEnd(publisher, topic), store.RangeOptions{Limit: 1, Reverse: true})
	if err != nil {
		return Pos{}, fmt.Errorf("events: head %s/%s: %w", publisher, topic, err)
	}
	if len(kvs) == 0 {
		return Pos{}, nil
	}
	return posOf(publisher, topic, kvs[0].Key)
}

func posOf(publisher, topic string, key []byte) (Pos, error) {
	var p Pos
	n := len(logPrefix(publisher, topic))
	if len(key) != n+len(p) {
		return p, fmt.Errorf("%w: log key %q of %s/%s", ErrCorrupt, key, publisher, topic)
	}
	copy(p[:], key[n:])
	return p, nil
}

// ScanTx returns up to limit events of (publisher, topic) with Seq > after,
// in log order. limit <= 0 means no limit (mind the 5 s and 10 MB limits
// of a transaction). Subscribers resume with ScanAfterTx, which tells
// apart events that share a Seq.
func ScanTx(tx store.ReadTx, publisher, topic string, after uint64, limit int) ([]Event, error) {
	if after == ^uint64(0) {
		return nil, nil
	}
	var p Pos
	binary.BigEndian.PutUint64(p[2:10], after)
	for i := 10; i < len(p); i++ {
		p[i] = 0xff
	}
	return ScanAfterTx(tx, publisher, topic, p, limit)
}

// ScanAfterTx returns up to limit events of (publisher, topic) after the
// position after, in log order; limit as ScanTx's.
func ScanAfterTx(tx store.ReadTx, publisher, topic string, after Pos, limit int) ([]Event, error) {
	if err := checkNames(publisher, topic); err != nil {
		return nil, err
	}
	from, err := liveFrom(tx, publisher, topic, after)
	if err != nil {
		return nil, fmt.Errorf("events: scan %s/%s: %w", publisher, topic, err)
	}
	kvs, err := tx.Range(from, logEnd(publisher, topic), store.RangeOptions{Limit: max(limit, 0)})
	if err != nil {
		return nil, fmt.Errorf("events: scan %s/%s: %w", publisher, topic, err)
	}
	evs := make([]Event, 0, len(kvs))
	for _, kv := range kvs {
		p, err := posOf(publisher, topic, kv.Key)
		if err != nil {
			return nil, fmt.Errorf("events: scan %s/%s: %w", publisher, topic, err)
		}
		ev, err := decodeEvent(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("events: scan %s/%s at key %q: %w", publisher, topic, kv.Key, err)
		}
		ev.Publisher, ev.Topic, ev.Pos, ev.Seq = publisher, topic, p, p.Seq()
		evs = append(evs, ev)
	}
	return evs, nil
}

// Field numbers of the encoded Event: a protobuf message, written with
// protowire so that no generated code is needed. Unknown fields are skipped
// on decode, so fields can be added.
const (
	fieldTopic       = 1
	fieldPublisher   = 2
	fieldSeq         = 3
	fieldID          = 4
	fieldTimeNanos   = 5
	fieldContentType = 6
	fieldBody        = 7
)

func encodeEvent(ev Event) []byte {
	b := make([]byte, 0, 64+len(ev.Topic)+len(ev.Publisher)+len(ev.ID)+len(ev.ContentType)+len(ev.Body))
	str := func(n protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, n, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	str(fieldTopic, ev.Topic)
	str(fieldPublisher, ev.Publisher)
	if ev.Seq != 0 {
		b = protowire.AppendTag(b, fieldSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, ev.Seq)
	}
	str(fieldID, ev.ID)
	if !ev.Time.IsZero() {
		b = protowire.AppendTag(b, fieldTimeNanos, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(ev.Time.UnixNano()))
	}
	str(fieldContentType, ev.ContentType)
	if len(ev.Body) > 0 {
		b = protowire.AppendTag(b, fieldBody, protowire.BytesType)
		b = protowire.AppendBytes(b, ev.Body)
	}
	return b
}

// decodeEvent is the inverse of encodeEvent; errors wrap ErrCorrupt.
func decodeEvent(b []byte) (Event, error) {
	var ev Event
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Event{}, fmt.Errorf("%w: tag: %w", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == fieldTopic || num == fieldPublisher || num == fieldID || num == fieldContentType || num == fieldBody):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Event{}, fmt.Errorf("%w: field %d: %w", ErrCorrupt, num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldTopic:
				ev.Topic = string(v)
			case fieldPublisher:
				ev.Publisher = string(v)
			case fieldID:
				ev.ID = string(v)
			case fieldContentType:
				ev.ContentType = string(v)
			case fieldBody:
				ev.Body = append([]byte(nil), v...)
			}
		case typ == protowire.VarintType && (num == fieldSeq || num == fieldTimeNanos):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Event{}, fmt.Errorf("%w: field %d: %w", ErrCorrupt, num, protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldSeq {
				ev.Seq = v
			} else {
				ev.Time = time.Unix(0, protowire.DecodeZigZag(v))
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Event{}, fmt.Errorf("%w: field %d: %w", ErrCorrupt, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return ev, nil
}

// CheckNames validates a publisher and topic pair.
func CheckNames(publisher, topic string) error { return checkNames(publisher, topic) }

// CursorKey is the key of subscriber's cursor on (publisher, topic).
func CursorKey(subscriber, publisher, topic string) []byte {
	return cursorKey(subscriber, publisher, topic)
}

// EncodePos and DecodePos convert cursors to and from their stored form
// (the Pos's bytes; a missing value decodes as the zero Pos).
func EncodePos(p Pos) []byte { return encodePos(p) }

// DecodePos reads a value written by EncodePos.
func DecodePos(v []byte) (Pos, error) { return decodePos(v) }

// CursorTx returns the cursor of subscriber on (publisher, topic) as stored
// in tx's key space: the Pos of the last event it delivered and saved, the
// zero Pos if none.
func CursorTx(tx store.ReadTx, subscriber, publisher, topic string) (Pos, error) {
	if !ValidName(subscriber) {
		return Pos{}, fmt.Errorf("%w: subscriber %q", ErrInvalid, subscriber)
	}
	if err := checkNames(publisher, topic); err != nil {
		return Pos{}, err
	}
	v, err := tx.Get(cursorKey(subscriber, publisher, topic))
	if err != nil {
		return Pos{}, fmt.Errorf("events: cursor %s %s/%s: %w", subscriber, publisher, topic, err)
	}
	c, err := decodePos(v)
	if err != nil {
		return Pos{}, fmt.Errorf("events: cursor %s %s/%s: %w", subscriber, publisher, topic, err)
	}
	return c, nil
}

func trimKey(publisher, topic string) []byte {
	return []byte(KeyPrefix + "t/" + publisher + "/" + topic)
}

// liveFrom is where a read of the log of (publisher, topic) after position
// after starts: past the last trimmed event when after is older. Trimmed
// events leave deletion markers until compaction drops them, and a read
// that starts at the log's beginning steps over every one of them.
func liveFrom(tx store.ReadTx, publisher, topic string, after Pos) ([]byte, error) {
	old, err := TrimmedTx(tx, publisher, topic)
	if err != nil {
		return nil, err
	}
	if bytes.Compare(old[:], after[:]) > 0 {
		after = old
	}
	return logKeyAfter(publisher, topic, after), nil
}

// TrimmedTx returns the position of the last event trimmed away from the
// log of (publisher, topic), the zero Pos when none was: events up to it
// are gone.
func TrimmedTx(tx store.ReadTx, publisher, topic string) (Pos, error) {
	if err := checkNames(publisher, topic); err != nil {
		return Pos{}, err
	}
	v, err := tx.Get(trimKey(publisher, topic))
	if err != nil {
		return Pos{}, fmt.Errorf("events: trimmed %s/%s: %w", publisher, topic, err)
	}
	p, err := decodePos(v)
	if err != nil {
		return Pos{}, fmt.Errorf("events: trimmed %s/%s: %w", publisher, topic, err)
	}
	return p, nil
}

// TrimTx removes up to limit of the oldest events of (publisher, topic)
// at or before upTo, and records how far the log is trimmed (TrimmedTx).
// It returns how many it removed; fewer than limit means none at or before
// upTo is left. Appends never conflict with it: they land after upTo.
func TrimTx(tx store.Tx, publisher, topic string, upTo Pos, limit int) (int, error) {
	if err := checkNames(publisher, topic); err != nil {
		return 0, err
	}
	from, err := liveFrom(tx, publisher, topic, Pos{})
	if err != nil {
		return 0, fmt.Errorf("events: trim %s/%s: %w", publisher, topic, err)
	}
	kvs, err := tx.Range(from, logKeyAfter(publisher, topic, upTo), store.RangeOptions{Limit: max(limit, 1)})
	if err != nil {
		return 0, fmt.Errorf("events: trim %s/%s: %w", publisher, topic, err)
	}
	if len(kvs) == 0 {
		return 0, nil
	}
	last, err := posOf(publisher, topic, kvs[len(kvs)-1].Key)
	if err != nil {
		return 0, err
	}
	if err := tx.ClearRange(from, logKeyAfter(publisher, topic, last)); err != nil {
		return 0, fmt.Errorf("events: trim %s/%s: %w", publisher, topic, err)
	}
	// last is past the trimmed mark: the range began after it.
	if err := tx.Set(trimKey(publisher, topic), encodePos(last)); err != nil {
		return 0, fmt.Errorf("events: trim %s/%s: %w", publisher, topic, err)
	}
	return len(kvs), nil
}

// PosOfKey returns the position of a log entry's key, as Range returns it.
func PosOfKey(publisher, topic string, key []byte) (Pos, error) { return posOf(publisher, topic, key) }

// LogRange returns the key range [begin, end) of the log of (publisher,
// topic).
func LogRange(publisher, topic string) (begin, end []byte) {
	return logPrefix(publisher, topic), logEnd(publisher, topic)
}

// DecodeEvent decodes a log entry's value (without its Pos, which is in its
// key); errors wrap ErrCorrupt.
func DecodeEvent(v []byte) (Event, error) { return decodeEvent(v) }

// RegistrationsPrefix starts the keys of subscribers' registrations:
// RegistrationsPrefix + PUBLISHER/TOPIC/SUBSCRIBER, in the publisher's key
// space, written by the subscriber.
const RegistrationsPrefix = KeyPrefix + "r/"

func registrationPrefix(publisher, topic string) []byte {
	return []byte(RegistrationsPrefix + publisher + "/" + topic + "/")
}

// RegisterTx records, in the key space of the log of (publisher, topic),
// that subscriber follows it: a Trimmer that finds it there keeps what
// subscriber has not delivered yet (see SubscribersTx). It is a blind
// write, safe to repeat.
func RegisterTx(tx store.Tx, subscriber, publisher, topic string) error {
	if !ValidName(subscriber) {
		return fmt.Errorf("%w: subscriber %q", ErrInvalid, subscriber)
	}
	if err := checkNames(publisher, topic); err != nil {
		return err
	}
	if err := tx.Set(append(registrationPrefix(publisher, topic), subscriber...), nil); err != nil {
		return fmt.Errorf("events: register %s on %s/%s: %w", subscriber, publisher, topic, err)
	}
	return nil
}

// UnregisterTx removes subscriber's registration on (publisher, topic):
// from then on, trims no longer wait for its cursor.
func UnregisterTx(tx store.Tx, subscriber, publisher, topic string) error {
	if !ValidName(subscriber) {
		return fmt.Errorf("%w: subscriber %q", ErrInvalid, subscriber)
	}
	if err := checkNames(publisher, topic); err != nil {
		return err
	}
	if err := tx.Clear(append(registrationPrefix(publisher, topic), subscriber...)); err != nil {
		return fmt.Errorf("events: unregister %s from %s/%s: %w", subscriber, publisher, topic, err)
	}
	return nil
}

// SubscribersTx returns the subscribers registered on (publisher, topic)
// (RegisterTx), in name order.
func SubscribersTx(tx store.ReadTx, publisher, topic string) ([]string, error) {
	if err := checkNames(publisher, topic); err != nil {
		return nil, err
	}
	begin := registrationPrefix(publisher, topic)
	end := append(bytes.Clone(begin[:len(begin)-1]), '0') // '0' follows '/'
	kvs, err := tx.Range(begin, end, store.RangeOptions{})
	if err != nil {
		return nil, fmt.Errorf("events: subscribers of %s/%s: %w", publisher, topic, err)
	}
	names := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		if name := string(kv.Key[len(begin):]); ValidName(name) {
			names = append(names, name)
		}
	}
	return names, nil
}
