// Command feed is an example Griddle handler: each user's news feed, built
// from the messages service's message.sent events. Its sidecar delivers
// them (--subscribe messages/message.sent=/feed/events).
//
//	POST /feed/events   one message.sent event, delivered by the sidecar
//	GET  /feed/{user}   the newest 50 entries of {user}'s feed, newest first
//
// Delivery is at least once and in order, and anything but a 2xx is
// retried forever, so POST /feed/events
//   - adds each event once: an event already seen (by its
//     X-Griddle-Event-Id) is acknowledged and ignored;
//   - acknowledges (204) and logs an event it can never process
//     (malformed), so it does not block the topic;
//   - answers 503, to be retried, when it cannot process an event now
//     (the profiles service or the store failing).
//
// Keys in the service's key space:
//
//	e/<event id>               → when the event was added (16 hex digits, Unix nanoseconds)
//	x/<16 hex digits>/<event id> → "": the same marker, by the time it was added
//	f/<user>/<entry key>       → the feed entry as JSON
//
// Markers expire after markerTTL, far longer than any redelivery takes
// (they follow a crash within a batch): each event added clears up to
// expirePerEvent expired ones, so they do not grow without bound.
//
// Entry keys are 24 hex digits that sort in the order events were added:
// the time in nanoseconds (16 digits) and 8 random ones.
//
// Errors are answered as {"error": "..."} with a fixed message; the cause
// goes to the log.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/griddle-mesh/griddle/plugins"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// Headers the sidecar sets on a delivered event.
const (
	headerEventID    = plugins.HeaderEventID
	headerEventTopic = plugins.HeaderEventTopic
)

// topicSent is the topic of the events this service takes.
const topicSent = "message.sent"

// Limits.
const (
	maxEventBody  = 64 << 10 // an event's body
	maxEventIDLen = 200      // bytes of an event id
	maxProfile    = 64 << 10 // a profile read from the profiles service
	pageSize      = 50       // entries GET returns
)

func main() {
	plugins.Serve(routes(), plugins.Subscribe("messages", "message.sent", "/feed/events"))
}

func routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /feed/events", receive)
	mux.HandleFunc("GET /feed/{user}", list)
	return mux
}

