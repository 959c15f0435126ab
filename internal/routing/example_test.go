package routing_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/wire"
)

func Example() {
	doc, err := routing.Parse([]byte(`
service: profiles
http:
  - pathPrefix: /api/profiles/
    methods: [GET, PUT]
versions:
  - match: {header: {x-beta: "1"}}
    to: {v2: 100}
  - name: ranking-test
    sticky: cookie:uid
    to: {v1: 50, v2: 50}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	table, err := routing.Compile([]routing.Document{*doc}, 7)
	if err != nil {
		fmt.Println(err)
		return
	}

	// At the edge: find the service, then the version.
	service, _ := table.Route("/api/profiles/42", "GET")
	r := httptest.NewRequest("GET", "/api/profiles/42", nil)
	r.Header.Set("Cookie", "uid=alice")
	rc := &wire.Routing{Pins: routing.ParsePins("feed=v3")}
	d := table.Service(service).Decide(r, rc)
	fmt.Println(service, d.Experiment, d.Version == d.Variant)
	fmt.Println(rc.StickyKey, rc.Experiments["ranking-test"] == d.Version, rc.Pins["feed"])

	// A beta tester's header wins over the experiment.
	r.Header.Set("X-Beta", "1")
	fmt.Println(table.Service(service).Decide(r, rc).Version)

	_, err = routing.Parse([]byte("service: profiles\nversions: [{to: {v1: 90}}]"))
	fmt.Println(err)
	// Output:
	// profiles ranking-test true
	// alice true v3
	// v2
	// versions[0].to: weights sum to 90, want 100
}
