package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// applyRules stores a rule document in etcd as the control plane does and
// waits until every registered edge and instance runs it. It returns how
// long that took.
func applyRules(t *testing.T, m *meshtest.Mesh, doc string) time.Duration {
	t.Helper()
	d, err := routing.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	b, _ := json.Marshal(d)
	start := time.Now()
	resp, err := m.Cli.Put(context.Background(), discovery.RuleKey(discovery.DefaultPrefix, d.Service), string(b))
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	for {
		if behind := behind(t, m, rev); behind == "" {
			return time.Since(start)
		} else if time.Since(start) > 10*time.Second {
			t.Fatalf("rule revision %d did not reach %s within 10s", rev, behind)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// behind names a registered edge or instance that runs a rule revision
// older than rev, or "" when none does.
func behind(t *testing.T, m *meshtest.Mesh, rev int64) string {
	resp, err := m.Cli.Get(context.Background(), discovery.DefaultPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		if !strings.HasPrefix(key, discovery.EdgesPrefix(discovery.DefaultPrefix)) && !strings.HasPrefix(key, discovery.InstancesPrefix(discovery.DefaultPrefix)) {
			continue
		}
		var v struct {
			RuleRevision int64 `json:"ruleRevision"`
		}
		if json.Unmarshal(kv.Value, &v) != nil || v.RuleRevision < rev {
			return key
		}
	}
	return ""
}

// versionOf sends a GET and returns the version that answered.
func versionOf(t *testing.T, req *http.Request) string {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: status %d", req.URL, resp.StatusCode)
	}
	return resp.Header.Get("X-Griddle-Version")
}

func TestWeightedSplit(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	m.Sidecar("hello", "v2")
	e := m.Edge("--no-admission")
	applyRules(t, m, `
service: hello
http: [{pathPrefix: /hello/}]
versions:
  - to: {v1: 90, v2: 10}
`)
	const n = 5000
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				req, _ := http.NewRequest("GET", "http://"+e.Addr+"/hello/greet?name=x", nil)
				v := versionOf(t, req)
				mu.Lock()
				counts[v]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	share := 100 * float64(counts["v2"]) / n
	t.Logf("v1: %d, v2: %d (%.1f%%)", counts["v1"], counts["v2"], share)
	if counts["v1"]+counts["v2"] != n || math.Abs(share-10) > 2 {
		t.Errorf("got %v, want v2 at 10%% ± 2 points of %d", counts, n)
	}
}

func TestStickyCanaryRamp(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	m.Sidecar("hello", "v2")
	e := m.Edge("--no-admission")
	const keys = 300
	onNew := make([]bool, keys)
	for _, w := range []int{5, 25, 50} {
		applyRules(t, m, fmt.Sprintf(`
service: hello
http: [{pathPrefix: /hello/}]
versions:
  - name: canary
    sticky: cookie:uid
    to: {v1: %d, v2: %d}
`, 100-w, w))
		got := 0
		for k := range keys {
			var seen []string
			for range 2 {
				req, _ := http.NewRequest("GET", "http://"+e.Addr+"/hello/greet", nil)
				req.AddCookie(&http.Cookie{Name: "uid", Value: "user-" + strconv.Itoa(k)})
				seen = append(seen, versionOf(t, req))
			}
			if seen[0] != seen[1] {
				t.Fatalf("weight %d: key %d got %v: the same key must always get the same version", w, k, seen)
			}
			if onNew[k] && seen[0] != "v2" {
				t.Fatalf("weight %d: key %d moved from v2 back to %s", w, k, seen[0])
			}
			onNew[k] = seen[0] == "v2"
			if onNew[k] {
				got++
			}
		}
		t.Logf("weight %d%%: %d of %d keys on v2", w, got, keys)
		if math.Abs(100*float64(got)/keys-float64(w)) > 8 {
			t.Errorf("weight %d%%: %d of %d keys on v2, want about %d%%", w, got, keys, w)
		}
	}
}

func TestRoutingContextTwoHopsDown(t *testing.T) {
	m := meshtest.Start(t, bin)
	for _, v := range []string{"v1", "v2"} {
		m.Sidecar("profiles", v)
		m.Sidecar("hello", v)
	}
	e := m.Edge("--no-admission", "--pin-from", "127.0.0.0/8") // the tester's pins are honoured from here
	applyRules(t, m, "service: profiles\nhttp: [{pathPrefix: /profiles/}]\nversions:\n  - to: {v1: 100}\n")
	seed(t, e.Addr, 10)
	// One experiment across two services. hello's own weights differ, so
	// hello follows the edge's assignment only if it travelled with the call.
	applyRules(t, m, `
service: profiles
http: [{pathPrefix: /profiles/}]
versions:
  - name: new-stack
    sticky: cookie:uid
    to: {v1: 50, v2: 50}
`)
	applyRules(t, m, `
service: hello
versions:
  - name: new-stack
    sticky: cookie:uid
    to: {v1: 10, v2: 90}
`)
	greet := func(uid, pin string) (profiles, hello string) {
		req, _ := http.NewRequest("GET", "http://"+e.Addr+"/profiles/7/greeting", nil)
		req.AddCookie(&http.Cookie{Name: "uid", Value: uid})
		if pin != "" {
			req.Header.Set("X-Griddle-Pin", pin)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var g struct {
			HelloVersion string `json:"helloVersion"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&g); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d, %v", resp.StatusCode, err)
		}
		return resp.Header.Get("X-Griddle-Version"), g.HelloVersion
	}

	seen := map[string]int{}
	for i := range 60 {
		p, h := greet("user-"+strconv.Itoa(i), "")
		if p != h {
			t.Errorf("user-%d: profiles %s called hello %s: the experiment assignment did not hold two hops down", i, p, h)
		}
		seen[p]++
	}
	if seen["v1"] == 0 || seen["v2"] == 0 {
		t.Errorf("assignments %v: want both variants used", seen)
	}
	for i := range 20 {
		p, h := greet("user-"+strconv.Itoa(i), "hello=v1, profiles=v2")
		if p != "v2" || h != "v1" {
			t.Errorf("pinned profiles=v2, hello=v1: got profiles %s, hello %s", p, h)
		}
	}
}

func TestRetriesStayWithinBudget(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	e := m.Edge("--no-admission")
	applyRules(t, m, `
service: hello
http: [{pathPrefix: /hello/}]
retries: {attempts: 3, on: [5xx], budget: 10%, minPerSecond: 1}
versions:
  - to: {v1: 100}
`)
	const n = 600
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				status, _, _ := get(t, "http://"+e.Addr+"/hello/status?code=500")
				if status != 500 {
					t.Errorf("status %d, want the handler's 500 after retries", status)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	retries := scrape(t, e.Admin, `griddle_edge_retries_total{service="hello"}`)
	// The budget: 10% of live requests, a floor of 1/s, and one second of
	// floor to start with.
	allowed := 0.1*n + 1*(elapsed+1) + 1
	t.Logf("%d requests failing every time: %.0f retries, budget allows %.0f (without a budget: %d)", n, retries, allowed, 2*n)
	if retries == 0 || retries > allowed {
		t.Errorf("retries = %.0f, want some and at most %.0f", retries, allowed)
	}
}

// TestRulePropagation measures the time from a rule change in etcd to the
// last edge and sidecar running it.
func TestRulePropagation(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	m.Sidecar("hello", "v2")
	m.Sidecar("profiles", "v1")
	m.Edge()
	m.Edge()
	var took []time.Duration
	for i := range 20 {
		took = append(took, applyRules(t, m, fmt.Sprintf(`
service: hello
versions:
  - to: {v1: %d, v2: %d}
`, 100-i, i)))
	}
	slices.Sort(took)
	t.Logf("rule propagation to 2 edges and 3 sidecars over %d changes: p50 %v, p99 %v",
		len(took), took[len(took)/2].Round(time.Microsecond), took[len(took)*99/100].Round(time.Microsecond))
}

// scrape reads one sample from a process's /metrics; 0 if absent.
func scrape(t *testing.T, admin, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