// sent is the body of a message.sent event.
type sent struct {
	ID   string    `json:"id"`
	From string    `json:"from"`
	To   string    `json:"to"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

// Entry is one entry of a feed, stored and served.
type Entry struct {
	From      string    `json:"from"`
	FromName  string    `json:"fromName"`
	Text      string    `json:"text"`
	At        time.Time `json:"at"`
	MessageID string    `json:"messageId"`
}

// validUser reports whether s is a user id: a positive decimal integer.
func validUser(s string) bool {
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n > 0 && strconv.FormatInt(n, 10) == s
}

func markerKey(eventID string) []byte { return []byte("e/" + eventID) }

// Marker expiry.
const (
	markerTTL      = 24 * time.Hour
	expirePerEvent = 8
)

// stamp is t as the markers write it: 16 hex digits that sort in time order.
func stamp(t time.Time) string { return fmt.Sprintf("%016x", uint64(t.UnixNano())) }

// expiryKey is the index entry of a marker added at stamp st.
func expiryKey(st, eventID string) []byte { return []byte("x/" + st + "/" + eventID) }

// expireMarkers clears up to expirePerEvent markers added before cutoff.
// It reads before it writes, so that it costs the transaction one round
// trip (see plugins/store).
func expireMarkers(tx store.Tx, cutoff time.Time) error {
	old, err := tx.Range([]byte("x/"), []byte("x/"+stamp(cutoff)), store.RangeOptions{Limit: expirePerEvent})
	if err != nil {
		return err
	}
	for _, kv := range old {
		rest := string(kv.Key[len("x/"):])
		if len(rest) < 17 || rest[16] != '/' {
			continue // not ours; leave it
		}
		if err := tx.Clear(markerKey(rest[17:])); err != nil {
			return err
		}
		if err := tx.Clear(kv.Key); err != nil {
			return err
		}
	}
	return nil
}

// feedPrefix is the key prefix of user's feed; feedEnd is the first key
// after it ('0' follows '/').
func feedPrefix(user string) []byte { return []byte("f/" + user + "/") }
func feedEnd(user string) []byte    { return []byte("f/" + user + "0") }

// newEntryKey returns an entry key for time t: keys sort in time order.
func newEntryKey(t time.Time) string {
	return fmt.Sprintf("%016x%08x", uint64(t.UnixNano()), rand.Uint32())
}

// decodeEvent reads a message.sent event; the error says why it can never
// be processed.
func decodeEvent(r *http.Request) (string, sent, error) {
	var ev sent
	id := r.Header.Get(headerEventID)
	if id == "" || len(id) > maxEventIDLen {
		return id, ev, fmt.Errorf("%s: want 1 to %d bytes", headerEventID, maxEventIDLen)
	}
	if t := r.Header.Get(headerEventTopic); t != "" && t != topicSent {
		return id, ev, fmt.Errorf("topic %q: want %s", t, topicSent)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxEventBody+1))
	if err != nil {
		return id, ev, fmt.Errorf("reading the body: %w", err)
	}
	if len(body) > maxEventBody {
		return id, ev, fmt.Errorf("body over %d bytes", maxEventBody)
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return id, ev, fmt.Errorf("body: %w", err)
	}
	switch {
	case !validUser(ev.From):
		return id, ev, fmt.Errorf("from %q: want a user id", ev.From)
	case !validUser(ev.To):
		return id, ev, fmt.Errorf("to %q: want a user id", ev.To)
	case ev.ID == "" || ev.Text == "":
		return id, ev, errors.New("id and text are required")
	}
	return id, ev, nil
}

func receive(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	eventID, ev, err := decodeEvent(r)
	if err != nil {
		// Redelivering it would fail the same way, forever.
		slog.WarnContext(ctx, "feed: dropping a malformed event", "event_id", eventID, "error", err)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if to := r.Header.Get(plugins.HeaderEventSkipped); to != "" {
		// A hard retention of messages' log removed events before they
		// reached this feed: their entries will never be added.
		slog.WarnContext(ctx, "feed: events were trimmed away before delivery; their entries are missing", "skipped_to_seq", to, "event_id", eventID)
	}
	name, err := senderName(r, ev.From)
	if err != nil {
		slog.ErrorContext(ctx, "feed: sender's name", "event_id", eventID, "from", ev.From, "error", err)
		writeError(w, http.StatusServiceUnavailable, "profiles service unavailable")
		return
	}
	value, err := json.Marshal(Entry{From: ev.From, FromName: name, Text: ev.Text, At: ev.At, MessageID: ev.ID})
	if err != nil {
		slog.ErrorContext(ctx, "feed: encode", "event_id", eventID, "error", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	now := time.Now()
	key := append(feedPrefix(ev.To), newEntryKey(now)...)
	st := stamp(now)
	var duplicate bool
	err = plugins.Mesh(ctx).Store().Transact(ctx, func(tx store.Tx) error {
		seen, err := tx.Get(markerKey(eventID))
		if err != nil {
			return err
		}
		if duplicate = seen != nil; duplicate {
			return nil
		}
		if err := expireMarkers(tx, now.Add(-markerTTL)); err != nil {
			return err
		}
		if err := tx.Set(markerKey(eventID), []byte(st)); err != nil {
			return err
		}
		if err := tx.Set(expiryKey(st, eventID), nil); err != nil {
			return err
		}
		return tx.Set(key, value)
	})
	if err != nil {
		slog.ErrorContext(ctx, "feed: add entry", "event_id", eventID, "error", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	if duplicate {
		slog.InfoContext(ctx, "feed: event already added", "event_id", eventID)
	}
	w.WriteHeader(http.StatusNoContent)
}

// senderName returns the name of user id from the profiles service, or id
// itself when it has no profile. An error means the profiles service
// failed: the event must be retried.
func senderName(r *http.Request, id string) (string, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://profiles/profiles/"+id, nil)
	if err != nil {
		return "", err
	}
	resp, err := plugins.Mesh(r.Context()).Client().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode >= 500:
		return "", fmt.Errorf("profiles answered %d", resp.StatusCode)
	default: // 404, or a 4xx retrying cannot cure
		if resp.StatusCode != http.StatusNotFound {
			slog.WarnContext(r.Context(), "feed: profiles answered; naming the sender by id", "from", id, "status", resp.StatusCode)
		}
		return id, nil
	}
	var p struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxProfile)).Decode(&p); err != nil || p.Name == "" {
		slog.WarnContext(r.Context(), "feed: unreadable profile; naming the sender by id", "from", id, "error", err)
		return id, nil
	}
	return p.Name, nil
}

func list(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := r.PathValue("user")
	if !validUser(user) {
		writeError(w, http.StatusBadRequest, "user: want a positive integer user id")
		return
	}
	var kvs []store.KeyValue
	err := plugins.Mesh(ctx).Store().ReadTransact(ctx, func(tx store.ReadTx) error {
		var err error
		kvs, err = tx.Range(feedPrefix(user), feedEnd(user), store.RangeOptions{Limit: pageSize, Reverse: true})
		return err
	})
	if err != nil {
		slog.ErrorContext(ctx, "feed: list", "user", user, "error", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	out := make([]json.RawMessage, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Value
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
