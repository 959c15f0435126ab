package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/rep"
	"go.nanomsg.org/mangos/v3/protocol/req"
	_ "go.nanomsg.org/mangos/v3/transport/tlstcp"
	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/ca"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/meshtls"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// workloadCerts makes a CA and issues certificates for the edge and the
// given service/version pairs; it returns each one's --tls-* flags.
func workloadCerts(t *testing.T, ttl time.Duration, ids ...meshtls.Identity) (*ca.CA, string, map[meshtls.Identity][]string) {
	t.Helper()
	dir := t.TempDir()
	authority, err := ca.Init(filepath.Join(dir, "ca"), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	flags := map[meshtls.Identity][]string{}
	for _, id := range append(ids, meshtls.Edge) {
		flags[id] = issueInto(t, authority, filepath.Join(dir, id.Service+"-"+id.Version), id, ttl)
	}
	return authority, dir, flags
}

func issueInto(t *testing.T, authority *ca.CA, dir string, id meshtls.Identity, ttl time.Duration) []string {
	t.Helper()
	is, err := authority.Issue(ca.Request{Identity: id, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	f, err := is.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA}
}

func filesOf(flags []string) meshtls.Files {
	return meshtls.Files{Cert: flags[1], Key: flags[3], CA: flags[5]}
}

// metricValue sums the samples of a Prometheus counter on admin's
// /metrics whose labels include every one given ("name{a="b"}" form).
func metricValue(t *testing.T, admin, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
lines:
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		var v float64
		fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		sum += v
	}
	return sum
}

// TestAuthorizationPolicy: with workload certificates and a policy in the
// rules, the receiving sidecar lets allowed callers through and answers
// the others 403; a sidecar given another service's certificate can
// neither start as that service nor serve in its place.
func TestAuthorizationPolicy(t *testing.T) {
	hello := meshtls.Identity{Service: "hello", Version: "v1"}
	profiles := meshtls.Identity{Service: "profiles", Version: "v1"}
	messages := meshtls.Identity{Service: "messages", Version: "v1"}
	_, _, certs := workloadCerts(t, time.Hour, hello, profiles, messages)

	m := meshtest.Start(t, bin)
	listen := []string{"--listen", "tls+tcp://127.0.0.1:0"}
	helloSC := m.Sidecar("hello", "v1", append(append(listen, "--http-prefix", "/hello/"), certs[hello]...)...)
	profilesSC := m.Sidecar("profiles", "v1", append(append(listen, "--http-prefix", "/profiles/"), certs[profiles]...)...)
	m.Sidecar("messages", "v1", append(append(listen, "--http-prefix", "/messages/"), certs[messages]...)...)
	e := m.Edge(append([]string{"--timeout", "3s"}, certs[meshtls.Edge]...)...)
	seed(t, e.Addr, 10) // before profiles has a policy

	applyRules(t, m, "service: hello\nhttp: [{pathPrefix: /hello/}]\nversions: [{to: {v1: 100}}]\nauthorization: {allow: [{from: profiles}]}\n")
	applyRules(t, m, "service: profiles\nhttp: [{pathPrefix: /profiles/}]\nversions: [{to: {v1: 100}}]\nauthorization: {allow: [{from: edge}, {from: feed}]}\n")

	// profiles may call hello.
	if status, body, _ := get(t, "http://"+e.Addr+"/profiles/7/greeting"); status != 200 || !strings.Contains(body, "hello, user-7") {
		t.Errorf("profiles → hello (allowed): %d %s, want 200 with the greeting", status, body)
	}
	// The edge may not call hello: 403 from hello's sidecar.
	if status, body, h := get(t, "http://"+e.Addr+"/hello/greet?name=x"); status != 403 || h.Get("X-Griddle-Error-Id") == "" {
		t.Errorf("edge → hello (not allowed): %d %s, want 403 with an error id", status, body)
	}
	// messages may not call profiles: the message is refused.
	resp, err := client.Post("http://"+e.Addr+"/messages/7", "application/json", strings.NewReader(`{"from":"1","text":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Errorf("messages → profiles (not allowed): the message was answered %d, want a failure", resp.StatusCode)
	}
	for _, c := range []struct {
		proc           *meshtest.Proc
		from, decision string
	}{
		{helloSC, "profiles", "allowed"},
		{helloSC, "edge", "denied"},
		{profilesSC, "edge", "allowed"},
		{profilesSC, "messages", "denied"},
	} {
		if v := metricValue(t, c.proc.Admin, "griddle_sidecar_authorization_total", `from="`+c.from+`"`, `decision="`+c.decision+`"`); v < 1 {
			t.Errorf("%s: authorization %s from %s counted %v times, want at least 1", c.proc.Name, c.decision, c.from, v)
		}
	}

	// The identity is the certificate's, whatever else a caller says: a
	// process holding messages' certificate is refused by hello, one
	// holding profiles' is let through.
	helloAddr := instanceAddress(t, m, "hello")
	for _, c := range []struct {
		who  meshtls.Identity
		want wire.Code
	}{{messages, wire.Code_CODE_FORBIDDEN}, {profiles, wire.Code_CODE_OK}} {
		if got := callDirect(t, filesOf(certs[c.who]), helloAddr); got != c.want {
			t.Errorf("a caller with %s's certificate: code %v, want %v", c.who.Service, got, c.want)
		}
	}

	// A sidecar given another service's certificate does not start.
	for _, svc := range []string{"hello", "messages"} {
		out, err := exec.Command(bin.Griddle, append([]string{"sidecar", "--service", svc, "--version", "v1",
			"--plugin", bin.Handlers[svc], "--etcd", m.EtcdEndpoints(), "--listen", "tls+tcp://127.0.0.1:0"}, certs[profiles]...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "certificate of spiffe://griddle/profiles/v1") {
			t.Errorf("%s with profiles' certificate: %v %s, want a refusal naming the certificate", svc, err, out)
		}
	}

	// One that registers as hello with profiles' certificate anyway gets no
	// request: the callers check the identity of the instance they dial.
	var rogueGot atomic.Int64
	rogueAddr := rogueInstance(t, m, filesOf(certs[profiles]), hello, &rogueGot)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(fmt.Sprint(instanceAddresses(t, m, "hello")), rogueAddr) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the callers' catalogs have it
	for i := range 30 {
		if status, body, _ := get(t, "http://"+e.Addr+"/profiles/7/greeting"); status != 200 {
			t.Errorf("request %d with a rogue hello registered: %d %s, want 200", i, status, body)
		}
	}
	if n := rogueGot.Load(); n != 0 {
		t.Errorf("the instance with profiles' certificate registered as hello received %d requests, want 0", n)
	}
}

// instanceAddresses lists the registered addresses of service's instances.
func instanceAddresses(t *testing.T, m *meshtest.Mesh, service string) []string {
	t.Helper()
	resp, err := m.Cli.Get(context.Background(), discovery.InstancesPrefix(discovery.DefaultPrefix)+service+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		var in discovery.Instance
		if json.Unmarshal(kv.Value, &in) == nil {
			out = append(out, in.Address)
		}
	}
	return out
}

func instanceAddress(t *testing.T, m *meshtest.Mesh, service string) string {
	t.Helper()
	a := instanceAddresses(t, m, service)
	if len(a) != 1 {
		t.Fatalf("%s: instances at %v, want one", service, a)
	}
	return a[0]
}

// callDirect sends one GET /hello/greet envelope to the sidecar at addr
// over mutual TLS with the certificate in f, and returns the reply's code.
func callDirect(t *testing.T, f meshtls.Files, addr string) wire.Code {
	t.Helper()
	src, err := meshtls.Open(f, meshtls.Options{Reload: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	sock, err := req.NewSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	_ = sock.SetOption(mangos.OptionRecvDeadline, 5*time.Second)
	if err := sock.DialOptions(addr, map[string]any{mangos.OptionTLSConfig: src.ClientFor("hello", addr)}); err != nil {
		t.Fatal(err)
	}
	body, _ := proto.Marshal(&wire.Request{Id: "direct-1", Service: "hello", Method: "GET", Path: "/hello/greet", RawQuery: "name=direct",
		TimeoutNanos: int64(3 * time.Second), Attempt: 1})
	if err := sock.Send(body); err != nil {
		t.Fatal(err)
	}
	b, err := sock.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var reply wire.Reply
	if err := proto.Unmarshal(b, &reply); err != nil {
		t.Fatal(err)
	}
	return reply.GetCode()
}

// rogueInstance serves a REP socket on tls+tcp with the certificate in f,
// registered in etcd as an instance of as; got counts what it receives.
func rogueInstance(t *testing.T, m *meshtest.Mesh, f meshtls.Files, as meshtls.Identity, got *atomic.Int64) string {
	t.Helper()
	src, err := meshtls.Open(f, meshtls.Options{Reload: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	sock, err := rep.NewSocket()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	ln, err := sock.NewListener("tls+tcp://127.0.0.1:0", map[string]any{mangos.OptionTLSConfig: src.Server()})
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			msg, err := sock.RecvMsg()
			if err != nil {
				return
			}
			got.Add(1)
			b, _ := proto.Marshal(&wire.Reply{Status: 200, Body: []byte("hello, from the rogue")})
			msg.Body = b
			_ = sock.SendMsg(msg)
		}
	}()
	addr := ln.Address()
	reg, err := discovery.Register(context.Background(), m.Cli, discovery.DefaultPrefix,
		discovery.Instance{ID: "rogue", Service: as.Service, Version: as.Version, Address: addr, Started: time.Now()}, 5*time.Second, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(context.Background()) })
	return addr
}
