package canary_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/etcdembed/etcdtest"
	"github.com/griddle-mesh/griddle/internal/routing"
)

const prefix = "/griddle/"

// clock is a test clock that only moves when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// sidecar is a fake sidecar of feed v2: a real Prometheus registry served
// over real HTTP, registered in etcd with its admin address.
type sidecar struct {
	reqs *prometheus.CounterVec
	dur  *prometheus.HistogramVec
}

func startSidecar(t *testing.T, cli *clientv3.Client, id string) *sidecar {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := &sidecar{
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: canary.RequestsMetric}, []string{"service", "version", "code"}),
		dur:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: canary.DurationMetric, Buckets: prometheus.DefBuckets}, []string{"service", "version"}),
	}
	reg.MustRegister(s.reqs, s.dur)
	// Another version's series must not count.
	s.reqs.WithLabelValues("feed", "v1", "5xx").Add(1000)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	in := discovery.Instance{ID: id, Service: "feed", Version: "v2", Address: "tcp://127.0.0.1:1",
		Admin: strings.TrimPrefix(srv.URL, "http://"), Started: time.Now()}
	b, _ := json.Marshal(in)
	if _, err := cli.Put(context.Background(), discovery.InstanceKey(prefix, in), string(b)); err != nil {
		t.Fatal(err)
	}
	return s
}

// serve records n requests with the given status class and latency.
func (s *sidecar) serve(n int, code string, latency time.Duration) {
	for range n {
		s.reqs.WithLabelValues("feed", "v2", code).Inc()
		s.dur.WithLabelValues("feed", "v2").Observe(latency.Seconds())
	}
}

type env struct {
	cli   *clientv3.Client
	rules *rulestore.Store
	clock *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := etcdtest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := srv.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	e := &env{cli: cli, clock: &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}}
	e.rules = rulestore.New(cli, prefix, e.clock.Now)
	d := &routing.Document{Service: "feed", Versions: []routing.VersionRule{
		{Match: &routing.Match{Header: map[string]string{"x-beta": "1"}}, To: map[string]int{"v2": 100}},
		{To: map[string]int{"v1": 100}},
	}}
	if _, err := e.rules.Apply(ctx, d, 0, "test"); err != nil {
		t.Fatal(err)
	}
	return e
}

