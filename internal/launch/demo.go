package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// DemoServices returns the example services with hello in three versions,
// for griddle up --demo: v2 greets with "hi"; v3 is v2 with half of its
// greetings failing, a bad release for a canary to roll back.
func DemoServices() []Service {
	var out []Service
	for _, s := range ExampleServices() {
		out = append(out, s)
		if s.Name == "hello" {
			v2 := s
			v2.Version, v2.Args = "v2", []string{"-greeting", "hi"}
			v3 := s
			v3.Version, v3.Args = "v3", []string{"-greeting", "hi", "-fail-rate", "0.5"}
			out = append(out, v2, v3)
		}
	}
	return out
}

// DefaultDemoRate is the demo traffic's requests per second.
const DefaultDemoRate = 20

// demoRules is hello's first rules in the demo: without rules the edge
// would send requests to any of the three versions.
const demoRules = `# hello in griddle up --demo: v1 serves everything; v2 and v3 wait for rules.
service: hello
http: [{pathPrefix: /hello/}]
versions:
  - to: {v1: 100}
`

// demoAuthor is who the demo's first rules are by, in the history.
const demoAuthor = "griddle up --demo"

// applyDemoRules gives hello its first rules unless it has some.
func applyDemoRules(ctx context.Context, rules *rulestore.Store) error {
	if _, err := rules.Get(ctx, "hello"); !errors.Is(err, rulestore.ErrNotFound) {
		return err // nil: rules from an earlier run stay
	}
	doc, err := routing.Parse([]byte(demoRules))
	if err != nil {
		return err
	}
	_, err = rules.Apply(ctx, doc, 0, demoAuthor, rulestore.WithSource([]byte(demoRules)),
		rulestore.WithComment("v1 serves until you route to v2"))
	return err
}

// demoTraffic sends rate greetings per second to the edge at base until
// ctx ends: 200 users (a uid cookie each), one request in ten with
// x-beta: 1, so that header rules, sticky splits and canaries have
// traffic to act on and the page has figures to show.
func demoTraffic(ctx context.Context, base string, rate int) {
	if rate <= 0 {
		return
	}
	client := &http.Client{Timeout: 5 * time.Second}
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/hello/greet?name=demo", nil)
		if err != nil {
			return
		}
		req.AddCookie(&http.Cookie{Name: "uid", Value: "user-" + strconv.Itoa(rand.IntN(200))})
		if rand.IntN(10) == 0 {
			req.Header.Set("X-Beta", "1")
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

// multiVersion reports whether service runs in more than one version, so
// that its instances' ids must name the version.
func multiVersion(svcs []Service, name string) bool {
	n := 0
	for _, s := range svcs {
		if s.Name == name {
			n++
		}
	}
	return n > 1
}

// instanceName is the id of the nth (from 1) instance of svc in Up.
func instanceName(svcs []Service, svc Service, n int) string {
	if multiVersion(svcs, svc.Name) {
		return fmt.Sprintf("%s-%s-%d", svc.Name, svc.Version, n)
	}
	return fmt.Sprintf("%s-%d", svc.Name, n)
}
