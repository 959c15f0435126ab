package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/etcdembed"
	"github.com/griddle-mesh/griddle/internal/etcdembed/etcdtest"
)

func instance(svc, version, id string) discovery.Instance {
	return discovery.Instance{
		ID: id, Service: svc, Version: version,
		Address: "tcp://127.0.0.1:7001", Started: time.Unix(1700000000, 0).UTC(),
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestRegisterValidation(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testContext(t)
	ok := instance("profiles", "v1", "a1")
	tests := []struct {
		name string
		in   discovery.Instance
		ttl  time.Duration
	}{
		{"empty service", func() discovery.Instance { in := ok; in.Service = ""; return in }(), time.Minute},
		{"slash in version", func() discovery.Instance { in := ok; in.Version = "v1/x"; return in }(), time.Minute},
		{"upper-case id", func() discovery.Instance { in := ok; in.ID = "A1"; return in }(), time.Minute},
		{"no address", func() discovery.Instance { in := ok; in.Address = ""; return in }(), time.Minute},
		{"zero ttl", ok, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := discovery.Register(ctx, cli, testPrefix, tt.in, tt.ttl, quiet())
			if !errors.Is(err, discovery.ErrDiscoveryInvalid) {
				if r != nil {
					_ = r.Close(ctx)
				}
				t.Fatalf("Register() = %v, want ErrDiscoveryInvalid", err)
			}
		})
	}
	for _, e := range []discovery.Exposure{
		{Service: "", PathPrefixes: []string{"/x"}},
		{Service: "feed", PathPrefixes: []string{"feed"}},
	} {
		if err := discovery.PutExposure(ctx, cli, testPrefix, e); !errors.Is(err, discovery.ErrDiscoveryInvalid) {
			t.Errorf("PutExposure(%+v) = %v, want ErrDiscoveryInvalid", e, err)
		}
	}
}

func TestRegisterUpdateClose(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testContext(t)
	cat := runCatalog(t, cli, quiet())
	if err := cat.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}

	in := instance("profiles", "v1", "a1")
	changed := cat.Changed()
	r, err := discovery.Register(ctx, cli, testPrefix, in, time.Minute, quiet())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("Changed() not closed after Register")
	}
	want := in
	want.LeaseSeconds = 60 // the registration records its lease
	if got := cat.Instances("profiles"); len(got) != 1 || got[0] != want {
		t.Fatalf("Instances(profiles) = %+v, want [%+v]", got, want)
	}
	if got, want := cat.Services(), []string{"profiles"}; !slices.Equal(got, want) {
		t.Fatalf("Services() = %v, want %v", got, want)
	}

	in.RuleRevision = 7
	if err := r.Update(ctx, in); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "rule revision 7", func() bool {
		got := cat.Instances("profiles")
		return len(got) == 1 && got[0].RuleRevision == 7
	})
	other := in
	other.ID = "b2"
	if err := r.Update(ctx, other); !errors.Is(err, discovery.ErrDiscoveryInvalid) {
		t.Fatalf("Update(other id) = %v, want ErrDiscoveryInvalid", err)
	}

	// The lease is a minute long: disappearing within a second proves the revoke.
	start := time.Now()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "instance gone after Close", func() bool { return len(cat.Instances("profiles")) == 0 })
	t.Logf("gone %v after Close", time.Since(start))
	if got := cat.Services(); len(got) != 0 {
		t.Fatalf("Services() = %v, want none", got)
	}
	resp, err := cli.Get(ctx, discovery.InstanceKey(testPrefix, in))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("Get(instance key) after Close = %v, %v; want no key", resp, err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("second Close() = %v, want nil", err)
	}
	if err := r.Update(ctx, in); !errors.Is(err, discovery.ErrDiscoveryClosed) {
		t.Fatalf("Update after Close = %v, want ErrDiscoveryClosed", err)
	}
}

// A sidecar that dies without Close disappears when its lease expires.
func TestInstanceExpiresWithoutClose(t *testing.T) {
	s, cli := startEtcd(t)
	ctx := testContext(t)
	cat := runCatalog(t, cli, quiet())

	const ttl = 2 * time.Second
	dying := newClient(t, s.Endpoints()...)
	r, err := discovery.Register(ctx, dying, testPrefix, instance("feed", "v2", "x"), ttl, quiet())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "instance registered", hasIDs(cat, "feed", "v2/x"))

	// The process "dies": its connection to etcd is gone, no more keep-alives.
	if err := dying.Close(); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, ttl+1500*time.Millisecond, "instance expired", hasIDs(cat, "feed"))
	t.Logf("expired %v after the client closed (ttl %v)", took, ttl)

	// Close on a dead client returns promptly (the revoke fails) and stops the keeper.
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = r.Close(cctx)
}

