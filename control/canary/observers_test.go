package canary_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// admin is a fake admin server: a registry over real HTTP.
type admin struct {
	reg  *prometheus.Registry
	srv  *httptest.Server
	reqs *prometheus.CounterVec
	dur  *prometheus.HistogramVec
	edge bool // the requests counter has experiment and variant labels
}

func newAdmin(t *testing.T, requests, duration string, labels ...string) *admin {
	t.Helper()
	a := &admin{reg: prometheus.NewRegistry(), edge: len(labels) > 0}
	a.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: requests}, append([]string{"service", "version"}, append(labels, "code")...))
	a.dur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: duration, Buckets: prometheus.DefBuckets}, []string{"service", "version"})
	a.reg.MustRegister(a.reqs, a.dur)
	a.srv = httptest.NewServer(promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *admin) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

// record counts n answers of version with code, labels filled with "".
func (a *admin) record(version string, n int, code string, latency time.Duration) {
	for range n {
		a.reqs.With(a.labels(version, code)).Inc()
		a.dur.WithLabelValues("feed", version).Observe(latency.Seconds())
	}
}

func (a *admin) labels(version, code string) prometheus.Labels {
	l := prometheus.Labels{"service": "feed", "version": version, "code": code}
	if a.edge {
		l["experiment"], l["variant"] = "", ""
	}
	return l
}

func put(t *testing.T, cli *clientv3.Client, key string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if _, err := cli.Put(context.Background(), key, string(b)); err != nil {
		t.Fatal(err)
	}
}

// sidecarOf registers a fake sidecar of feed at version.
func sidecarOf(t *testing.T, cli *clientv3.Client, version, id string) *admin {
	t.Helper()
	a := newAdmin(t, canary.RequestsMetric, canary.DurationMetric)
	put(t, cli, discovery.InstanceKey(prefix, discovery.Instance{ID: id, Service: "feed", Version: version}),
		discovery.Instance{ID: id, Service: "feed", Version: version, Address: "tcp://127.0.0.1:1", Admin: a.addr()})
	return a
}

// edgeOf registers a fake edge.
func edgeOf(t *testing.T, cli *clientv3.Client, id string) *admin {
	t.Helper()
	a := newAdmin(t, canary.EdgeRequestsMetric, canary.EdgeDurationMetric, "experiment", "variant")
	put(t, cli, discovery.EdgeKey(prefix, id), discovery.Edge{ID: id, Address: "127.0.0.1:1", Admin: a.addr()})
	return a
}

func TestStartRefusesVersionWithoutInstances(t *testing.T) {
	e := newEnv(t)
	m, _ := e.controller(t)
	s := spec()
	s.To = "v9"
	_, err := m.Start(context.Background(), s, "alice")
	if !errors.Is(err, canary.ErrInvalid) || !strings.Contains(err.Error(), "no live instance of feed v9") {
		t.Fatalf("got %v, want ErrInvalid naming feed v9", err)
	}
}

func TestEdgeFailuresRollBack(t *testing.T) {
	e := newEnv(t)
	sc := sidecarOf(t, e.cli, "v2", "v2-a")
	edge := edgeOf(t, e.cli, "edge-1")
	m, c := e.controller(t)
	ctx := context.Background()
	if _, err := m.Start(ctx, spec(), "alice"); err != nil {
		t.Fatal(err)
	}
	tick(t, c)
	// The sidecar saw 100 good answers; the edge also saw 20 that never got
	// there (no healthy instance, timeouts).
	sc.record("v2", 100, "200", time.Millisecond)
	edge.record("v2", 100, "200", 2*time.Millisecond)
	edge.record("v2", 10, "502", time.Millisecond)
	edge.record("v2", 10, "504", time.Second)
	e.clock.Add(time.Minute)
	tick(t, c)
	k, _ := m.Get(ctx, "feed")
	if k.State != canary.RolledBack {
		t.Fatalf("state %s (%s), want rolled-back on the edge's 502/504", k.State, k.Reason)
	}
	mt := k.History[len(k.History)-1].Metrics
	if mt.Server == nil || mt.Server.Errors != 0 || mt.Callers == nil || mt.Callers.Errors != 20 || mt.Requests != 120 {
		t.Fatalf("metrics %+v server %+v callers %+v: want 0 errors seen by the sidecar, 20 by the edge, 120 requests", mt, mt.Server, mt.Callers)
	}
}

func TestComparedWithOldVersion(t *testing.T) {
	for _, tc := range []struct {
		name        string
		oldErrs     int
		newErrs     int
		wantState   canary.State
		wantInCause string
	}{
		{"worse than the old version", 0, 5, canary.RolledBack, "points above v1"},
		{"as bad as the old version", 5, 5, canary.Running, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			v1 := sidecarOf(t, e.cli, "v1", "v1-a")
			v2 := sidecarOf(t, e.cli, "v2", "v2-a")
			m, c := e.controller(t)
			ctx := context.Background()
			s := spec()
			s.MaxErrorRate = 0.10 // generous: only the comparison can fail it
			if _, err := m.Start(ctx, s, "alice"); err != nil {
				t.Fatal(err)
			}
			tick(t, c)
			v1.record("v1", 100-tc.oldErrs, "200", time.Millisecond)
			v1.record("v1", tc.oldErrs, "500", time.Millisecond)
			v2.record("v2", 100-tc.newErrs, "200", time.Millisecond)
			v2.record("v2", tc.newErrs, "500", time.Millisecond)
			e.clock.Add(time.Minute)
			tick(t, c)
			k, _ := m.Get(ctx, "feed")
			if k.State != tc.wantState || !strings.Contains(k.Reason, tc.wantInCause) {
				t.Fatalf("state %s (%q), want %s because %q", k.State, k.Reason, tc.wantState, tc.wantInCause)
			}
			if b := k.History[len(k.History)-1].Metrics.Baseline; b == nil || b.Requests != 100 {
				t.Fatalf("baseline %+v, want the old version's 100 requests", b)
			}
		})
	}
}

