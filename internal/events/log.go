package events

import (
	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/store"
)

// The log itself lives in package eventlog, which handlers' SDK imports to
// publish inside their own transactions without pulling in mangos.

// KeyPrefix starts every key of the log and of cursors; see eventlog.KeyPrefix.
const KeyPrefix = eventlog.KeyPrefix

// MaxTopicLen is the longest topic name accepted.
const MaxTopicLen = eventlog.MaxTopicLen

// Event is one published event; see eventlog.Event.
type Event = eventlog.Event

// Pos is an event's position in its log; see eventlog.Pos.
type Pos = eventlog.Pos

// ValidName reports whether s can name a publisher or subscriber.
func ValidName(s string) bool { return eventlog.ValidName(s) }

// ValidTopic reports whether s can name a topic.
func ValidTopic(s string) bool { return eventlog.ValidTopic(s) }

// AppendTx appends ev to publisher's log of topic inside tx; see eventlog.AppendTx.
func AppendTx(tx store.Tx, publisher, topic string, ev Event) error {
	return eventlog.AppendTx(tx, publisher, topic, ev)
}

// HeadTx returns the position of the last event of a log; see eventlog.HeadTx.
func HeadTx(tx store.ReadTx, publisher, topic string) (Pos, error) {
	return eventlog.HeadTx(tx, publisher, topic)
}

// ScanTx reads events after a sequence number; see eventlog.ScanTx.
func ScanTx(tx store.ReadTx, publisher, topic string, after uint64, limit int) ([]Event, error) {
	return eventlog.ScanTx(tx, publisher, topic, after, limit)
}

// ScanAfterTx reads events after a position; see eventlog.ScanAfterTx.
func ScanAfterTx(tx store.ReadTx, publisher, topic string, after Pos, limit int) ([]Event, error) {
	return eventlog.ScanAfterTx(tx, publisher, topic, after, limit)
}

// CursorTx returns a subscriber's cursor; see eventlog.CursorTx.
func CursorTx(tx store.ReadTx, subscriber, publisher, topic string) (Pos, error) {
	return eventlog.CursorTx(tx, subscriber, publisher, topic)
}

func checkNames(publisher, topic string) error { return eventlog.CheckNames(publisher, topic) }
func cursorKey(subscriber, publisher, topic string) []byte {
	return eventlog.CursorKey(subscriber, publisher, topic)
}
func encodePos(p Pos) []byte          { return eventlog.EncodePos(p) }
func decodePos(v []byte) (Pos, error) { return eventlog.DecodePos(v) }
