package discovery_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/etcdembed"
	"github.com/griddle-mesh/griddle/internal/etcdembed/etcdtest"
)

// listen returns a live loopback listener, closed at cleanup.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestHeldAcrossEtcdOutage stops etcd while three instances are
// registered, restarts it and keeps their registrations from reaching it
// (their clients go through a cut proxy), so etcd expires their leases:
// the catalog keeps the instances that still accept connections, drops
// the one that does not at its first probe, takes back the one whose
// registration returns, and drops the one that never does after its lease.
func TestHeldAcrossEtcdOutage(t *testing.T) {
	dir := t.TempDir()
	s := etcdtest.Start(t, etcdembed.Config{Dir: dir})
	clientAddr, peerAddr := s.ClientAddr(), s.PeerAddr()
	ctx := testContext(t)
	lg := failureLog(t) // the catalog's log and the test's steps, said if it fails
	cat := runCatalog(t, newClient(t, s.Endpoints()...), lg)

	// A lease of 3 s: the hold window is three of them and two slacks
	// after etcd's return, which a busy machine's etcd needs to expire them.
	const ttl = 3 * time.Second
	type inst struct {
		in    discovery.Instance
		ln    net.Listener
		proxy *proxy
		reg   *discovery.Registration
	}
	var insts []*inst
	for _, id := range []string{"back", "dead", "silent"} {
		ln := listen(t)
		in := instance("profiles", "v1", id)
		in.Address = "tcp://" + ln.Addr().String()
		p := newProxy(t, clientAddr)
		r, err := discovery.Register(ctx, newClient(t, p.addr()), testPrefix, in, ttl, quiet())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(ctx, time.Second) // etcd may be out of its reach
			defer cancel()
			_ = r.Close(cctx)
		})
		insts = append(insts, &inst{in: in, ln: ln, proxy: p, reg: r})
	}
	back, dead := insts[0], insts[1]
	all := []string{"v1/back", "v1/dead", "v1/silent"}
	waitFor(t, 5*time.Second, "three instances", hasIDs(cat, "profiles", all...))

	for _, in := range insts {
		in.proxy.pause()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lg.Info("test: etcd stopped")
	waitFor(t, 10*time.Second, "Connected=false", func() bool { return !cat.Status().Connected })
	time.Sleep(ttl + time.Second) // the registrations' clients give their leases up

	etcdtest.Start(t, etcdembed.Config{Dir: dir, ClientAddr: clientAddr, PeerAddr: peerAddr})
	restarted := time.Now()
	lg.Info("test: etcd restarted")
	waitFor(t, 15*time.Second, "Connected=true", func() bool { return cat.Status().Connected })
	dead.ln.Close()
	lg.Info("test: catalog connected; the dead one's listener closed")

	// etcd expires the three leases about a lease period after it is back;
	// the catalog holds the two that still accept connections.
	var held int // the catalog's last state seen, said if the wait fails
	var have []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last seen: %d held, instances %v", held, have)
		}
	})
	waitFor(t, 15*time.Second, "the dead one dropped, two held", func() bool {
		held, have = cat.Status().Held, ids(cat.Instances("profiles"))
		return held == 2 && slices.Equal(have, []string{"v1/back", "v1/silent"})
	})
	t.Logf("held two, dropped the dead one %v after the restart", time.Since(restarted).Round(time.Millisecond))

	back.proxy.resume()
	waitFor(t, 10*time.Second, "back registered again", func() bool { return cat.Status().Held == 1 })
	if got := ids(cat.Instances("profiles")); !slices.Equal(got, []string{"v1/back", "v1/silent"}) {
		t.Fatalf("after one came back: %v, want back and the held silent one", got)
	}
	took := waitFor(t, 10*time.Second, "silent dropped after its lease", hasIDs(cat, "profiles", "v1/back"))
	t.Logf("the silent one dropped %v after the back one returned", took.Round(time.Millisecond))
	if st := cat.Status(); st.Held != 0 {
		t.Fatalf("Status().Held = %d at the end, want 0", st.Held)
	}
}

// TestNoHoldWithoutOutage: an instance whose lease expires while etcd is
// up leaves the catalog at once, even if its address still accepts
// connections.
func TestNoHoldWithoutOutage(t *testing.T) {
	s, cli := startEtcd(t)
	ctx := testContext(t)
	cat := runCatalog(t, cli, quiet())
	ln := listen(t)
	in := instance("profiles", "v1", "a1")
	in.Address = "tcp://" + ln.Addr().String()
	p := newProxy(t, s.ClientAddr())
	r, err := discovery.Register(ctx, newClient(t, p.addr()), testPrefix, in, 2*time.Second, quiet())
	if err != nil {
		t.Fatal(err)
	}
	// Its keeper re-registers through the paused proxy until closed;
	// Close stops it before the client goes (the revoke cannot pass).
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = r.Close(cctx)
	})
	waitFor(t, 5*time.Second, "registered", hasIDs(cat, "profiles", "v1/a1"))
	p.pause() // its keep-alives stop; etcd expires the lease
	waitFor(t, 10*time.Second, "expired", hasIDs(cat, "profiles"))
	if st := cat.Status(); st.Held != 0 {
		t.Fatalf("Status().Held = %d, want 0", st.Held)
	}
}
