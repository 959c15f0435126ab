package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/griddle-mesh/griddle/internal/events/eventlog"
	"github.com/griddle-mesh/griddle/internal/store"
)

func TestWriteTargeters(t *testing.T) {
	for _, tc := range []struct {
		scenario         string
		minPost, maxPost int // of 2,000 requests
	}{
		{ScenarioMessages, 2000, 2000},
		{ScenarioMixed, 120, 280}, // 10%, give or take
	} {
		tr := targeter(tc.scenario, "http://h", 50)
		posts := 0
		for range 2000 {
			var tg vegeta.Target
			if err := tr(&tg); err != nil {
				t.Fatal(err)
			}
			switch {
			case tg.Method == http.MethodPost && strings.HasPrefix(tg.URL, "http://h/messages/"):
				posts++
				var body struct{ From, Text string }
				if err := json.Unmarshal(tg.Body, &body); err != nil || body.From == "" || body.Text == "" || tg.Header.Get("Content-Type") != "application/json" {
					t.Fatalf("%s: POST body %q (%v), header %v: want a JSON message", tc.scenario, tg.Body, err, tg.Header)
				}
			case tg.Method == http.MethodGet && strings.HasPrefix(tg.URL, "http://h/profiles/") && tg.Body == nil:
			default:
				t.Fatalf("%s: unexpected target %s %s", tc.scenario, tg.Method, tg.URL)
			}
		}
		if posts < tc.minPost || posts > tc.maxPost {
			t.Errorf("%s: %d writes of 2000, want %d to %d", tc.scenario, posts, tc.minPost, tc.maxPost)
		}
	}
}

// The direct baseline does the messages service's work: an unknown
// recipient is refused, a message is stored and its event appended in one
// transaction, and GET lists it.
func TestDirectMessages(t *testing.T) {
	r, backend, err := openProfiles(t.Context(), t.TempDir(), 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	d, err := directMessagesOf(t.Context(), backend, r)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /messages/{to}", d.send)
	mux.HandleFunc("GET /messages/{user}", d.list)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	post := func(to string) int {
		t.Helper()
		resp, err := http.Post(srv.URL+"/messages/"+to, "application/json", strings.NewReader(`{"from":"1","text":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		to   string
		want int
	}{{"3", http.StatusCreated}, {"3", http.StatusCreated}, {"9", http.StatusBadRequest}, {"x", http.StatusBadRequest}} {
		if got := post(tc.to); got != tc.want {
			t.Errorf("POST /messages/%s = %d, want %d", tc.to, got, tc.want)
		}
	}
	resp, err := http.Get(srv.URL + "/messages/3")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil || len(list) != 2 {
		t.Errorf("GET /messages/3: %d messages (%v), want 2", len(list), err)
	}
	var evs []eventlog.Event
	err = d.messages.ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		evs, err = eventlog.ScanTx(tx, "messages", topicSent, 0, 0)
		return err
	})
	if err != nil || len(evs) != 2 || !strings.Contains(string(evs[0].Body), `"to":"3"`) {
		t.Errorf("log: %d events (%v), want 2 messages to 3: %s", len(evs), err, fmt.Sprint(evs))
	}
}