// A compaction past the catalog's watch revision makes it re-list; it
// converges on exactly what etcd holds.
func TestCatalogRelistsAfterCompaction(t *testing.T) {
	s, cli := startEtcd(t)
	ctx := testContext(t)
	px := newProxy(t, s.ClientAddr())
	logs := &logRecorder{}
	cat := runCatalog(t, newClient(t, "http://"+px.addr()), logs.logger())

	for i := range 10 {
		r, err := discovery.Register(ctx, cli, testPrefix, instance("msgs", "v1", fmt.Sprint("i", i)), time.Minute, quiet())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = r.Close(ctx) }()
	}
	waitFor(t, 5*time.Second, "10 instances", func() bool { return len(cat.Instances("msgs")) == 10 })

	px.pause()
	waitFor(t, 5*time.Second, "Connected=false", func() bool { return !cat.Status().Connected })
	// Many changes while the catalog is cut off, then compact them away.
	for i := range 10 {
		key := discovery.InstanceKey(testPrefix, instance("msgs", "v1", fmt.Sprint("i", i)))
		if i%2 == 0 {
			if _, err := cli.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 50 {
		in := instance("feed", "v3", "f")
		in.RuleRevision = int64(i + 1)
		if _, err := cli.Put(ctx, discovery.InstanceKey(testPrefix, in), mustJSON(t, in)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cli.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	px.resume()

	want := []string{"v1/i1", "v1/i3", "v1/i5", "v1/i7", "v1/i9"}
	took := waitFor(t, 15*time.Second, "catalog converged", func() bool {
		f := cat.Instances("feed")
		return slices.Equal(ids(cat.Instances("msgs")), want) && len(f) == 1 && f[0].RuleRevision == 50
	})
	t.Logf("converged %v after the proxy resumed", took)
	if n := logs.count("discovery: watch compacted; re-listing"); n != 1 {
		t.Fatalf("logged the compaction re-list %d times, want 1", n)
	}
	if st := cat.Status(); !st.Connected || st.Revision < resp.Header.Revision || !st.DisconnectedSince.IsZero() {
		t.Fatalf("Status() = %+v, want connected at revision >= %d", st, resp.Header.Revision)
	}
	if n := logs.count("discovery: etcd unreachable; serving last known state"); n != 1 {
		t.Fatalf("logged the outage %d times, want once", n)
	}
}

// With etcd stopped the catalog serves its last state and says it is
// disconnected; when etcd comes back on the same Dir and ports, the
// registration re-registers and the catalog reconnects and converges.
func TestEtcdRestart(t *testing.T) {
	dir := t.TempDir()
	s := etcdtest.Start(t, etcdembed.Config{Dir: dir})
	clientAddr, peerAddr := s.ClientAddr(), s.PeerAddr()
	ctx := testContext(t)
	logs := &logRecorder{}
	cat := runCatalog(t, newClient(t, s.Endpoints()...), logs.logger())
	regCli := newClient(t, s.Endpoints()...)

	const ttl = 2 * time.Second
	in := instance("profiles", "v1", "a1")
	r, err := discovery.Register(ctx, regCli, testPrefix, in, ttl, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close(ctx) }()
	waitFor(t, 5*time.Second, "instance registered", hasIDs(cat, "profiles", "v1/a1"))

	stopped := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd Close took %v", time.Since(stopped))
	took := waitFor(t, 10*time.Second, "Connected=false", func() bool { return !cat.Status().Connected })
	t.Logf("Connected=false %v after etcd Close returned (%v after it began)", took, time.Since(stopped))
	st := cat.Status()
	if st.DisconnectedSince.IsZero() || st.LastError == "" || !st.Synced {
		t.Fatalf("Status() during outage = %+v, want DisconnectedSince, LastError and Synced set", st)
	}
	// Outlive the lease on the client side, so the registration must re-grant.
	waitFor(t, 10*time.Second, "lease lost", func() bool {
		return logs.count("discovery: registration lease lost; re-registering") == 1
	})
	if got := ids(cat.Instances("profiles")); !slices.Equal(got, []string{"v1/a1"}) {
		t.Fatalf("Instances during outage = %v, want the last known [v1/a1]", got)
	}

	etcdtest.Start(t, etcdembed.Config{Dir: dir, ClientAddr: clientAddr, PeerAddr: peerAddr})
	restarted := time.Now()
	waitFor(t, 15*time.Second, "Connected=true", func() bool { return cat.Status().Connected })
	t.Logf("Connected=true %v after restart", time.Since(restarted))
	waitFor(t, 15*time.Second, "re-registered", func() bool {
		return logs.count("discovery: re-registered") == 1
	})
	t.Logf("re-registered %v after restart", time.Since(restarted))

	// Changes after the restart reach the catalog.
	if err := discovery.PutExposure(ctx, regCli, testPrefix, discovery.Exposure{Service: "profiles", PathPrefixes: []string{"/p"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "exposure after restart", func() bool { return len(cat.Exposures()) == 1 })
	// The old lease (restored by etcd, no longer kept alive) expires without
	// taking the re-registered key with it.
	time.Sleep(ttl + time.Second)
	if got := ids(cat.Instances("profiles")); !slices.Equal(got, []string{"v1/a1"}) {
		t.Fatalf("Instances after restart = %v, want [v1/a1]", got)
	}
	resp, err := regCli.Get(ctx, discovery.InstanceKey(testPrefix, in))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get(instance key) after restart = %v, %v; want the key", resp, err)
	}
	if n := logs.count("discovery: etcd unreachable; serving last known state"); n != 1 {
		t.Fatalf("logged the outage %d times, want once", n)
	}
	if n := logs.count("discovery: etcd reachable again"); n != 1 {
		t.Fatalf("logged the recovery %d times, want once", n)
	}
	if st := cat.Status(); !st.DisconnectedSince.IsZero() {
		t.Fatalf("Status().DisconnectedSince = %v after recovery, want zero", st.DisconnectedSince)
	}
}

func TestExposuresAndMalformedEntries(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testContext(t)
	logs := &logRecorder{}

	for _, e := range []discovery.Exposure{
		{Service: "profiles", PathPrefixes: []string{"/profiles", "/me"}},
		{Service: "feed", PathPrefixes: []string{"/feed"}},
	} {
		if err := discovery.PutExposure(ctx, cli, testPrefix, e); err != nil {
			t.Fatal(err)
		}
	}
	good := instance("feed", "v1", "ok")
	mismatch := instance("feed", "v1", "other")
	raw := map[string]string{
		discovery.InstanceKey(testPrefix, good):                           mustJSON(t, good),
		discovery.InstanceKey(testPrefix, instance("feed", "v1", "bad")):  "{not json",
		discovery.InstanceKey(testPrefix, instance("feed", "v1", "liar")): mustJSON(t, mismatch),
		discovery.ExposureKey(testPrefix, "broken"):                       `{"service":"broken","pathPrefixes":["nope"]}`,
		testPrefix + "rules/something-else":                               "ignored",
	}
	for k, v := range raw {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}

	cat := runCatalog(t, cli, logs.logger())
	if err := cat.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(cat.Instances("feed")), []string{"v1/ok"}; !slices.Equal(got, want) {
		t.Fatalf("Instances(feed) = %v, want %v", got, want)
	}
	var svcs []string
	for _, e := range cat.Exposures() {
		svcs = append(svcs, e.Service)
	}
	if want := []string{"feed", "profiles"}; !slices.Equal(svcs, want) {
		t.Fatalf("Exposures() services = %v, want %v", svcs, want)
	}
	if n := logs.count("discovery: skipping malformed instance"); n != 2 {
		t.Fatalf("logged %d malformed instances, want 2", n)
	}
	if n := logs.count("discovery: skipping malformed exposure"); n != 1 {
		t.Fatalf("logged %d malformed exposures, want 1", n)
	}

	// A good entry overwritten by garbage through the watch is dropped.
	changed := cat.Changed()
	if _, err := cli.Put(ctx, discovery.InstanceKey(testPrefix, good), "garbage"); err != nil {
		t.Fatal(err)
	}
	<-changed
	if got := cat.Instances("feed"); len(got) != 0 {
		t.Fatalf("Instances(feed) after garbage = %v, want none", ids(got))
	}
	if got := cat.Services(); len(got) != 0 {
		t.Fatalf("Services() = %v, want none", got)
	}
}

func TestWaitSyncedWithoutEtcd(t *testing.T) {
	// Nothing listens on a port that was just closed.
	cli := newClient(t, "http://"+freeAddr(t))
	cat := runCatalog(t, cli, quiet())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := cat.WaitSynced(ctx); !errors.Is(err, discovery.ErrDiscoveryNotSynced) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSynced() = %v, want ErrDiscoveryNotSynced and DeadlineExceeded", err)
	}
	waitFor(t, 10*time.Second, "an error in Status", func() bool { return cat.Status().LastError != "" })
	if st := cat.Status(); st.Synced || st.Connected {
		t.Fatalf("Status() = %+v, want neither synced nor connected", st)
	}
	if got := cat.Instances("any"); got != nil {
		t.Fatalf("Instances() = %v, want nil", got)
	}
}

func BenchmarkCatalogInstances(b *testing.B) {
	s := etcdtest.Run(b)
	ctx := context.Background()
	cli, err := s.Client(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	for i := range 20 {
		in := instance(fmt.Sprint("svc", i%4), "v1", fmt.Sprint("i", i))
		if _, err := cli.Put(ctx, discovery.InstanceKey(testPrefix, in), mustJSON(b, in)); err != nil {
			b.Fatal(err)
		}
	}
	cat := discovery.NewCatalog(cli, testPrefix, quiet())
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cat.Run(rctx) }()
	defer func() { cancel(); <-done }()
	if err := cat.WaitSynced(ctx); err != nil {
		b.Fatal(err)
	}
	if n := len(cat.Instances("svc1")); n != 5 {
		b.Fatalf("Instances(svc1) has %d, want 5", n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n := 0
		for pb.Next() {
			n += len(cat.Instances("svc1"))
		}
		_ = n
	})
}

func TestCatalogRunTwice(t *testing.T) {
	_, cli := startEtcd(t)
	cat := runCatalog(t, cli, quiet())
	if err := cat.WaitSynced(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := cat.Run(testContext(t)); !errors.Is(err, discovery.ErrDiscoveryRunning) {
		t.Fatalf("second Run() = %v, want ErrDiscoveryRunning", err)
	}
}

// TestExposureClaims: a path claimed by one service is refused to another
// (a longer prefix inside it too), instances of one service share theirs,
// and a claim goes with its owner's lease.
func TestExposureClaims(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testContext(t)
	reg := func(svc, id string) *discovery.Registration {
		r, err := discovery.Register(ctx, cli, testPrefix, instance(svc, "v1", id), 2*time.Second, quiet())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close(context.Background()) })
		return r
	}
	a1, a2, b := reg("profiles", "a1"), reg("profiles", "a2"), reg("thief", "b1")
	if err := a1.ClaimExposure(ctx, testPrefix, discovery.Exposure{Service: "profiles", PathPrefixes: []string{"/profiles/"}}); err != nil {
		t.Fatal(err)
	}
	if err := a2.ClaimExposure(ctx, testPrefix, discovery.Exposure{Service: "profiles", PathPrefixes: []string{"/profiles/"}}); err != nil {
		t.Fatalf("a second instance of the same service: %v, want its claim stored", err)
	}
	for _, p := range []string{"/profiles/", "/profiles/admin/", "/"} {
		err := b.ClaimExposure(ctx, testPrefix, discovery.Exposure{Service: "thief", PathPrefixes: []string{p}})
		if !errors.Is(err, discovery.ErrPathClaimed) {
			t.Errorf("another service claiming %q: %v, want ErrPathClaimed", p, err)
		}
		if err := discovery.PutExposure(ctx, cli, testPrefix, discovery.Exposure{Service: "thief", PathPrefixes: []string{p}}); !errors.Is(err, discovery.ErrPathClaimed) {
			t.Errorf("PutExposure of %q by another service: %v, want ErrPathClaimed", p, err)
		}
	}
	if err := a1.ClaimExposure(ctx, testPrefix, discovery.Exposure{Service: "thief", PathPrefixes: []string{"/x/"}}); !errors.Is(err, discovery.ErrDiscoveryInvalid) {
		t.Errorf("an instance claiming for another service: %v, want ErrDiscoveryInvalid", err)
	}
	resp, err := cli.Get(ctx, discovery.ExposuresPrefix(testPrefix), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 2 {
		t.Fatalf("exposures stored: %v, %v; want the two claims of profiles", resp, err)
	}
	// Once both owners are gone, the path is free.
	_ = a1.Close(ctx)
	_ = a2.Close(ctx)
	if err := b.ClaimExposure(ctx, testPrefix, discovery.Exposure{Service: "thief", PathPrefixes: []string{"/profiles/"}}); err != nil {
		t.Errorf("claim after the owners left: %v, want it stored", err)
	}
}
