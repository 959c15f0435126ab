package meshtls_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/ca"
	"github.com/griddle-mesh/griddle/internal/meshtls"
)

// issue writes a certificate for id into dir/name.
func issue(t *testing.T, authority *ca.CA, dir, name string, id meshtls.Identity, hosts ...string) meshtls.Files {
	t.Helper()
	is, err := authority.Issue(ca.Request{Identity: id, TTL: time.Hour, Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	f, err := is.Write(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func open(t *testing.T, f meshtls.Files, want func(meshtls.Identity, bool) error) *meshtls.Source {
	t.Helper()
	s, err := meshtls.Open(f, meshtls.Options{Reload: -1, Want: want})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// serve accepts TLS connections with src and echoes a line back; it
// returns the mangos-style address.
func serve(t *testing.T, src *meshtls.Source) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", src.Server())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return "tls+tcp://" + ln.Addr().String()
}

func dial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	c, err := tls.Dial("tcp", addr[len("tls+tcp://"):], cfg)
	if err != nil {
		return nil, err
	}
	// A TLS 1.3 client learns of a refused certificate at its first read.
	if _, err := c.Write([]byte("x")); err != nil {
		c.Close()
		return nil, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func TestIdentitiesAndRotation(t *testing.T) {
	dir := t.TempDir()
	authority, err := ca.Init(filepath.Join(dir, "ca"), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hello := meshtls.Identity{Service: "hello", Version: "v1"}
	helloFiles := issue(t, authority, dir, "hello", hello)
	server := open(t, helloFiles, meshtls.WantWorkload("hello", "v1"))
	edge := open(t, issue(t, authority, dir, "edge", meshtls.Edge), meshtls.WantEdge)
	addr := serve(t, server)

	if id, ok := server.Identity(); !ok || id != hello || id.String() != "spiffe://griddle/hello/v1" {
		t.Fatalf("server identity %v %v, want %v", id, ok, hello)
	}
	c, err := dial(addr, edge.ClientFor("hello", addr))
	if err != nil {
		t.Fatalf("edge → hello: %v", err)
	}
	defer c.Close()
	if id, ok := server.Peer(c.LocalAddr()); !ok || !id.IsEdge() {
		t.Errorf("the server saw the peer as %v %v, want the edge", id, ok)
	}
	if _, ok := server.Peer(c.LocalAddr()); ok {
		t.Error("Peer answered twice for one connection")
	}

	// An instance registered as profiles that holds hello's certificate
	// is refused by the dialer.
	if _, err := dial(addr, edge.ClientFor("profiles", addr)); !errors.Is(err, meshtls.ErrPeer) {
		t.Errorf("dialling profiles, meeting hello's certificate: %v, want ErrPeer", err)
	}
	// A sidecar of hello given profiles' certificate does not start.
	profilesFiles := issue(t, authority, dir, "profiles", meshtls.Identity{Service: "profiles", Version: "v1"})
	if _, err := meshtls.Open(profilesFiles, meshtls.Options{Reload: -1, Want: meshtls.WantWorkload("hello", "v1")}); !errors.Is(err, meshtls.ErrConfig) {
		t.Errorf("hello with profiles' certificate: %v, want ErrConfig", err)
	}
	// A CA of someone else's is refused both ways.
	otherCA, err := ca.Init(filepath.Join(dir, "other-ca"), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stranger := open(t, issue(t, otherCA, dir, "stranger", meshtls.Edge), nil)
	if _, err := dial(addr, stranger.ClientFor("hello", addr)); err == nil {
		t.Error("a certificate of another CA got a connection")
	}

	// Rotation: a new certificate in the same files is used for the next
	// handshake; the connection made before keeps working.
	before := server.Leaf().SerialNumber
	issue(t, authority, dir, "hello", hello)
	if !server.Reload() {
		t.Fatal("Reload found nothing new")
	}
	if server.Reload() {
		t.Error("Reload of unchanged files reported new material")
	}
	if server.Leaf().SerialNumber.Cmp(before) == 0 {
		t.Fatal("the serial did not change")
	}
	c2, err := dial(addr, edge.ClientFor("hello", addr))
	if err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	defer c2.Close()
	if got := c2.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(server.Leaf().SerialNumber) != 0 {
		t.Errorf("new connection got serial %v, want the rotated %v", got, server.Leaf().SerialNumber)
	}
	if _, err := c.Write([]byte("y")); err != nil {
		t.Errorf("the connection made before the rotation: %v", err)
	}
	// A rotation to another service's certificate is refused; the one in
	// use stays.
	inUse := server.Leaf().SerialNumber
	issue(t, authority, dir, "hello", meshtls.Identity{Service: "profiles", Version: "v1"})
	if server.Reload() || server.Leaf().SerialNumber.Cmp(inUse) != 0 {
		t.Error("a rotation to profiles' certificate was taken")
	}
}

// TestBringYourOwnCA: certificates without an identity (an operator's
// own CA) are checked against the address dialled, as before.
func TestBringYourOwnCA(t *testing.T) {
	f, err := meshtls.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := open(t, f, meshtls.WantWorkload("hello", "v1"))
	if _, ok := src.Identity(); ok {
		t.Fatal("a test certificate has an identity")
	}
	addr := serve(t, src)
	c, err := dial(addr, src.ClientFor("hello", addr))
	if err != nil {
		t.Fatalf("127.0.0.1 with a certificate for 127.0.0.1: %v", err)
	}
	c.Close()
	_, port, _ := net.SplitHostPort(addr[len("tls+tcp://"):])
	if _, err := dial("tls+tcp://127.0.0.2:"+port, src.ClientFor("hello", "tls+tcp://127.0.0.2:"+port)); err == nil {
		t.Error("127.0.0.2 with a certificate for 127.0.0.1 only: got a connection")
	}
}

func TestParseIdentity(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want meshtls.Identity
		ok   bool
	}{
		{"spiffe://griddle/hello/v1", meshtls.Identity{Service: "hello", Version: "v1"}, true},
		{"spiffe://griddle/edge", meshtls.Edge, true},
		{"spiffe://griddle/edge/v1", meshtls.Identity{}, false},
		{"spiffe://other/hello/v1", meshtls.Identity{}, false},
		{"spiffe://griddle/hello", meshtls.Identity{}, false},
		{"spiffe://griddle/Hello/v1", meshtls.Identity{}, false},
		{"https://griddle/hello/v1", meshtls.Identity{}, false},
	} {
		u, _ := url.Parse(tc.uri)
		got, ok := meshtls.ParseIdentity(u)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseIdentity(%s) = %v %v, want %v %v", tc.uri, got, ok, tc.want, tc.ok)
		}
	}
}
