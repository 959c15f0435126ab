// Command messages is an example Griddle handler: users of a small dating
// site send each other messages; each one sent is published as an event.
//
//	POST /messages/{to}    send {"from": "<id>", "text": "..."} to user {to} → 201 {"id": "..."};
//	                       400 when {to} has no profile (asked of the profiles service)
//	GET  /messages/{user}  the newest 50 messages {user} received, newest first
//
// A sent message is stored and published on topic message.sent in one
// transaction: it is published if and only if it is stored. The event's
// body is the stored message:
//
//	{"id": "...", "from": "<id>", "to": "<id>", "text": "...", "at": "<RFC 3339>"}
//
// Keys in the service's key space:
//
//	m/<to>/<message id>  → the message as JSON
//
// Message ids are 24 hex digits that sort in the order messages were sent:
// the send time in nanoseconds (16 digits) and 8 random ones.
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
	"unicode/utf8"

	"github.com/griddle-mesh/griddle/plugins"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// TopicSent is the topic every sent message is published on.
const TopicSent = "message.sent"

// Limits.
const (
	maxBody    = 16 << 10 // POST body
	maxTextLen = 2000     // characters of a message's text
	pageSize   = 50       // messages GET returns
)

func main() {
	plugins.Serve(routes())
}

func routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /messages/{to}", send)
	mux.HandleFunc("GET /messages/{user}", list)
	return mux
}

// Message is the stored, served and published form of a message.
type Message struct {
	ID   string    `json:"id"`
	From string    `json:"from"`
	To   string    `json:"to"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

// validUser reports whether s is a user id: a positive decimal integer.
func validUser(s string) bool {
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n > 0 && strconv.FormatInt(n, 10) == s
}

// inbox is the key prefix of the messages user received; inboxEnd is the
// first key after them ('0' follows '/').
func inbox(user string) []byte    { return []byte("m/" + user + "/") }
func inboxEnd(user string) []byte { return []byte("m/" + user + "0") }

// newID returns a message id sent at t: ids sort in time order.
func newID(t time.Time) string {
	return fmt.Sprintf("%016x%08x", uint64(t.UnixNano()), rand.Uint32())
}

func send(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	to := r.PathValue("to")
	if !validUser(to) {
		writeError(w, http.StatusBadRequest, "to: want a positive integer user id")
		return
	}
	var in struct {
		From string `json:"from"`
		Text string `json:"text"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&in)
	if err == nil {
		if _, err2 := dec.Token(); !errors.Is(err2, io.EOF) {
			err = errors.Join(err2, errors.New("trailing data"))
		}
	}
	if err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body too large")
			return
		}
		writeError(w, http.StatusBadRequest, `body: want one JSON object {"from", "text"}`)
		return
	}
	switch n := utf8.RuneCountInString(in.Text); {
	case !validUser(in.From):
		writeError(w, http.StatusBadRequest, "from: want a positive integer user id")
		return
	case n == 0 || n > maxTextLen || !utf8.ValidString(in.Text):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("text: want 1 to %d characters", maxTextLen))
		return
	}

	switch code, err := recipientStatus(r, to); {
	case err != nil:
		slog.ErrorContext(ctx, "messages: call profiles", "to", to, "error", err, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusBadGateway, "profiles service unavailable")
		return
	case code == http.StatusNotFound:
		writeError(w, http.StatusBadRequest, "unknown recipient")
		return
	case code != http.StatusOK:
		slog.ErrorContext(ctx, "messages: profiles replied badly", "to", to, "status", code, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusBadGateway, "profiles service failed")
		return
	}

	now := time.Now().UTC()
	m := Message{ID: newID(now), From: in.From, To: to, Text: in.Text, At: now}
	body, err := json.Marshal(m)
	if err != nil {
		slog.ErrorContext(ctx, "messages: encode", "error", err, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	mesh := plugins.Mesh(ctx)
	err = mesh.Store().Transact(ctx, func(tx store.Tx) error {
		if err := tx.Set(append(inbox(to), m.ID...), body); err != nil {
			return err
		}
		return mesh.PublishTx(tx, TopicSent, "application/json", body)
	})
	if err != nil {
		slog.ErrorContext(ctx, "messages: store and publish", "to", to, "error", err, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	// The sidecar announces the event as the transaction commits: no call
	// of its own (mesh.Announce) is needed.
	writeJSON(w, http.StatusCreated, map[string]string{"id": m.ID})
}

// recipientStatus asks the profiles service for user to's profile and
// returns its status code.
func recipientStatus(r *http.Request, to string) (int, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://profiles/profiles/"+to, nil)
	if err != nil {
		return 0, err
	}
	resp, err := plugins.Mesh(r.Context()).Client().Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
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
		kvs, err = tx.Range(inbox(user), inboxEnd(user), store.RangeOptions{Limit: pageSize, Reverse: true})
		return err
	})
	if err != nil {
		slog.ErrorContext(ctx, "messages: list", "user", user, "error", err, "request_id", plugins.RequestID(ctx))
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