func TestDeadInstanceFiguresCount(t *testing.T) {
	e := newEnv(t)
	sidecarOf(t, e.cli, "v2", "v2-a").record("v2", 0, "200", 0)
	dying := sidecarOf(t, e.cli, "v2", "v2-b")
	m, c := e.controller(t)
	ctx := context.Background()
	if _, err := m.Start(ctx, spec(), "alice"); err != nil {
		t.Fatal(err)
	}
	tick(t, c)
	dying.record("v2", 50, "200", time.Millisecond)
	dying.record("v2", 50, "500", time.Millisecond)
	e.clock.Add(2 * time.Second)
	tick(t, c) // not due: a sample
	// v2-b dies: its registration and its admin server go.
	if _, err := e.cli.Delete(ctx, discovery.InstanceKey(prefix, discovery.Instance{ID: "v2-b", Service: "feed", Version: "v2"})); err != nil {
		t.Fatal(err)
	}
	dying.srv.Close()
	e.clock.Add(time.Minute)
	tick(t, c)
	k, _ := m.Get(ctx, "feed")
	if k.State != canary.RolledBack || !strings.Contains(k.Reason, "error rate 50.00%") {
		t.Fatalf("state %s (%q), want rolled-back on the dead instance's 50%% errors", k.State, k.Reason)
	}
}

func TestEveryRuleToTheOldVersionMoves(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cur, _ := e.rules.Get(ctx, "feed")
	d := &routing.Document{Service: "feed", Versions: []routing.VersionRule{
		{Match: &routing.Match{Header: map[string]string{"x-old": "1"}}, To: map[string]int{"v1": 100}},
		{Name: "tone", Sticky: "cookie:uid", To: map[string]int{"v1": 50, "v3": 50}},
		{Match: &routing.Match{PathPrefix: "/feed/new"}, To: map[string]int{"v1": 100}},
		{To: map[string]int{"v1": 100}},
	}}
	if _, err := e.rules.Apply(ctx, d, cur.Revision, "test"); err != nil {
		t.Fatal(err)
	}
	sidecarOf(t, e.cli, "v2", "v2-a")
	m, c := e.controller(t)
	k, err := m.Start(ctx, spec(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if want := "leaves versions[0] as they are"; !strings.Contains(k.History[0].Reason, want) || len(k.Kept) != 1 {
		t.Fatalf("start reason %q, kept %v: want %q", k.History[0].Reason, k.Kept, want)
	}
	tick(t, c)
	got, _ := e.rules.Get(ctx, "feed")
	want := []map[string]int{{"v1": 100}, {"v1": 47, "v2": 3, "v3": 50}, {"v1": 95, "v2": 5}, {"v1": 95, "v2": 5}}
	for i, w := range want {
		if !equal(got.Document.Versions[i].To, w) {
			t.Errorf("versions[%d].to = %v, want %v", i, got.Document.Versions[i].To, w)
		}
	}
	if _, err := m.Promote(ctx, "feed", "bob"); err != nil {
		t.Fatal(err)
	}
	got, _ = e.rules.Get(ctx, "feed")
	want = []map[string]int{{"v1": 100}, {"v2": 50, "v3": 50}, {"v2": 100}, {"v2": 100}}
	for i, w := range want {
		if !equal(got.Document.Versions[i].To, w) {
			t.Errorf("after promotion versions[%d].to = %v, want %v", i, got.Document.Versions[i].To, w)
		}
	}
}

func equal(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestCallingSidecarsCount(t *testing.T) {
	e := newEnv(t)
	sc := sidecarOf(t, e.cli, "v2", "v2-a")
	// A sidecar of another service that calls feed: its outbound series.
	caller := newAdmin(t, canary.OutboundRequestsMetric, canary.OutboundDurationMetric, "experiment", "variant")
	put(t, e.cli, discovery.InstanceKey(prefix, discovery.Instance{ID: "web-1", Service: "web", Version: "v1"}),
		discovery.Instance{ID: "web-1", Service: "web", Version: "v1", Address: "tcp://127.0.0.1:1", Admin: caller.addr()})
	m, c := e.controller(t)
	ctx := context.Background()
	if _, err := m.Start(ctx, spec(), "alice"); err != nil {
		t.Fatal(err)
	}
	tick(t, c)
	sc.record("v2", 50, "200", time.Millisecond)
	caller.record("v2", 50, "200", time.Millisecond)
	caller.record("v2", 10, "503", time.Millisecond)
	e.clock.Add(time.Minute)
	tick(t, c)
	k, _ := m.Get(ctx, "feed")
	if k.State != canary.RolledBack || !strings.Contains(k.Reason, "error rate 16.67%") {
		t.Fatalf("state %s (%q), want rolled back on the callers' 10 of 60 failures", k.State, k.Reason)
	}
}
