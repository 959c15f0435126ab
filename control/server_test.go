package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control"
	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/client"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/etcdembed/etcdtest"
)

const (
	prefix = "/griddle/"
	token  = "s3cret"
	feedV1 = "service: feed\nversions:\n  - to: {v1: 100}\n"
	feedV2 = "service: feed\nversions:\n  - to: {v1: 90, v2: 10}\n"
)

func etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	srv := etcdtest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := srv.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newAPI serves a control plane over real HTTP (no controller).
func newAPI(t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	s, err := control.New(control.Config{Etcd: cli, Prefix: prefix, Token: token, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return hs.URL
}

func TestAuth(t *testing.T) {
	url := newAPI(t, etcdClient(t))
	for _, tc := range []struct {
		name   string
		header string
		want   int
		code   string
	}{
		{"no token", "", 401, api.CodeUnauthorized},
		{"not bearer", "Basic abc", 401, api.CodeUnauthorized},
		{"wrong token", "Bearer nope", 403, api.CodeForbidden},
		{"right token", "Bearer " + token, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPut, url+"/v1/rules/feed", strings.NewReader(feedV1))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			if tc.want == 200 {
				req.Header.Set("If-Match", "0")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e api.Error
			_ = json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != tc.want || e.Code != tc.code {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, e.Code, tc.want, tc.code)
			}
		})
	}
	// Reads need no token.
	if _, err := client.New(url, "", "", nil).Rules(context.Background(), "feed"); err != nil {
		t.Fatalf("read without token: %v", err)
	}
}

func TestRulesAPI(t *testing.T) {
	cli := etcdClient(t)
	url := newAPI(t, cli)
	ctx := context.Background()
	c := client.New(url, token, "alice", nil)
	if _, err := c.Rules(ctx, "feed"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("rules before any apply: got %v, want ErrNotFound", err)
	}
	a1, err := c.Apply(ctx, "feed", []byte(feedV1), 0, "first")
	if err != nil {
		t.Fatal(err)
	}

	// Two concurrent applies on the same revision: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			_, errs[i] = client.New(url, token, "op", nil).Apply(ctx, "feed", []byte(feedV2), a1.Revision, "")
		})
	}
	wg.Wait()
	var ce *client.Error
	switch {
	case errs[0] == nil && errors.As(errs[1], &ce), errs[1] == nil && errors.As(errs[0], &ce):
	default:
		t.Fatalf("got %v, want one success and one conflict", errs)
	}
	if ce.Status != 409 || !errors.Is(ce, client.ErrConflict) || ce.Revision <= a1.Revision ||
		!strings.Contains(ce.Message, "is stale") {
		t.Fatalf("conflict answer %+v", ce)
	}
	cur, err := c.Rules(ctx, "feed")
	if err != nil {
		t.Fatal(err)
	}

	// Invalid: 400 naming the field; the running rules stay.
	_, err = c.Apply(ctx, "feed", []byte("service: feed\nversions:\n  - to: {v1: 80}\n"), cur.Revision, "")
	if !errors.As(err, &ce) || ce.Status != 400 || ce.Field != "versions[0].to" {
		t.Fatalf("invalid apply: got %v (%+v), want 400 naming versions[0].to", err, ce)
	}
	_, err = c.Validate(ctx, "feed", []byte("service: other\nversions:\n  - to: {v1: 100}\n"))
	if !errors.As(err, &ce) || ce.Field != "service" {
		t.Fatalf("validate of another service's document: got %v, want field service", err)
	}
	if v, err := c.Validate(ctx, "feed", []byte(`{"service":"feed","versions":[{"to":{"v1":100}}]}`)); err != nil || !strings.Contains(v.YAML, "v1: 100") {
		t.Fatalf("validate JSON: %+v, %v", v, err)
	}
	if again, _ := c.Rules(ctx, "feed"); again.Revision != cur.Revision {
		t.Fatalf("rules moved from %d to %d", cur.Revision, again.Revision)
	}

	// Diff, history, rollback.
	d, err := c.Diff(ctx, "feed", []byte(feedV1))
	if err != nil || !strings.Contains(d.Diff, "@@ -1,3 +1,3 @@\n service: feed\n versions:\n-  - to: {v1: 90, v2: 10}\n+  - to: {v1: 100}\n") || d.Revision != cur.Revision {
		t.Fatalf("diff = %+v, %v", d, err)
	}
	h, err := c.History(ctx, "feed", 0)
	if err != nil || len(h.Entries) != 2 || h.Entries[1].Comment != "first" || h.Entries[1].Author != "operator" {
		t.Fatalf("history = %+v, %v", h, err)
	}
	if _, err := c.Rollback(ctx, "feed", a1.Revision, a1.Revision); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("rollback on a stale revision: got %v, want conflict", err)
	}
	rb, err := c.Rollback(ctx, "feed", a1.Revision, cur.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := c.Rules(ctx, "feed"); now.Revision != rb.Revision || now.Document.Versions[0].To["v1"] != 100 {
		t.Fatalf("after rollback: %+v", now)
	}

	// An unexpected failure shows an id, not Go error text.
	resp, err := http.Get(url + "/v1/rules/feed/history?limit=x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"field": "limit"`) {
		t.Fatalf("bad limit: %d %s", resp.StatusCode, b)
	}
}

