package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// TestApp runs the example app through the edge: every service in its own
// sidecar process, state in a `griddle store` process, events from messages
// to feed. Create a profile, read it back, send a message, see it in the
// recipient's feed.
func TestApp(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/")
	msgs := m.Sidecar("messages", "v1", "--http-prefix", "/messages/")
	m.Sidecar("feed", "v1", "--http-prefix", "/feed/") // feed's handler declares its subscription
	e := m.Edge()
	base := "http://" + e.Addr

	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for path := range map[string]bool{"/profiles/1": true, "/messages/1": true, "/feed/1": true} {
		waitRoute(t, base+path)
	}

	if status, body := do("PUT", "/profiles/1", `{"name":"Ann","city":"Stockholm"}`); status != 201 {
		t.Fatalf("create Ann: %d %s", status, body)
	}
	if status, body := do("PUT", "/profiles/2", `{"name":"Bo"}`); status != 201 {
		t.Fatalf("create Bo: %d %s", status, body)
	}
	status, body := do("GET", "/profiles/1", "")
	var p struct {
		Name string `json:"name"`
		City string `json:"city"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &p) != nil || p.Name != "Ann" || p.City != "Stockholm" {
		t.Fatalf("read Ann back: %d %s", status, body)
	}
	if status, body := do("POST", "/messages/2", `{"from":"1","text":"pancakes on Sunday?"}`); status != 201 {
		t.Fatalf("send a message: %d %s", status, body)
	}
	if status, body := do("POST", "/messages/99", `{"from":"1","text":"anyone?"}`); status != 400 {
		t.Errorf("message to an unknown user: %d %s, want 400", status, body)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body := do("GET", "/feed/2", "")
		var feed []struct {
			FromName string `json:"fromName"`
			Text     string `json:"text"`
		}
		if status == 200 && json.Unmarshal([]byte(body), &feed) == nil && len(feed) == 1 {
			if feed[0].FromName != "Ann" || feed[0].Text != "pancakes on Sunday?" {
				t.Fatalf("feed of Bo: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message never reached Bo's feed: %d %s", status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The messages sidecar counts the store's commits and the conflicts the
	// event log caused: none.
	resp, err := client.Get("http://" + msgs.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"griddle_events_log_conflicts_total 0", "griddle_events_publish_retries_total 0"} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("messages sidecar /metrics lacks %q", want)
		}
	}
	// The commits run in the griddle store process this mesh uses, which
	// counts them; the sidecar has the series, at 0.
	if !regexp.MustCompile(`(?m)^griddle_store_commits_total \d`).Match(metrics) {
		t.Errorf("messages sidecar /metrics lacks the store's commits:\n%s", grepLines(string(metrics), "griddle_store"))
	}
}

// grepLines are the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitRoute waits until the edge routes path to a live instance (any answer
// but 404 and 502).
func waitRoute(t *testing.T, url string) {
	t.Helper()
	for start := time.Now(); ; {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 && resp.StatusCode != 502 || resp.Header.Get("X-Griddle-Error-Id") == "" {
				return
			}
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s is not routed", url)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