// controller builds a fresh Manager and Controller, as a new leader would.
func (e *env) controller(t *testing.T) (*canary.Manager, *canary.Controller) {
	t.Helper()
	m := canary.NewManager(e.cli, rulestore.New(e.cli, prefix, e.clock.Now), e.clock.Now)
	c, err := canary.NewController(canary.ControllerConfig{Manager: m, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return m, c
}

func (e *env) weights(t *testing.T) map[string]int {
	t.Helper()
	cur, err := e.rules.Get(context.Background(), "feed")
	if err != nil {
		t.Fatal(err)
	}
	if got := cur.Document.Versions[0].To["v2"]; got != 100 {
		t.Fatalf("the canary touched a rule other than the last: %v", cur.Document.Versions[0].To)
	}
	return cur.Document.Versions[len(cur.Document.Versions)-1].To
}

func spec() canary.Spec {
	return canary.Spec{Service: "feed", To: "v2", Steps: []int{5, 25, 50, 100},
		Interval: routing.Duration(time.Minute), MaxErrorRate: 0.01, MaxP99: routing.Duration(50 * time.Millisecond)}
}

func tick(t *testing.T, c *canary.Controller) {
	t.Helper()
	if err := c.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestHealthyCanaryReaches100(t *testing.T) {
	e := newEnv(t)
	sc := startSidecar(t, e.cli, "v2-a")
	m, c := e.controller(t)
	ctx := context.Background()
	k, err := m.Start(ctx, spec(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if k.From != "v1" || k.Step != -1 || k.State != canary.Running {
		t.Fatalf("started %+v, want from v1, step -1, running", k)
	}
	if _, err := m.Start(ctx, spec(), "bob"); !errors.Is(err, canary.ErrRunning) {
		t.Fatalf("second start: got %v, want ErrRunning", err)
	}
	tick(t, c)
	if w := e.weights(t); w["v1"] != 95 || w["v2"] != 5 {
		t.Fatalf("after the first step weights = %v, want v1 95, v2 5", w)
	}
	for _, want := range []int{25, 50, 100} {
		sc.serve(100, "2xx", 10*time.Millisecond)
		tick(t, c) // not due yet: nothing happens
		if k, _ := m.Get(ctx, "feed"); k.Weight() == want {
			t.Fatalf("stepped to %d before the interval passed", want)
		}
		e.clock.Add(time.Minute)
		tick(t, c)
		if w := e.weights(t); w["v2"] != want || w["v1"] != 100-want {
			t.Fatalf("weights = %v, want v2 %d", w, want)
		}
	}
	k, err = m.Get(ctx, "feed")
	if err != nil {
		t.Fatal(err)
	}
	if k.State != canary.Promoted || len(k.Weights()) != 1 {
		t.Fatalf("state %s, weights %v: want promoted, v2 only", k.State, k.Weights())
	}
	last := k.History[len(k.History)-1]
	if last.Metrics == nil || last.Metrics.Requests != 100 || last.Metrics.ErrorRate != 0 || last.RuleRevision == 0 || last.RuleRevision != k.RuleRevision {
		t.Fatalf("last history entry %+v (canary revision %d): want metrics of 100 requests and the rule revision", last, k.RuleRevision)
	}
	cur, _ := e.rules.Get(ctx, "feed")
	if cur.Revision != k.RuleRevision {
		t.Fatalf("record says revision %d, rules are at %d", k.RuleRevision, cur.Revision)
	}
}

func TestBreachRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		code    string
		latency time.Duration
		errs    int
		want    string
	}{
		{"5xx", "5xx", 10 * time.Millisecond, 10, "error rate 10.00% > 1.00%"},
		{"status 503", "503", 10 * time.Millisecond, 5, "error rate 5.00% > 1.00%"},
		{"slow", "2xx", 200 * time.Millisecond, 0, "p99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			sc := startSidecar(t, e.cli, "v2-a")
			m, c := e.controller(t)
			ctx := context.Background()
			if _, err := m.Start(ctx, spec(), "alice"); err != nil {
				t.Fatal(err)
			}
			tick(t, c)
			sc.serve(100-tc.errs, "2xx", tc.latency)
			sc.serve(tc.errs, tc.code, tc.latency)
			e.clock.Add(time.Minute)
			tick(t, c)
			if w := e.weights(t); w["v1"] != 100 || len(w) != 1 {
				t.Fatalf("weights = %v, want v1 100", w)
			}
			k, _ := m.Get(ctx, "feed")
			if k.State != canary.RolledBack || !strings.Contains(k.Reason, tc.want) {
				t.Fatalf("state %s, reason %q: want rolled-back because %q", k.State, k.Reason, tc.want)
			}
			e.clock.Add(time.Hour)
			tick(t, c) // an ended canary stays put
			if w := e.weights(t); w["v1"] != 100 {
				t.Fatalf("weights changed after rollback: %v", w)
			}
		})
	}
}

func TestTooFewRequestsWaits(t *testing.T) {
	e := newEnv(t)
	sc := startSidecar(t, e.cli, "v2-a")
	m, c := e.controller(t)
	ctx := context.Background()
	if _, err := m.Start(ctx, spec(), "alice"); err != nil {
		t.Fatal(err)
	}
	tick(t, c)
	sc.serve(5, "5xx", time.Millisecond)
	e.clock.Add(time.Minute)
	tick(t, c)
	k, _ := m.Get(ctx, "feed")
	if k.State != canary.Running || k.Step != 0 || k.History[len(k.History)-1].Action != "wait" {
		t.Fatalf("after 5 requests: %+v, want still running at step 0, waiting", k)
	}
	// Requests accumulate across the wait: 5 errors + 95 good = 5% > 1%.
	sc.serve(95, "2xx", time.Millisecond)
	e.clock.Add(time.Minute)
	tick(t, c)
	if k, _ := m.Get(ctx, "feed"); k.State != canary.RolledBack {
		t.Fatalf("state %s, want rolled-back on the accumulated requests", k.State)
	}
}

func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	sc := startSidecar(t, e.cli, "v2-a")
	ctx := context.Background()
	mA, a := e.controller(t)
	if _, err := mA.Start(ctx, spec(), "alice"); err != nil {
		t.Fatal(err)
	}
	tick(t, a) // 5%
	sc.serve(100, "2xx", time.Millisecond)
	e.clock.Add(time.Minute)
	tick(t, a) // 25%
	// A stops; B (new manager, new controller, nothing in memory) takes over.
	mB, b := e.controller(t)
	tick(t, b)
	if k, _ := mB.Get(ctx, "feed"); k.Weight() != 25 {
		t.Fatalf("B moved the canary before its step was due: weight %d", k.Weight())
	}
	sc.serve(40, "2xx", time.Millisecond)
	e.clock.Add(time.Minute)
	tick(t, b)
	k, _ := mB.Get(ctx, "feed")
	if k.Weight() != 50 || k.State != canary.Running {
		t.Fatalf("after B's step: weight %d, state %s; want 50, running", k.Weight(), k.State)
	}
	// B judged only what happened since A's last step (the persisted baseline).
	if got := k.History[len(k.History)-1].Metrics.Requests; got != 40 {
		t.Fatalf("B judged %v requests, want 40", got)
	}
	if w := e.weights(t); w["v2"] != 50 {
		t.Fatalf("weights = %v, want v2 50", w)
	}
}

func TestOperatorAbortAndPromote(t *testing.T) {
	e := newEnv(t)
	startSidecar(t, e.cli, "v2-a")
	m, c := e.controller(t)
	ctx := context.Background()
	if _, err := m.Start(ctx, spec(), "alice"); err != nil {
		t.Fatal(err)
	}
	tick(t, c)
	k, err := m.Abort(ctx, "feed", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if k.State != canary.Aborted || e.weights(t)["v1"] != 100 {
		t.Fatalf("after abort: %s, %v", k.State, e.weights(t))
	}
	if _, err := m.Abort(ctx, "feed", "bob"); !errors.Is(err, canary.ErrNotRunning) {
		t.Fatalf("second abort: got %v, want ErrNotRunning", err)
	}
	// A new canary may start after the old one ended; promote jumps to 100%.
	if _, err := m.Start(ctx, spec(), "alice"); err != nil {
		t.Fatal(err)
	}
	if k, err = m.Promote(ctx, "feed", "bob"); err != nil {
		t.Fatal(err)
	}
	if w := e.weights(t); k.State != canary.Promoted || w["v2"] != 100 || len(w) != 1 {
		t.Fatalf("after promote: %s, %v", k.State, w)
	}
}

func TestLostLeadershipWritesNothing(t *testing.T) {
	e := newEnv(t)
	startSidecar(t, e.cli, "v2-a")
	m, c := e.controller(t)
	ctx := context.Background()
	if _, err := m.Start(ctx, spec(), "alice"); err != nil {
		t.Fatal(err)
	}
	// A guard that does not hold, as after losing the election.
	stale := clientv3.Compare(clientv3.CreateRevision(prefix+"control/leader/gone"), "=", 12345)
	if err := c.Tick(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if k, _ := m.Get(ctx, "feed"); k.Step != -1 || e.weights(t)["v1"] != 100 {
		t.Fatalf("a controller without leadership wrote: step %d, weights %v", k.Step, e.weights(t))
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*canary.Spec)
		field string
	}{
		{"no to", func(s *canary.Spec) { s.To = "" }, "to:"},
		{"steps not increasing", func(s *canary.Spec) { s.Steps = []int{5, 5, 100} }, "steps[1]:"},
		{"steps not ending at 100", func(s *canary.Spec) { s.Steps = []int{5, 50} }, "steps:"},
		{"error rate over 1", func(s *canary.Spec) { s.MaxErrorRate = 2 }, "maxErrorRate:"},
		{"zero interval", func(s *canary.Spec) { s.Interval = 0 }, "interval:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec()
			tc.edit(&s)
			err := s.Validate()
			if !errors.Is(err, canary.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want ErrInvalid naming %s", err, tc.field)
			}
		})
	}
}