func TestStatus(t *testing.T) {
	cli := etcdClient(t)
	url := newAPI(t, cli)
	ctx := context.Background()
	c := client.New(url, token, "alice", nil)
	a, err := c.Apply(ctx, "feed", []byte(feedV1), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, v any) {
		b, _ := json.Marshal(v)
		if _, err := cli.Put(ctx, key, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	upToDate := discovery.Instance{ID: "a", Service: "feed", Version: "v1", Address: "tcp://x:1", RuleRevision: a.Revision}
	behind := discovery.Instance{ID: "b", Service: "feed", Version: "v1", Address: "tcp://x:2", RuleRevision: a.Revision - 1}
	put(discovery.InstanceKey(prefix, upToDate), upToDate)
	put(discovery.InstanceKey(prefix, behind), behind)
	put(discovery.EdgeKey(prefix, "e1"), discovery.Edge{ID: "e1", Address: "127.0.0.1:8080", RuleRevision: a.Revision})
	st, err := c.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Services) != 1 || st.Services[0].RuleRevision != a.Revision || len(st.Services[0].Versions) != 1 {
		t.Fatalf("status = %+v", st)
	}
	ins := st.Services[0].Versions[0].Instances
	if len(ins) != 2 || ins[0].Behind || !ins[1].Behind {
		t.Fatalf("instances = %+v, want a current, b behind", ins)
	}
	if len(st.Edges) != 1 || st.Edges[0].Behind {
		t.Fatalf("edges = %+v", st.Edges)
	}
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`<a href="/services/feed">feed</a>`, "(1 behind)", "e1", "100%"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	resp, err = http.Get(url + "/services/feed")
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"tcp://x:2", "(behind)", "catch-all", "v1 100%", `id="editor"`, "History"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("service page lacks %q", want)
		}
	}
}

func TestLeaderElection(t *testing.T) {
	cli := etcdClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type replica struct {
		e      *control.Elector
		leads  chan struct{}
		losses chan struct{}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	mk := func(id string) *replica {
		r := &replica{e: control.NewElector(cli, prefix, id, time.Second, quiet()),
			leads: make(chan struct{}, 10), losses: make(chan struct{}, 10)}
		wg.Go(func() {
			_ = r.e.Run(ctx, func(lctx context.Context, _ clientv3.Cmp) {
				r.leads <- struct{}{}
				<-lctx.Done()
				r.losses <- struct{}{}
			})
		})
		return r
	}
	a, b := mk("a"), mk("b")
	var leader, other *replica
	select {
	case <-a.leads:
		leader, other = a, b
	case <-b.leads:
		leader, other = b, a
	case <-time.After(10 * time.Second):
		t.Fatal("no leader within 10s")
	}
	time.Sleep(300 * time.Millisecond)
	if other.e.Leading() || !leader.e.Leading() {
		t.Fatalf("leading: a %v, b %v; want exactly one", a.e.Leading(), b.e.Leading())
	}
	// Kill the leader's session: revoke its lease behind its back.
	resp, err := cli.Get(ctx, control.ElectionKey(prefix), clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("leader key: %v", err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-leader.losses:
	case <-time.After(10 * time.Second):
		t.Fatal("the old leader did not stop leading")
	}
	select {
	case <-other.leads:
	case <-time.After(10 * time.Second):
		t.Fatal("the other replica did not take over")
	}
	if id, _ := other.e.Leader(ctx); (other == a && id != "a") || (other == b && id != "b") {
		t.Fatalf("Leader() = %q", id)
	}
}

// TestServerRunsCanary runs a whole replica (HTTP + election + controller)
// and starts a canary through the API; with no traffic it waits at 5%.
func TestServerRunsCanary(t *testing.T) {
	cli := etcdClient(t)
	s, err := control.New(control.Config{Etcd: cli, Prefix: prefix, Token: token, Logger: quiet(),
		Poll: 50 * time.Millisecond, SessionTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	c := client.New("http://"+ln.Addr().String(), token, "alice", nil)
	if _, err := c.Apply(ctx, "feed", []byte(feedV1), 0, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartCanary(ctx, canarySpec()); !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "no live instance") {
		t.Fatalf("canary to a version with no instance: got %v, want refused", err)
	}
	register(t, cli, discovery.Instance{ID: "feed-v2-a", Service: "feed", Version: "v2", Address: "tcp://127.0.0.1:1"})
	_, err = c.StartCanary(ctx, canarySpec())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := c.Rules(ctx, "feed")
		if err == nil && r.Document.Versions[0].To["v2"] == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader did not apply the first step: %+v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !s.Leading() {
		t.Fatal("the only replica is not leading")
	}
	k, err := c.Abort(ctx, "feed")
	if err != nil || k.State != "aborted" {
		t.Fatalf("abort: %+v %v", k, err)
	}
	if _, err := c.Abort(ctx, "feed"); !errors.Is(err, client.ErrCanary) {
		t.Fatalf("second abort: got %v, want ErrCanary", err)
	}
}

// register puts an instance record in etcd as a sidecar would (no lease).
func register(t *testing.T, cli *clientv3.Client, in discovery.Instance) {
	t.Helper()
	b, _ := json.Marshal(in)
	if _, err := cli.Put(context.Background(), discovery.InstanceKey(prefix, in), string(b)); err != nil {
		t.Fatal(err)
	}
}
