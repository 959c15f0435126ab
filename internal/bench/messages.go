package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/store"
)

// The write scenarios.
const (
	// ScenarioMessages sends a message to a user chosen at random among
	// the seeded profiles: POST /messages/{to}, which asks the profiles
	// service whether {to} exists, then stores the message and publishes
	// message.sent in one transaction.
	ScenarioMessages = "messages"
	// ScenarioMixed is 90% the profile scenario's reads and 10% the
	// messages scenario's writes, drawn at random per request.
	ScenarioMixed = "mixed"
)

// mixedWrites is the share of writes in ScenarioMixed.
const mixedWrites = 0.1

// needsProfiles reports whether scenario reads the seeded profiles.
func needsProfiles(scenario string) bool {
	return scenario == ScenarioProfile || scenario == ScenarioMessages || scenario == ScenarioMixed
}

// writes reports whether scenario runs the messages service.
func writes(scenario string) bool {
	return scenario == ScenarioMessages || scenario == ScenarioMixed
}

// messageBody is the body of a sent message: from a random seeded user.
func messageBody(profiles int) []byte {
	return fmt.Appendf(nil, `{"from":"%d","text":"a message from the bench"}`, 1+rand.IntN(profiles))
}

var jsonHeader = http.Header{"Content-Type": []string{"application/json"}}

// messageTarget fills t with a POST /messages/{to} of the scenario.
func messageTarget(t *vegeta.Target, base string, profiles int) {
	t.Method = http.MethodPost
	t.URL = base + "/messages/" + strconv.Itoa(1+rand.IntN(profiles))
	t.Body = messageBody(profiles)
	t.Header = jsonHeader
}

// profileTarget fills t with a GET /profiles/{id} of the profile scenario.
func profileTarget(t *vegeta.Target, base string, profiles int) {
	t.Method = http.MethodGet
	t.URL = base + "/profiles/" + strconv.Itoa(1+rand.IntN(profiles))
	t.Body, t.Header = nil, nil
}

// writeTargeter is targeter for the write scenarios.
func writeTargeter(scenario, base string, profiles int) vegeta.Targeter {
	if scenario == ScenarioMessages {
		return func(t *vegeta.Target) error {
			messageTarget(t, base, profiles)
			return nil
		}
	}
	return func(t *vegeta.Target) error {
		if rand.Float64() < mixedWrites {
			messageTarget(t, base, profiles)
		} else {
			profileTarget(t, base, profiles)
		}
		return nil
	}
}

// topicSent and the message layout are those of services/messages.
const topicSent = "message.sent"

type message struct {
	ID   string    `json:"id"`
	From string    `json:"from"`
	To   string    `json:"to"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

// directMessages is the direct baseline of the messages scenario: what the
// messages service does for POST /messages/{to}, in-process. It reads the
// recipient's profile and then, in one transaction, stores the message
// and appends the event to the log, as the messages service does through
// its sidecar.
type directMessages struct {
	profiles profileReader
	messages store.Store // the "messages" key space
}

func (d directMessages) send(w http.ResponseWriter, req *http.Request) {
	to := req.PathValue("to")
	id, err := strconv.Atoi(to)
	if err != nil || id <= 0 {
		http.Error(w, "to: want a positive integer", http.StatusBadRequest)
		return
	}
	var in struct{ From, Text string }
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 16<<10)).Decode(&in); err != nil || in.From == "" || in.Text == "" {
		http.Error(w, `body: want {"from", "text"}`, http.StatusBadRequest)
		return
	}
	ctx := req.Context()
	p, err := d.profiles.profile(ctx, id)
	switch {
	case err != nil:
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	case p == nil:
		http.Error(w, "unknown recipient", http.StatusBadRequest)
		return
	}
	now := time.Now().UTC()
	m := message{ID: fmt.Sprintf("%016x%08x", uint64(now.UnixNano()), rand.Uint32()), From: in.From, To: to, Text: in.Text, At: now}
	body, _ := json.Marshal(m)
	err = d.messages.Transact(ctx, func(tx store.Tx) error {
		if err := tx.Set([]byte("m/"+to+"/"+m.ID), body); err != nil {
			return err
		}
		return eventlog.AppendTx(tx, "messages", topicSent, eventlog.Event{ContentType: "application/json", Body: body})
	})
	if err != nil {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]string{"id": m.ID})
}

// list answers GET /messages/{user}: the newest 50 messages, as the
// messages service does (the scenarios use it as the readiness probe).
func (d directMessages) list(w http.ResponseWriter, req *http.Request) {
	user := req.PathValue("user")
	var kvs []store.KeyValue
	err := d.messages.ReadTransact(req.Context(), func(tx store.ReadTx) error {
		var err error
		kvs, err = tx.Range([]byte("m/"+user+"/"), []byte("m/"+user+"0"), store.RangeOptions{Limit: 50, Reverse: true})
		return err
	})
	if err != nil {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	out := make([]json.RawMessage, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Value
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// directMessagesOf opens the messages key space next to the profiles.
func directMessagesOf(ctx context.Context, b store.Backend, profiles profileReader) (directMessages, error) {
	s, err := b.Space("messages")
	if err != nil {
		return directMessages{}, fmt.Errorf("bench: open store: %w", err)
	}
	return directMessages{profiles: profiles, messages: s}, ctx.Err()
}
