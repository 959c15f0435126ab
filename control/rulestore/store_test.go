package rulestore_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/etcdembed/etcdtest"
	"github.com/griddle-mesh/griddle/internal/routing"
)

const prefix = "/griddle/"

func newStore(t *testing.T) (*rulestore.Store, *clientv3.Client) {
	t.Helper()
	srv := etcdtest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := srv.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return rulestore.New(cli, prefix, nil), cli
}

func doc(t *testing.T, y string) *routing.Document {
	t.Helper()
	d, err := routing.Parse([]byte(y))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return d
}

func weighted(t *testing.T, v1, v2 int) *routing.Document {
	t.Helper()
	to := map[string]int{}
	if v1 > 0 {
		to["v1"] = v1
	}
	if v2 > 0 {
		to["v2"] = v2
	}
	return &routing.Document{Service: "feed", Versions: []routing.VersionRule{{To: to}}}
}

func TestConcurrentApplyOneWins(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	base, err := s.Apply(ctx, weighted(t, 100, 0), 0, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	revs := make([]int64, 2)
	for i := range 2 {
		wg.Go(func() { revs[i], errs[i] = s.Apply(ctx, weighted(t, 90-10*i, 10+10*i), base, "op") })
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, rulestore.ErrConflict):
			var ce *rulestore.ConflictError
			if !errors.As(err, &ce) || ce.Expected != base || ce.Current != revs[1-i] {
				t.Errorf("conflict error %v: want expected %d, current %d", err, base, revs[1-i])
			}
		default:
			t.Errorf("apply %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("got %d winners, want exactly 1 (errors %v)", wins, errs)
	}
	// The loser's write is not lost silently: history has base and the winner only.
	h, err := s.History(ctx, "feed", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 {
		t.Fatalf("history has %d entries, want 2", len(h))
	}
	// Creating again with 0 conflicts too.
	if _, err := s.Apply(ctx, weighted(t, 100, 0), 0, "bob"); !errors.Is(err, rulestore.ErrConflict) {
		t.Fatalf("apply on existing rules with revision 0: got %v, want ErrConflict", err)
	}
}

func TestInvalidRefusedAndRulesUntouched(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	rev, err := s.Apply(ctx, weighted(t, 100, 0), 0, "alice")
	if err != nil {
		t.Fatal(err)
	}
	bad := weighted(t, 80, 10)
	_, err = s.Apply(ctx, bad, rev, "alice")
	var fe *routing.FieldError
	if !errors.Is(err, routing.ErrInvalid) || !errors.As(err, &fe) || fe.Field != "versions[0].to" {
		t.Fatalf("got %v, want a routing.FieldError naming versions[0].to", err)
	}
	got, err := s.Get(ctx, "feed")
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != rev || got.Document.Versions[0].To["v1"] != 100 {
		t.Fatalf("rules changed: revision %d, %v; want %d, v1 100", got.Revision, got.Document.Versions[0].To, rev)
	}
	if _, err := s.Get(ctx, "Bad/Name"); !errors.Is(err, routing.ErrInvalid) {
		t.Fatalf("get of bad service name: got %v, want ErrInvalid", err)
	}
}

func TestHistoryRollbackDiff(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	r1, err := s.Apply(ctx, weighted(t, 100, 0), 0, "alice", rulestore.WithComment("first"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Apply(ctx, weighted(t, 90, 10), r1, "bob")
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a crash right after the transaction: the new revision's own
	// history entry is missing; History still shows it, and the next Apply
	// settles it.
	if _, err := cli.Delete(ctx, rulestore.HistoryKey(prefix, "feed", r2)); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, "feed", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Revision != r2 || h[1].Revision != r1 || h[1].Comment != "first" || h[0].Author != "bob" {
		t.Fatalf("history = %+v, want r%d by bob then r%d 'first'", h, r2, r1)
	}
	r3, err := s.Rollback(ctx, "feed", r1, r2, "carol")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, rulestore.HistoryKey(prefix, "feed", r2))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("history entry of r%d not settled by the next apply: %v", r2, err)
	}
	cur, err := s.Get(ctx, "feed")
	if err != nil {
		t.Fatal(err)
	}
	if cur.Revision != r3 || cur.Document.Versions[0].To["v1"] != 100 || !strings.Contains(cur.Comment, "rollback") {
		t.Fatalf("after rollback: %+v", cur)
	}
	h, err = s.History(ctx, "feed", 2)
	if err != nil || len(h) != 2 || h[0].Revision != r3 || h[1].Revision != r2 {
		t.Fatalf("history limit 2 = %+v, %v", h, err)
	}
	if _, err := s.Rollback(ctx, "feed", 999999, r3, "carol"); !errors.Is(err, rulestore.ErrNotFound) {
		t.Fatalf("rollback to unknown revision: got %v, want ErrNotFound", err)
	}
	if _, err := s.Rollback(ctx, "feed", r2, r2, "carol"); !errors.Is(err, rulestore.ErrConflict) {
		t.Fatalf("rollback on stale revision: got %v, want ErrConflict", err)
	}

	d, err := rulestore.Diff(weighted(t, 100, 0), weighted(t, 90, 10))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--- current", "+++ proposed", "-    v1: 100", "+    v1: 90", "+    v2: 10", " service: feed"} {
		if !strings.Contains(d, want+"\n") {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	if d, _ := rulestore.Diff(weighted(t, 100, 0), weighted(t, 100, 0)); d != "" {
		t.Errorf("diff of equal documents = %q, want empty", d)
	}
	// The stored value is the document as JSON, for the data plane.
	resp, err = cli.Get(ctx, rulestore.RuleKey(prefix, "feed"))
	if err != nil {
		t.Fatal(err)
	}
	var stored routing.Document
	if err := json.Unmarshal(resp.Kvs[0].Value, &stored); err != nil || stored.Service != "feed" {
		t.Fatalf("stored value %s: %v", resp.Kvs[0].Value, err)
	}
}

func TestGuard(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/guard", "x"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Apply(ctx, weighted(t, 100, 0), 0, "a",
		rulestore.WithGuard(clientv3.Compare(clientv3.Value("/guard"), "=", "y")))
	if !errors.Is(err, rulestore.ErrGuard) {
		t.Fatalf("got %v, want ErrGuard", err)
	}
	rev, err := s.Apply(ctx, weighted(t, 100, 0), 0, "a",
		rulestore.WithGuard(clientv3.Compare(clientv3.Value("/guard"), "=", "x")),
		rulestore.WithOps(clientv3.OpPut("/side", "z")))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/side")
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision != rev {
		t.Fatalf("side write not in the same transaction: %v %v", resp, err)
	}
}
