package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// TestRetention runs retention in the mesh: the messages sidecar trims
// message.sent to its --retain cap; while feed (a registered subscriber) is
// down, a soft cap stops at feed's cursor, and once feed is back and has
// the events, the log comes down to the cap. A hard cap does not wait:
// feed, back, skips what was trimmed, counts it in its metrics and logs it.
func TestRetention(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/")
	soft := []string{"--http-prefix", "/messages/", "--retain", "message.sent=events:20"}
	msgs := m.Sidecar("messages", "v1", soft...)
	feed := m.Sidecar("feed", "v1", "--http-prefix", "/feed/")
	e := m.Edge()
	base := "http://" + e.Addr
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/profiles/1", "/messages/1", "/feed/1"} {
		waitRoute(t, base+path)
	}
	for _, id := range []string{"1", "2"} {
		if status, body := do("PUT", "/profiles/"+id, `{"name":"user `+id+`"}`); status != 201 {
			t.Fatalf("create profile %s: %d %s", id, status, body)
		}
	}
	sent := 0
	send := func(n int) {
		t.Helper()
		for range n {
			sent++
			if status, body := do("POST", "/messages/2", fmt.Sprintf(`{"from":"1","text":"message %d"}`, sent)); status != 201 {
				t.Fatalf("message %d: %d %s", sent, status, body)
			}
		}
	}
	feedLen := func() int {
		status, body := do("GET", "/feed/2", "")
		var entries []json.RawMessage
		if status != 200 || json.Unmarshal([]byte(body), &entries) != nil {
			return -1
		}
		return len(entries)
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for: %s\nmessages' metrics:\n%s", what, grepLines(string(metricsOf(t, msgs)), "griddle_events"))
			}
		}
	}
	logEvents := func() int { return seriesValue(metricsOf(t, msgs), `griddle_events_log_events{topic="message.sent"}`) }

	send(30)
	waitUntil("feed has the 30 messages", func() bool { return feedLen() == 30 })
	waitUntil("the log trimmed to its cap of 20", func() bool { return logEvents() == 20 })

	// Feed down: the soft cap keeps what feed has not received.
	if err := feed.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	send(30)
	waitUntil("a trim that stops at feed's cursor", func() bool {
		return seriesValue(metricsOf(t, msgs), `griddle_events_trimmed_total{topic="message.sent"}`) >= 30 && logEvents() == 30
	})
	time.Sleep(1500 * time.Millisecond) // more trims: they must not pass the cursor
	if n := logEvents(); n != 30 {
		t.Fatalf("with feed down the log holds %d events, want the 30 it has not received", n)
	}
	feed = m.Sidecar("feed", "v1", "--http-prefix", "/feed/")
	waitUntil("feed, back, has all 50 entries its page shows", func() bool { return feedLen() == 50 })
	waitUntil("the log back at its cap once feed has the events", func() bool { return logEvents() == 20 })
	if n := seriesValue(metricsOf(t, feed), `griddle_events_skipped_total{publisher="messages",topic="message.sent"}`); n > 0 {
		t.Errorf("feed skipped %d times under a soft cap, want none", n)
	}

	// A hard cap trims what feed has not received; feed says it skipped.
	if err := feed.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := msgs.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	msgs = m.Sidecar("messages", "v1", "--http-prefix", "/messages/", "--retain", "message.sent=events:20,hard")
	waitRoute(t, base+"/messages/1")
	send(30)
	waitUntil("the hard cap held with feed down", func() bool { return logEvents() == 20 })
	feed = m.Sidecar("feed", "v1", "--http-prefix", "/feed/")
	waitUntil("feed counts the skip", func() bool {
		return seriesValue(metricsOf(t, feed), `griddle_events_skipped_total{publisher="messages",topic="message.sent"}`) == 1
	})
	if !strings.Contains(feed.Log(), "going on after them") {
		t.Errorf("feed's sidecar did not log the skip:\n%s", feed.Log())
	}
	// The next event delivered carries the skip to the handler, which logs it.
	send(1)
	waitUntil("feed's handler told of the skip", func() bool { return strings.Contains(feed.Log(), "skipped_to_seq") })
}

func metricsOf(t *testing.T, p *meshtest.Proc) []byte {
	t.Helper()
	resp, err := client.Get("http://" + p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// seriesValue is the value of the series named exactly by series (name
// and labels as /metrics writes them), -1 when it is absent.
func seriesValue(metrics []byte, series string) int {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindSubmatch(metrics)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(bytes.TrimSpace(m[1])), 64)
	if err != nil {
		return -1
	}
	return int(v)
}
