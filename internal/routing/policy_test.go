package routing_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/internal/routing"
)

func TestPolicy(t *testing.T) {
	const doc = `
service: hello
versions:
  - to: {v1: 100}
authorization:
  allow:
    - from: edge
    - from: profiles
    - from: feed
      versions: [v2]
`
	d, err := routing.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := routing.Compile([]routing.Document{*d}, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := tab.Service("hello").Policy()
	if !p.Enabled() {
		t.Fatal("policy not enabled")
	}
	for _, tc := range []struct {
		name             string
		service, version string
		want             bool
	}{
		{"edge", routing.EdgeCaller, "", true},
		{"any version of profiles", "profiles", "v7", true},
		{"the allowed version of feed", "feed", "v2", true},
		{"another version of feed", "feed", "v1", false},
		{"a service not listed", "messages", "v1", false},
		{"a caller without identity", "", "", false},
	} {
		if got := p.Allows(tc.service, tc.version); got != tc.want {
			t.Errorf("%s: Allows(%q, %q) = %v, want %v", tc.name, tc.service, tc.version, got, tc.want)
		}
	}

	none, err := routing.Compile([]routing.Document{{Service: "open", Versions: []routing.VersionRule{{To: map[string]int{"v1": 100}}}}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if p := none.Service("open").Policy(); p.Enabled() || !p.Allows("", "") {
		t.Error("a document without authorization: want every caller allowed")
	}
	empty := *d
	empty.Authorization = &routing.Authorization{}
	tab, err = routing.Compile([]routing.Document{empty}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Service("hello").Policy().Allows(routing.EdgeCaller, "") {
		t.Error("an empty allow list: want every caller refused")
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct{ name, auth, field string }{
		{"no from", "allow: [{versions: [v1]}]", "authorization.allow[0].from"},
		{"bad name", "allow: [{from: Profiles}]", "authorization.allow[0].from"},
		{"bad version", "allow: [{from: feed, versions: ['v 2']}]", "authorization.allow[0].versions[0]"},
		{"edge with versions", "allow: [{from: edge, versions: [v1]}]", "authorization.allow[0].versions"},
		{"unknown field", "allow: [{from: feed, to: hello}]", "authorization.allow[0].to"},
	} {
		doc := "service: hello\nversions: [{to: {v1: 100}}]\nauthorization: {" + tc.auth + "}\n"
		_, err := routing.Parse([]byte(doc))
		var fe *routing.FieldError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.field)
		}
	}
}
