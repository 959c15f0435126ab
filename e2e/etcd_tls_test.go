package e2e

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/internal/ca"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/etcdembed"
	"github.com/griddle-mesh/griddle/internal/launch"
	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/meshtls"
)

// TestEtcdOverTLS: a sidecar, an edge and a control plane work against an
// etcd that serves TLS only and wants a client certificate; a sidecar
// without the certificate never registers.
func TestEtcdOverTLS(t *testing.T) {
	dir := t.TempDir()
	authority, err := ca.Init(filepath.Join(dir, "ca"), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, id meshtls.Identity, hosts ...string) meshtls.Files {
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
	server := issue("etcd", meshtls.Identity{Service: "etcd", Version: "v1"}, "127.0.0.1")
	client := issue("client", meshtls.Identity{Service: "hello", Version: "v1"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := etcdembed.Start(ctx, etcdembed.Config{Dir: filepath.Join(dir, "etcd-data"), UnsafeNoFsync: true,
		CertFile: server.Cert, KeyFile: server.Key, ClientCAFile: server.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	ep := etcd.Endpoints()[0]
	if !strings.HasPrefix(ep, "https://") {
		t.Fatalf("endpoint %s: want https://", ep)
	}
	withCert := []string{"--etcd", ep, "--etcd-ca", client.CA, "--etcd-cert", client.Cert, "--etcd-key", client.Key}

	m := meshtest.Start(t, bin)
	m.Griddle("sidecar over TLS etcd", append([]string{"sidecar", "--service", "hello", "--version", "v1",
		"--plugin", bin.Handlers["hello"], "--http-prefix", "/hello/", "--ttl", "2s"}, withCert...)...)
	edgeAddr, edgeAdmin := meshtest.FreeAddr(t), meshtest.FreeAddr(t)
	m.Griddle("edge over TLS etcd", append([]string{"edge", "--listen", edgeAddr, "--admin", edgeAdmin}, withCert...)...)
	controlAddr := meshtest.FreeAddr(t)
	m.Griddle("control over TLS etcd", append([]string{"control", "--listen", controlAddr, "--token-file",
		writeFile(t, "tokens", "ann admin ann-secret-0123456789\n")}, withCert...)...)

	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body, _ := getQuiet("http://" + edgeAddr + "/hello/greet?name=tls")
		if status == 200 && body == "hello, tls" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no greeting through an edge and a sidecar on TLS etcd within 30s: %d %q", status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		resp, err := http.Get("http://" + controlAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the control plane on TLS etcd is not healthy within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Without the client certificate: the etcd refuses it, and the
	// sidecar gives up registering.
	stranger := m.Griddle("sidecar without an etcd certificate", "sidecar", "--service", "hello", "--version", "v2",
		"--plugin", bin.Handlers["hello"], "--etcd", ep, "--etcd-ca", client.CA, "--ttl", "2s")
	tlsCfg, err := launch.EtcdTLS(client.Cert, client.Key, client.CA)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := (launch.Etcd{Endpoints: []string{ep}, TLS: tlsCfg}).Client(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	time.Sleep(3 * time.Second)
	for version, want := range map[string]int{"v1": 1, "v2": 0} {
		resp, err := cli.Get(ctx, discovery.InstancesPrefix(discovery.DefaultPrefix)+"hello/"+version+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if int(resp.Count) != want {
			t.Errorf("hello %s: %d instances registered, want %d\n%s", version, resp.Count, want, stranger.Log())
		}
	}
}

// getQuiet is get without failing the test on a transport error.
func getQuiet(url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = io.Copy(&b, resp.Body)
	return resp.StatusCode, b.String(), err
}
