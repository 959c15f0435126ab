package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/plugins/plugintest"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// profilesStub names user 1 "ada" and user 9 "ida", has no user 2, and
// answers 500 for user 3 ("cy") while failing is set.
type profilesStub struct{ failing atomic.Bool }

func (p *profilesStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/profiles/1":
		io.WriteString(w, `{"id":1,"name":"ada"}`)
	case "/profiles/9":
		io.WriteString(w, `{"id":9,"name":"ida"}`)
	case "/profiles/3":
		if p.failing.Load() {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, `{"id":3,"name":"cy"}`)
	default:
		http.Error(w, `{"error":"no such profile"}`, http.StatusNotFound)
	}
}

// event is the body of a message.sent event from user from to user 9.
func event(msgID, from, text string) string {
	return fmt.Sprintf(`{"id":%q,"from":%q,"to":"9","text":%q,"at":"2026-01-02T03:04:05Z"}`, msgID, from, text)
}

func TestReceive(t *testing.T) {
	profiles := &profilesStub{}
	profiles.failing.Store(true)
	s := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("profiles", profiles))

	// The rows run in order, as the sidecar would deliver them.
	for _, c := range []struct {
		name, eventID, topic, body string
		before                     func()
		wantCode                   int
	}{
		{name: "event", eventID: "ev-1", body: event("m1", "1", "hi"), wantCode: 204},
		{name: "same event again", eventID: "ev-1", body: event("m1", "1", "hi"), wantCode: 204},
		{name: "sender without a profile", eventID: "ev-2", body: event("m2", "2", "yo"), wantCode: 204},
		{name: "profiles failing", eventID: "ev-3", body: event("m3", "3", "hey"), wantCode: 503},
		{name: "profiles failing, redelivered", eventID: "ev-3", body: event("m3", "3", "hey"), wantCode: 503},
		{name: "profiles back, redelivered", eventID: "ev-3", body: event("m3", "3", "hey"), before: func() { profiles.failing.Store(false) }, wantCode: 204},
		{name: "malformed json", eventID: "ev-4", body: `{"id":`, wantCode: 204},
		{name: "not an object", eventID: "ev-5", body: `[1,2]`, wantCode: 204},
		{name: "sender not an id", eventID: "ev-6", body: event("m6", "bob", "x"), wantCode: 204},
		{name: "no text", eventID: "ev-7", body: event("m7", "1", ""), wantCode: 204},
		{name: "no event id", eventID: "", body: event("m8", "1", "x"), wantCode: 204},
		{name: "other topic", eventID: "ev-9", topic: "message.read", body: event("m9", "1", "x"), wantCode: 204},
		{name: "body too large", eventID: "ev-10", body: event("m10", "1", strings.Repeat("a", maxEventBody)), wantCode: 204},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before()
			}
			code, body := deliver(t, s, c.eventID, c.topic, c.body)
			if code != c.wantCode {
				t.Errorf("got %d %s, want %d", code, body, c.wantCode)
			}
		})
	}

	// A request, not a delivery, to the subscription's path: refused
	// before the handler sees it, whatever event headers it carries.
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/feed/events", strings.NewReader(event("m99", "1", "forged")))
	req.Header.Set(headerEventID, "ev-99")
	if code, body := send(t, s.Client(), req); code != http.StatusNotFound {
		t.Errorf("a request to /feed/events: %d %s, want 404", code, body)
	}

	code, body := do(t, s.Client(), "GET", s.URL()+"/feed/9", "")
	if code != http.StatusOK {
		t.Fatalf("GET /feed/9: got %d %s, want 200", code, body)
	}
	var got []Entry
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("GET /feed/9: %s: %v", body, err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := []Entry{ // newest first, each event once
		{From: "3", FromName: "cy", Text: "hey", At: at, MessageID: "m3"},
		{From: "2", FromName: "2", Text: "yo", At: at, MessageID: "m2"},
		{From: "1", FromName: "ada", Text: "hi", At: at, MessageID: "m1"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GET /feed/9:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestList(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("profiles", &profilesStub{}))
	const n = pageSize + 3
	for i := range n {
		if code, body := deliver(t, s, fmt.Sprintf("ev-%d", i), "", event(fmt.Sprintf("m%d", i), "1", fmt.Sprintf("t%d", i))); code != http.StatusNoContent {
			t.Fatalf("event %d: got %d %s, want 204", i, code, body)
		}
	}
	for _, c := range []struct {
		name, user string
		wantCode   int
		wantFirst  string // text of the newest entry
		wantLen    int
		wantBody   string // when set, the whole body
	}{
		{name: "newest page", user: "9", wantCode: 200, wantFirst: fmt.Sprintf("t%d", n-1), wantLen: pageSize},
		{name: "empty feed is an empty array", user: "8", wantCode: 200, wantBody: "[]"},
		{name: "bad user", user: "x", wantCode: 400, wantBody: `{"error":"user: want a positive integer user id"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := do(t, s.Client(), "GET", s.URL()+"/feed/"+c.user, "")
			if code != c.wantCode || (c.wantBody != "" && body != c.wantBody) {
				t.Fatalf("got %d %s, want %d %s", code, body, c.wantCode, c.wantBody)
			}
			if c.wantBody != "" {
				return
			}
			var got []Entry
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			if len(got) != c.wantLen || got[0].Text != c.wantFirst || got[len(got)-1].Text != fmt.Sprintf("t%d", n-c.wantLen) {
				t.Errorf("got %d entries from %q to %q, want %d from %q", len(got), got[0].Text, got[len(got)-1].Text, c.wantLen, c.wantFirst)
			}
		})
	}
}

// TestFromMessages feeds the feed the events the real messages handler
// publishes, as the sidecar would deliver them, twice each.
func TestFromMessages(t *testing.T) {
	profiles := &profilesStub{}
	msgs := plugintest.Start(t, "../messages", plugintest.WithStore(), plugintest.WithService("profiles", profiles))
	feed := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("profiles", profiles))
	for _, text := range []string{"first", "second"} {
		if code, body := do(t, msgs.Client(), "POST", msgs.URL()+"/messages/9", `{"from":"1","text":"`+text+`"}`); code != http.StatusCreated {
			t.Fatalf("send: got %d %s, want 201", code, body)
		}
	}
	evs := msgs.Events(t.Context(), topicSent)
	for range 2 {
		for _, ev := range evs {
			if code, body := deliver(t, feed, ev.ID, ev.Topic, string(ev.Body)); code != http.StatusNoContent {
				t.Fatalf("event %d: got %d %s, want 204", ev.Seq, code, body)
			}
		}
	}
	code, body := do(t, feed.Client(), "GET", feed.URL()+"/feed/9", "")
	var got []Entry
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != http.StatusOK {
		t.Fatalf("GET /feed/9: got %d %s (%v)", code, body, err)
	}
	if len(got) != 2 || got[0].Text != "second" || got[1].Text != "first" || got[0].FromName != "ada" || got[0].MessageID == "" {
		t.Errorf("got %+v, want second then first, from ada, with message ids", got)
	}
}

// deliver posts an event to the handler as the sidecar does.
func deliver(t *testing.T, s *plugintest.Server, eventID, topic, body string) (int, string) {
	t.Helper()
	if topic == "" {
		topic = topicSent
	}
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/feed/events", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if eventID != "" {
		req.Header.Set(headerEventID, eventID)
	}
	req.Header.Set(headerEventTopic, topic)
	req.Header.Set("X-Griddle-Event-Publisher", "messages")
	return send(t, s.DeliveryClient(), req)
}

func do(t *testing.T, c *http.Client, method, u, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	return send(t, c, req)
}

func send(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSuffix(string(b), "\n")
}

// Dedupe markers older than markerTTL are cleared as new events are added;
// recent ones stay, and still stop a redelivery.
func TestMarkersExpire(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("profiles", &profilesStub{}))
	long := time.Now().Add(-markerTTL - time.Hour)
	err := s.Store().Transact(t.Context(), func(tx store.Tx) error {
		for i := range expirePerEvent + 2 {
			id, st := fmt.Sprintf("old-%d", i), stamp(long.Add(time.Duration(i)))
			if err := errors.Join(tx.Set(markerKey(id), []byte(st)), tx.Set(expiryKey(st, id), nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	markers := func() (n int) {
		t.Helper()
		err := s.Store().ReadTransact(t.Context(), func(tx store.ReadTx) error {
			kvs, err := tx.Range([]byte("e/"), []byte("e0"), store.RangeOptions{})
			n = len(kvs)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// 10 old markers: the first event clears 8 and adds its own (3 left),
	// the second clears the last 2 and adds its own.
	for i, want := range []int{3, 2} {
		if code, body := deliver(t, s, fmt.Sprintf("new-%d", i), "", event(fmt.Sprintf("m%d", i), "1", "hi")); code != http.StatusNoContent {
			t.Fatalf("deliver: %d %s", code, body)
		}
		if got := markers(); got != want {
			t.Errorf("after event %d: %d markers, want %d", i, got, want)
		}
	}
	if code, _ := deliver(t, s, "new-0", "", event("m0", "1", "hi")); code != http.StatusNoContent {
		t.Errorf("redelivery: %d, want 204", code)
	}
	code, body := do(t, s.Client(), "GET", s.URL()+"/feed/9", "")
	var got []Entry
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != http.StatusOK || len(got) != 2 {
		t.Errorf("GET /feed/9: %d, %d entries (%v), want 2: the redelivery added nothing", code, len(got), err)
	}
}
