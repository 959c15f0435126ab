package eventlog

import (
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
//	h/<publisher>/<topic>                  → head: last seq, 8 bytes big-endian
//	l/<publisher>/<topic>/<seq, 8 bytes BE> → one encoded Event
//	c/<subscriber>/<publisher>/<topic>     → cursor: last delivered seq, 8 bytes BE
const KeyPrefix = "\xffevents/"

// MaxTopicLen is the longest topic name accepted.
const MaxTopicLen = 128

// Event is one published event. The zero Time and empty ID are filled in by
// AppendTx; Publisher, Topic and Seq are always set by AppendTx and ignored
// on input.
type Event struct {
	Publisher   string    // the service whose log holds the event
	Topic       string    // the topic within Publisher's log
	Seq         uint64    // position in (Publisher, Topic), from 1, without gaps
	ID          string    // unique id, stable across redeliveries; random 32 hex digits when empty
	Time        time.Time // when it was published; time.Now() when zero
	ContentType string    // media type of Body; may be empty
	Body        []byte
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

func headKey(publisher, topic string) []byte {
	return []byte(KeyPrefix + "h/" + publisher + "/" + topic)
}

// logPrefix is l/<publisher>/<topic>/; logEnd is the first key after every
// entry of that log ('0' follows '/').
func logPrefix(publisher, topic string) []byte {
	return []byte(KeyPrefix + "l/" + publisher + "/" + topic + "/")
}

func logEnd(publisher, topic string) []byte {
	return []byte(KeyPrefix + "l/" + publisher + "/" + topic + "0")
}

func logKey(publisher, topic string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(logPrefix(publisher, topic), seq)
}

func cursorKey(subscriber, publisher, topic string) []byte {
	return []byte(KeyPrefix + "c/" + subscriber + "/" + publisher + "/" + topic)
}

func encodeSeq(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// decodeSeq reads a head or cursor value; nil (no key) is 0.
func decodeSeq(v []byte) (uint64, error) {
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: sequence value of %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// AppendTx appends ev to the log of (publisher, topic) inside tx and returns
// its sequence number: the head read in tx plus one. The log lives in the key
// space tx writes to, under KeyPrefix; to publish atomically with a state
// change, run AppendTx in the same transaction, which means the publisher's
// log lives in the publisher's own key space.
//
// Concurrent appends to one topic conflict on its head key, so the store's
// serializable transactions retry them: sequence numbers are gap-free and
// never reused. If tx does not commit (fn returns an error, or ctx ends),
// nothing is published. Like every transaction body, AppendTx may run more
// than once: only the seq returned by the run that committed is real, so
// keep the last value (assign it to a variable outside the closure), and
// call Publisher.Announce with it after Transact returns nil.
func AppendTx(tx store.Tx, publisher, topic string, ev Event) (uint64, error) {
	if err := checkNames(publisher, topic); err != nil {
		return 0, err
	}
	head, err := HeadTx(tx, publisher, topic)
	if err != nil {
		return 0, err
	}
	ev.Publisher, ev.Topic, ev.Seq = publisher, topic, head+1
	if ev.ID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand contract)
		ev.ID = hex.EncodeToString(b[:])
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	val := encodeEvent(ev)
	if len(val) > store.MaxValueBytes {
		return 0, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrTooLarge, len(val), store.MaxValueBytes)
	}
	if err := tx.Set(logKey(publisher, topic, ev.Seq), val); err != nil {
		return 0, fmt.Errorf("events: append %s/%s: %w", publisher, topic, err)
	}
	if err := tx.Set(headKey(publisher, topic), encodeSeq(ev.Seq)); err != nil {
		return 0, fmt.Errorf("events: append %s/%s: %w", publisher, topic, err)
	}
	return ev.Seq, nil
}

// HeadTx returns the last sequence number appended to (publisher, topic), 0
// when nothing was.
func HeadTx(tx store.ReadTx, publisher, topic string) (uint64, error) {
	if err := checkNames(publisher, topic); err != nil {
		return 0, err
	}
	v, err := tx.Get(headKey(publisher, topic))
	if err != nil {
		return 0, fmt.Errorf("events: head %s/%s: %w", publisher, topic, err)
	}
	head, err := decodeSeq(v)
	if err != nil {
		return 0, fmt.Errorf("events: head %s/%s: %w", publisher, topic, err)
	}
	return head, nil
}

// ScanTx returns up to limit events of (publisher, topic) with Seq > after,
// in Seq order. limit <= 0 means no limit (mind the 5 s and 10 MB limits of
// a transaction).
func ScanTx(tx store.ReadTx, publisher, topic string, after uint64, limit int) ([]Event, error) {
	if err := checkNames(publisher, topic); err != nil {
		return nil, err
	}
	if after == ^uint64(0) {
		return nil, nil
	}
	kvs, err := tx.Range(logKey(publisher, topic, after+1), logEnd(publisher, topic), store.RangeOptions{Limit: max(limit, 0)})
	if err != nil {
		return nil, fmt.Errorf("events: scan %s/%s: %w", publisher, topic, err)
	}
	evs := make([]Event, 0, len(kvs))
	for _, kv := range kvs {
		ev, err := decodeEvent(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("events: scan %s/%s at key %q: %w", publisher, topic, kv.Key, err)
		}
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
	b = protowire.AppendTag(b, fieldSeq, protowire.VarintType)
	b = protowire.AppendVarint(b, ev.Seq)
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
	if ev.Seq == 0 {
		return Event{}, fmt.Errorf("%w: event without seq", ErrCorrupt)
	}
	return ev, nil
}

// CheckNames validates a publisher and topic pair.
func CheckNames(publisher, topic string) error { return checkNames(publisher, topic) }

// CursorKey is the key of subscriber's cursor on (publisher, topic).
func CursorKey(subscriber, publisher, topic string) []byte {
	return cursorKey(subscriber, publisher, topic)
}

// EncodeSeq and DecodeSeq convert heads and cursors to and from their
// stored form (8 bytes big-endian; a missing value decodes as 0).
func EncodeSeq(seq uint64) []byte { return encodeSeq(seq) }

// DecodeSeq reads a value written by EncodeSeq.
func DecodeSeq(v []byte) (uint64, error) { return decodeSeq(v) }

// CursorTx returns the cursor of subscriber on (publisher, topic) as stored
// in tx's key space: the last Seq it delivered and saved, 0 if none.
func CursorTx(tx store.ReadTx, subscriber, publisher, topic string) (uint64, error) {
	if !ValidName(subscriber) {
		return 0, fmt.Errorf("%w: subscriber %q", ErrInvalid, subscriber)
	}
	if err := checkNames(publisher, topic); err != nil {
		return 0, err
	}
	v, err := tx.Get(cursorKey(subscriber, publisher, topic))
	if err != nil {
		return 0, fmt.Errorf("events: cursor %s %s/%s: %w", subscriber, publisher, topic, err)
	}
	c, err := decodeSeq(v)
	if err != nil {
		return 0, fmt.Errorf("events: cursor %s %s/%s: %w", subscriber, publisher, topic, err)
	}
	return c, nil
}
