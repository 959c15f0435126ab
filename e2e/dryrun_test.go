package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// dryRunDoc is hello's rules with a header rule and a sticky experiment
// giving v2 the weight w.
func dryRunDoc(w int) string {
	return fmt.Sprintf(`service: hello
http: [{pathPrefix: /hello/}]
versions:
  - match: {header: {x-beta: "1"}}
    to: {v2: 100}
  - name: ranking
    sticky: cookie:uid
    to: {v1: %d, v2: %d}
`, 100-w, w)
}

// applyAndWait applies doc with the CLI and waits until the edges and
// sidecars run it.
func applyAndWait(t *testing.T, m *meshtest.Mesh, url, doc string) {
	t.Helper()
	if out, errOut, code := cliIn(t, url, doc, "routes", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	resp, err := m.Cli.Get(context.Background(), discovery.RuleKey(discovery.DefaultPrefix, "hello"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("rules of hello in etcd: %v", err)
	}
	rev := resp.Kvs[0].ModRevision
	for start := time.Now(); behind(t, m, rev) != ""; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("rule revision %d did not reach %s within 10s", rev, behind(t, m, rev))
		}
	}
}

// TestDryRunMatchesDataPlane: the edge samples every request of a recorded
// run (1,000 requests from 400 users, a tenth with the beta header, which
// routes them by header alone: 360 users carry the experiment); the
// dry run of raising the experiment's v2 from 10% to 50% reports the share
// of requests and the sticky keys that would move; the same requests sent
// after applying it move as reported, within 1 percentage point.
func TestDryRunMatchesDataPlane(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	m.Sidecar("hello", "v2")
	e := m.Edge("--no-admission", "--sample-every", "1", "--sample-size", "5000")
	url := startControl(t, m)
	applyAndWait(t, m, url, dryRunDoc(10))

	const requests, users = 1000, 400
	send := func() (versions []string, byUser map[string]string) {
		byUser = map[string]string{}
		for i := range requests {
			req, _ := http.NewRequest("GET", "http://"+e.Addr+"/hello/greet", nil)
			uid := "user-" + strconv.Itoa(i%users)
			req.AddCookie(&http.Cookie{Name: "uid", Value: uid})
			if i%10 == 3 {
				req.Header.Set("X-Beta", "1")
			}
			v := versionOf(t, req)
			versions = append(versions, v)
			if i%10 != 3 {
				byUser[uid] = v
			}
		}
		return versions, byUser
	}
	before, usersBefore := send()

	out, errOut, code := cliIn(t, url, dryRunDoc(50), "routes", "apply", "--dry-run", "-f", "-", "-o", "json")
	if code != 0 {
		t.Fatalf("apply --dry-run: exit %d: %s%s", code, out, errOut)
	}
	var rep api.DryRun
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("apply --dry-run -o json: %v\n%s", err, out)
	}
	if out, errOut, code := cliIn(t, url, strings.Replace(dryRunDoc(50), "v2: 50", "v2: 60", 1), "routes", "apply", "--dry-run", "-f", "-"); code != 2 || !strings.Contains(out+errOut, "versions[1].to") {
		t.Fatalf("dry run of an invalid document: exit %d: %s%s; want 2 naming versions[1].to", code, out, errOut)
	}
	text, _, _ := cliIn(t, url, dryRunDoc(50), "routes", "apply", "--dry-run", "-f", "-")
	t.Logf("dry run:\n%s", text)
	if rep.Requests != requests || rep.Edges != 1 || rep.Failed != 0 {
		t.Fatalf("dry run replayed %d requests from %d edges (%d failed), want %d from 1", rep.Requests, rep.Edges, rep.Failed, requests)
	}
	if rev := rulesRevision(t, url); rep.Revision != rev {
		t.Fatalf("dry run against revision %d, want the current %d", rep.Revision, rev)
	}

	applyAndWait(t, m, url, dryRunDoc(50))
	after, usersAfter := send()

	share := func(vs []string, v string) float64 {
		n := 0
		for _, x := range vs {
			if x == v {
				n++
			}
		}
		return float64(n) / float64(len(vs))
	}
	moved := 0
	for i := range before {
		if before[i] != after[i] {
			if before[i] != "v1" || after[i] != "v2" {
				t.Errorf("request %d went from %s to %s: raising v2's weight may only move v1 → v2", i, before[i], after[i])
			}
			moved++
		}
	}
	movedKeys := 0
	for u, v := range usersBefore {
		if usersAfter[u] != v {
			movedKeys++
		}
	}
	t.Logf("data plane: v2 %.1f%% → %.1f%%, %d of %d requests and %d of %d users moved",
		100*share(before, "v2"), 100*share(after, "v2"), moved, requests, movedKeys, len(usersBefore))

	close := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 0.01 {
			t.Errorf("%s: the dry run said %.2f%%, the data plane did %.2f%%", what, 100*got, 100*want)
		}
	}
	close("v2's share now", rep.Before["v2"], share(before, "v2"))
	close("v2's share proposed", rep.After["v2"], share(after, "v2"))
	close("v1's share proposed", rep.After["v1"], share(after, "v1"))
	close("requests moved", rep.Moved, float64(moved)/requests)
	if len(rep.Moves) != 1 || rep.Moves[0].From != "v1" || rep.Moves[0].To != "v2" {
		t.Fatalf("moves %+v, want only v1 → v2", rep.Moves)
	}
	close("requests moved v1 → v2", rep.Moves[0].Share, float64(moved)/requests)
	if rep.StickyKeys != len(usersBefore) || rep.MovedKeys != movedKeys || rep.Moves[0].Keys != movedKeys {
		t.Errorf("dry run: %d of %d sticky keys move (%d v1 → v2), the data plane moved %d of %d",
			rep.MovedKeys, rep.StickyKeys, rep.Moves[0].Keys, movedKeys, len(usersBefore))
	}
	if moved == 0 || movedKeys == 0 {
		t.Errorf("nothing moved: the test shows nothing")
	}
}
