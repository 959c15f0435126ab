package control_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/client"
	"github.com/griddle-mesh/griddle/internal/discovery"
)

const authoredFeed = `# feed: owned by the timeline team
service: feed
versions:
  - to: {v1: 100}   # everyone on v1
`

func TestAuthoredTextAndNoOps(t *testing.T) {
	url := newAPI(t, etcdClient(t))
	ctx := context.Background()
	c := client.New(url, token, "alice", nil)
	a, err := c.Apply(ctx, "feed", []byte(authoredFeed), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Rules(ctx, "feed")
	if err != nil || r.Source != authoredFeed {
		t.Fatalf("source = %q, %v; want the document as applied", r.Source, err)
	}
	for _, tc := range []struct {
		name      string
		doc       string
		unchanged bool
	}{
		{"same text", authoredFeed, true},
		{"reformatted, same comments", strings.Replace(authoredFeed, "{v1: 100}", "{ v1: 100 }", 1), true},
		{"comment edited", strings.Replace(authoredFeed, "everyone", "all", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur, _ := c.Rules(ctx, "feed")
			got, err := c.Apply(ctx, "feed", []byte(tc.doc), cur.Revision, "")
			if err != nil {
				t.Fatal(err)
			}
			if got.Unchanged != tc.unchanged || (tc.unchanged && got.Revision != cur.Revision) {
				t.Fatalf("apply = %+v (current %d), want unchanged %v", got, cur.Revision, tc.unchanged)
			}
		})
	}
	h, err := c.History(ctx, "feed", 0)
	if err != nil || len(h.Entries) != 2 || h.Entries[1].Revision != a.Revision || h.Entries[1].Source != authoredFeed {
		t.Fatalf("history %+v, %v: want two revisions, the first with its source", h, err)
	}
	d, err := c.Diff(ctx, "feed", []byte(authoredFeed))
	if err != nil || !strings.Contains(d.Diff, "-  - to: {v1: 100}   # all on v1\n+  - to: {v1: 100}   # everyone on v1\n") {
		t.Fatalf("diff %q, %v", d.Diff, err)
	}
	all, err := c.RulesList(ctx)
	if err != nil || len(all) != 1 || all[0].Service != "feed" || all[0].Default["v1"] != 100 || all[0].Author != "alice" {
		t.Fatalf("list %+v, %v", all, err)
	}
}

func TestManualChangeDuringCanaryRefused(t *testing.T) {
	cli := etcdClient(t)
	url := newAPI(t, cli)
	ctx := context.Background()
	c := client.New(url, token, "alice", nil)
	a, err := c.Apply(ctx, "feed", []byte(feedV1), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	register(t, cli, discovery.Instance{ID: "feed-v2-a", Service: "feed", Version: "v2", Address: "tcp://127.0.0.1:1"})
	if _, err := c.StartCanary(ctx, canarySpec()); err != nil {
		t.Fatal(err)
	}
	_, err = c.Apply(ctx, "feed", []byte(feedV2), a.Revision, "")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusConflict || ce.Code != api.CodeRunning ||
		!strings.Contains(ce.Message, "steered by its canary") || !strings.Contains(ce.Message, "griddle canary abort feed") {
		t.Fatalf("apply during a canary: %v, want 409 canary_running telling how to end it", err)
	}
	if _, err := c.Rollback(ctx, "feed", a.Revision, a.Revision); !errors.Is(err, client.ErrCanary) {
		t.Fatalf("rollback during a canary: %v, want refused", err)
	}
	if _, err := c.Abort(ctx, "feed"); err != nil {
		t.Fatal(err)
	}
	cur, _ := c.Rules(ctx, "feed")
	if _, err := c.Apply(ctx, "feed", []byte(feedV2), cur.Revision, ""); err != nil {
		t.Fatalf("apply after the canary ended: %v", err)
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	url := newAPI(t, etcdClient(t))
	get := func(path string) (int, string) {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || !strings.HasPrefix(body, "ok") {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	get("/v1/rules/feed") // a 404, counted
	code, body := get("/metrics")
	for _, want := range []string{
		`griddle_control_http_requests_total{code="404",route="GET /v1/rules/{service}"} 1`,
		`griddle_control_leader 0`,
		`griddle_control_http_request_duration_seconds_bucket`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
}
