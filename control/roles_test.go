package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/control"
	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/client"
)

const feedPolicy = "service: feed\nversions:\n  - to: {v1: 100}\nauthorization:\n  allow: [{from: edge}]\n"

// TestNamedTokens: the history names the token's holder whatever the
// client says; an operator may not change an authorization policy, an
// admin may; a viewer may not write; the scheme's case does not matter;
// with private reads a read needs a token too.
func TestNamedTokens(t *testing.T) {
	cli := etcdClient(t)
	tokens, err := control.ParseTokens("ann admin ann-secret\nbob operator bob-secret\nvic viewer vic-secret\n")
	if err != nil {
		t.Fatal(err)
	}
	s, err := control.New(control.Config{Etcd: cli, Prefix: prefix, Tokens: tokens, Logger: quiet(), PrivateReads: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	ctx := context.Background()
	// bob's client claims to be mallory: the history says bob.
	ann, bob, vic := client.New(hs.URL, "ann-secret", "ann", nil), client.New(hs.URL, "bob-secret", "mallory", nil), client.New(hs.URL, "vic-secret", "vic", nil)

	a1, err := bob.Apply(ctx, "feed", []byte(feedV1), 0, "first")
	if err != nil {
		t.Fatalf("an operator applying rules: %v", err)
	}
	h, err := vic.History(ctx, "feed", 0)
	if err != nil || len(h.Entries) != 1 || h.Entries[0].Author != "bob" {
		t.Fatalf("history %+v, %v: want bob as the author", h, err)
	}
	var ce *client.Error
	if _, err := bob.Apply(ctx, "feed", []byte(feedPolicy), a1.Revision, ""); !errors.As(err, &ce) || ce.Status != 403 || ce.Field != "authorization" {
		t.Errorf("an operator adding an authorization policy: %v, want 403 on authorization", err)
	}
	a2, err := ann.Apply(ctx, "feed", []byte(feedPolicy), a1.Revision, "lock down")
	if err != nil {
		t.Fatalf("an admin adding an authorization policy: %v", err)
	}
	if _, err := bob.Rollback(ctx, "feed", a1.Revision, a2.Revision); !errors.As(err, &ce) || ce.Status != 403 {
		t.Errorf("an operator rolling the policy back: %v, want 403", err)
	}
	if _, err := bob.Apply(ctx, "feed", []byte(strings.Replace(feedPolicy, "versions:", "timeout: 1s\nversions:", 1)), a2.Revision, ""); err != nil {
		t.Errorf("an operator changing rules but not the policy: %v", err)
	}
	if _, err := vic.Apply(ctx, "feed", []byte(feedV1), 0, ""); !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Message, "role viewer") {
		t.Errorf("a viewer applying rules: %v, want 403 naming the role", err)
	}

	do := func(method, path, auth, body string) (int, api.Error) {
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e api.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	if st, _ := do("GET", "/v1/rules/feed", "", ""); st != 401 {
		t.Errorf("a private read without a token: %d, want 401", st)
	}
	if st, _ := do("GET", "/metrics", "", ""); st != 401 {
		t.Errorf("/metrics without a token: %d, want 401", st)
	}
	if st, _ := do("GET", "/healthz", "", ""); st != 200 && st != 503 {
		t.Errorf("/healthz without a token: %d, want it answered", st)
	}
	if st, _ := do("GET", "/v1/rules/feed", "bEaReR vic-secret", ""); st != 200 {
		t.Errorf("a read with a viewer's token, scheme in mixed case: %d, want 200", st)
	}
	for _, body := range []string{"{", `{"service": 7}`, `{"nope": 1}`} {
		st, e := do("POST", "/v1/canaries/feed", "Bearer ann-secret", body)
		if st != 400 || strings.Contains(e.Message, "json:") || strings.Contains(e.Message, "invalid character") || strings.Contains(e.Message, "Go") {
			t.Errorf("canary body %q: %d %q, want 400 without Go's error text", body, st, e.Message)
		}
	}
}
