package control_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/control"
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
	if err != nil || len(all) != 1 || all[0].Service != "feed" || all[0].Default["v1"] != 100 || all[0].Author != "operator" { // the token's name, not what the client says
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

func TestRoles(t *testing.T) {
	cli := etcdClient(t)
	tokens, err := control.ParseTokens("# who may change what\nop-secret\ndeployer dep-secret\n")
	if err != nil {
		t.Fatal(err)
	}
	s, err := control.New(control.Config{Etcd: cli, Prefix: prefix, Tokens: tokens, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	ctx := context.Background()
	op, dep := client.New(hs.URL, "op-secret", "alice", nil), client.New(hs.URL, "dep-secret", "ci", nil)
	_, err = dep.Apply(ctx, "feed", []byte(feedV1), 0, "")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden || !strings.Contains(ce.Message, "role deployer") {
		t.Fatalf("a deployer applying rules: %v, want 403 naming the role", err)
	}
	if _, err := op.Apply(ctx, "feed", []byte(feedV1), 0, ""); err != nil {
		t.Fatalf("an operator applying rules: %v", err)
	}
	register(t, cli, discovery.Instance{ID: "feed-v2-a", Service: "feed", Version: "v2", Address: "tcp://127.0.0.1:1"})
	if _, err := dep.StartCanary(ctx, canarySpec()); err != nil {
		t.Fatalf("a deployer starting a canary: %v", err)
	}
	if _, err := dep.Abort(ctx, "feed"); err != nil {
		t.Fatalf("a deployer aborting a canary: %v", err)
	}
}

func TestParseTokens(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []control.Token
		err        string
	}{
		{"bare token", "s3cret\n", []control.Token{{Name: "operator", Secret: "s3cret", Role: control.RoleOperator}}, ""},
		{"roles and comments", "# ops\noperator a\n\ndeployer b\n", []control.Token{{Name: "operator", Secret: "a", Role: control.RoleOperator}, {Name: "deployer", Secret: "b", Role: control.RoleDeployer}}, ""},
		{"named", "ann admin x\nbob viewer y\n", []control.Token{{Name: "ann", Secret: "x", Role: control.RoleAdmin}, {Name: "bob", Secret: "y", Role: control.RoleViewer}}, ""},
		{"unknown role", "boss x\n", nil, `line 1: control: invalid config: role "boss"`},
		{"four words", "ann deployer a b\n", nil, "line 1: control: invalid config: want TOKEN, ROLE TOKEN or NAME ROLE TOKEN"},
		{"a name twice", "ann admin x\nann viewer y\n", nil, `line 2: control: invalid config: the name "ann" given twice`},
		{"a token twice", "ann admin x\nbob viewer x\n", nil, "line 2: control: invalid config: a token given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := control.ParseTokens(tc.text)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, control.ErrConfig) {
					t.Fatalf("got %v, want an ErrConfig containing %q", err, tc.err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("token %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func FuzzParseTokens(f *testing.F) {
	f.Add("s3cret\n")
	f.Add("deployer x\n# c\noperator y")
	f.Fuzz(func(t *testing.T, text string) {
		ts, err := control.ParseTokens(text)
		if err != nil {
			return
		}
		for _, tok := range ts {
			if tok.Secret == "" || strings.ContainsAny(tok.Secret, " \t\n") || tok.Name == "" || (tok.Role != control.RoleViewer && tok.Role != control.RoleDeployer && tok.Role != control.RoleOperator && tok.Role != control.RoleAdmin) {
				t.Fatalf("accepted %+v from %q", tok, text)
			}
		}
	})
}
