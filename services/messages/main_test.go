package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/plugins/plugintest"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// fakeProfiles knows users 1 to 99; user 500 makes it fail.
var fakeProfiles = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch id := strings.TrimPrefix(r.URL.Path, "/profiles/"); {
	case id == "500":
		http.Error(w, "boom", http.StatusInternalServerError)
	case len(id) <= 2 && validUser(id):
		fmt.Fprintf(w, `{"id":%s,"name":"user-%s"}`, id, id)
	default:
		http.Error(w, `{"error":"no such profile"}`, http.StatusNotFound)
	}
})

func TestSendStoresAndPublishes(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("profiles", fakeProfiles))
	before := time.Now().UTC()
	code, body := do(t, s.Client(), "POST", s.URL()+"/messages/2", `{"from":"1","text":"hej då"}`)
	if code != http.StatusCreated {
		t.Fatalf("got %d %s, want 201", code, body)
	}
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(body), &created); err != nil || len(created.ID) != 24 {
		t.Fatalf("got %s (%v), want {\"id\": 24 hex digits}", body, err)
	}

	// Stored under m/<to>/<id>.
	var stored []byte
	if err := s.Store().ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		stored, err = tx.Get([]byte("m/2/" + created.ID))
		return err
	}); err != nil || stored == nil {
		t.Fatalf("m/2/%s: got %q, %v; want the message", created.ID, stored, err)
	}
	var m Message
	if err := json.Unmarshal(stored, &m); err != nil {
		t.Fatalf("stored %s: %v", stored, err)
	}
	if m.ID != created.ID || m.From != "1" || m.To != "2" || m.Text != "hej då" || m.At.Before(before) || time.Since(m.At) > time.Minute {
		t.Errorf("stored %+v, want id %s from 1 to 2 text %q at about %v", m, created.ID, "hej då", before)
	}

	// Published once on message.sent, with the stored message as its body.
	evs := s.Events(t.Context(), TopicSent)
	if len(evs) != 1 {
		t.Fatalf("got %d events on %s, want 1", len(evs), TopicSent)
	}
	ev := evs[0]
	if string(ev.Body) != string(stored) || ev.ContentType != "application/json" || ev.Publisher != "messages" || ev.Seq != 1 || ev.ID == "" {
		t.Errorf("got event %+v (body %s), want seq 1 by messages, application/json, body %s", ev, ev.Body, stored)
	}

	// Served to the recipient.
	code, body = do(t, s.Client(), "GET", s.URL()+"/messages/2", "")
	if want := "[" + string(stored) + "]"; code != http.StatusOK || body != want {
		t.Errorf("GET /messages/2: got %d %s, want 200 %s", code, body, want)
	}
}

func TestSendRejects(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("profiles", fakeProfiles))
	const badBody = `{"error":"body: want one JSON object {\"from\", \"text\"}"}`
	for _, c := range []struct {
		name, path, body string
		wantCode         int
		wantBody         string
	}{
		{"unknown recipient", "/messages/404", `{"from":"1","text":"hi"}`, 400, `{"error":"unknown recipient"}`},
		{"profiles failing", "/messages/500", `{"from":"1","text":"hi"}`, 502, `{"error":"profiles service failed"}`},
		{"recipient not an id", "/messages/bob", `{"from":"1","text":"hi"}`, 400, `{"error":"to: want a positive integer user id"}`},
		{"recipient zero", "/messages/0", `{"from":"1","text":"hi"}`, 400, `{"error":"to: want a positive integer user id"}`},
		{"recipient leading zero", "/messages/02", `{"from":"1","text":"hi"}`, 400, `{"error":"to: want a positive integer user id"}`},
		{"bad json", "/messages/2", `{"from":`, 400, badBody},
		{"unknown field", "/messages/2", `{"from":"1","text":"hi","to":"3"}`, 400, badBody},
		{"from as number", "/messages/2", `{"from":1,"text":"hi"}`, 400, badBody},
		{"trailing data", "/messages/2", `{"from":"1","text":"hi"} {}`, 400, badBody},
		{"no from", "/messages/2", `{"text":"hi"}`, 400, `{"error":"from: want a positive integer user id"}`},
		{"from not an id", "/messages/2", `{"from":"x","text":"hi"}`, 400, `{"error":"from: want a positive integer user id"}`},
		{"empty text", "/messages/2", `{"from":"1","text":""}`, 400, `{"error":"text: want 1 to 2000 characters"}`},
		{"text too long", "/messages/2", `{"from":"1","text":"` + strings.Repeat("é", maxTextLen+1) + `"}`, 400, `{"error":"text: want 1 to 2000 characters"}`},
		{"body too large", "/messages/2", `{"from":"1","text":"` + strings.Repeat("a", maxBody) + `"}`, 413, `{"error":"body too large"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := do(t, s.Client(), "POST", s.URL()+c.path, c.body)
			if code != c.wantCode || body != c.wantBody {
				t.Errorf("got %d %s, want %d %s", code, body, c.wantCode, c.wantBody)
			}
		})
	}
	if evs := s.Events(t.Context(), TopicSent); len(evs) != 0 {
		t.Errorf("got %d events after rejected sends, want none", len(evs))
	}
	if code, body := do(t, s.Client(), "POST", s.URL()+"/messages/2", `{"from":"1","text":"`+strings.Repeat("é", maxTextLen)+`"}`); code != http.StatusCreated {
		t.Errorf("longest text: got %d %s, want 201", code, body)
	}
}

func TestListNewestFirst(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("profiles", fakeProfiles))
	const sent = pageSize + 2
	for i := range sent {
		if code, body := do(t, s.Client(), "POST", s.URL()+"/messages/3", fmt.Sprintf(`{"from":"1","text":"m%d"}`, i)); code != http.StatusCreated {
			t.Fatalf("send %d: got %d %s, want 201", i, code, body)
		}
	}
	if code, body := do(t, s.Client(), "POST", s.URL()+"/messages/4", `{"from":"1","text":"other"}`); code != http.StatusCreated {
		t.Fatalf("send to 4: got %d %s, want 201", code, body)
	}
	if n := len(s.Events(t.Context(), TopicSent)); n != sent+1 {
		t.Errorf("got %d events, want %d", n, sent+1)
	}
	for _, c := range []struct {
		name, user string
		wantTexts  []string
	}{
		{"newest page", "3", texts(sent-1, sent-pageSize)},
		{"one", "4", []string{"other"}},
		{"none", "5", []string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := do(t, s.Client(), "GET", s.URL()+"/messages/"+c.user, "")
			var got []Message
			if err := json.Unmarshal([]byte(body), &got); err != nil || code != http.StatusOK || got == nil {
				t.Fatalf("got %d %s (%v), want 200 and a JSON array", code, body, err)
			}
			gotTexts := []string{}
			for _, m := range got {
				gotTexts = append(gotTexts, m.Text)
				if m.To != c.user {
					t.Errorf("message %s to %s in %s's list", m.ID, m.To, c.user)
				}
			}
			if fmt.Sprint(gotTexts) != fmt.Sprint(c.wantTexts) {
				t.Errorf("got %v, want %v", gotTexts, c.wantTexts)
			}
		})
	}
	if code, body := do(t, s.Client(), "GET", s.URL()+"/messages/x", ""); code != http.StatusBadRequest {
		t.Errorf("GET /messages/x: got %d %s, want 400", code, body)
	}
}

// texts returns "m<from>" down to "m<to>".
func texts(from, to int) []string {
	var out []string
	for i := from; i >= to; i-- {
		out = append(out, fmt.Sprintf("m%d", i))
	}
	return out
}

func do(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
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
