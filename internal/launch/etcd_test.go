package launch

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/internal/ca"
	"github.com/griddle-mesh/griddle/internal/etcdembed"
	"github.com/griddle-mesh/griddle/internal/meshtls"
)

func issueFiles(t *testing.T, authority *ca.CA, dir string, id meshtls.Identity, hosts ...string) meshtls.Files {
	t.Helper()
	is, err := authority.Issue(ca.Request{Identity: id, TTL: time.Hour, Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	f, err := is.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestEtcdTLSAndUsers: every component's etcd connection (Etcd.Client)
// works with an etcd that wants TLS and client certificates, and with one
// that has authentication on; without the credentials it gets nothing.
func TestEtcdTLSAndUsers(t *testing.T) {
	dir := t.TempDir()
	authority, err := ca.Init(filepath.Join(dir, "ca"), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server := issueFiles(t, authority, filepath.Join(dir, "server"), meshtls.Identity{Service: "etcd", Version: "v1"}, "127.0.0.1")
	client := issueFiles(t, authority, filepath.Join(dir, "client"), meshtls.Identity{Service: "hello", Version: "v1"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := etcdembed.Start(ctx, etcdembed.Config{Dir: filepath.Join(dir, "etcd"), UnsafeNoFsync: true,
		CertFile: server.Cert, KeyFile: server.Key, ClientCAFile: server.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	eps := srv.Endpoints()

	try := func(e Etcd) error {
		cli, err := e.Client(slog.Default())
		if err != nil {
			return err
		}
		defer cli.Close()
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		defer ccancel()
		_, err = cli.Put(cctx, "/griddle/probe", "x")
		return err
	}
	withCert, err := EtcdTLS(client.Cert, client.Key, client.CA)
	if err != nil {
		t.Fatal(err)
	}
	if err := try(Etcd{Endpoints: eps, TLS: withCert}); err != nil {
		t.Fatalf("with the CA and a client certificate: %v", err)
	}
	caOnly, err := EtcdTLS("", "", client.CA)
	if err != nil {
		t.Fatal(err)
	}
	if err := try(Etcd{Endpoints: eps, TLS: caOnly}); err == nil {
		t.Error("without a client certificate: the write went through")
	}
	if err := try(Etcd{Endpoints: eps}); err == nil {
		t.Error("in plain text: the write went through")
	}

	// Authentication: a root user, then a griddle user with a role on
	// Griddle's prefix.
	cli, err := (Etcd{Endpoints: eps, TLS: withCert}).Client(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "griddle"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "griddle", "/griddle/", clientv3.GetPrefixRangeEnd("/griddle/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "sidecar", "sidecar-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "sidecar", "griddle"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := try(Etcd{Endpoints: eps, TLS: withCert, Username: "sidecar", Password: "sidecar-pw"}); err != nil {
		t.Errorf("as user sidecar: %v", err)
	}
	if err := try(Etcd{Endpoints: eps, TLS: withCert, Username: "sidecar", Password: "wrong"}); err == nil {
		t.Error("with a wrong password: the write went through")
	}
	if err := (Etcd{Endpoints: eps, Username: "sidecar"}).Validate(); err == nil {
		t.Error("a user without a password: no error")
	}
}

func TestEtcdTLSFlags(t *testing.T) {
	for name, args := range map[string][3]string{
		"cert without ca":  {"c", "k", ""},
		"cert without key": {"c", "", "ca"},
		"missing ca file":  {"", "", "/nonexistent/ca.pem"},
	} {
		if _, err := EtcdTLS(args[0], args[1], args[2]); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if c, err := EtcdTLS("", "", ""); c != nil || err != nil {
		t.Errorf("no flags: %v %v, want nil nil", c, err)
	}
}

func TestUpEtcdLoopbackOnly(t *testing.T) {
	if err := (UpConfig{EtcdAddr: "0.0.0.0:2379"}).Validate(); err == nil {
		t.Error("--etcd-listen 0.0.0.0:2379: no error")
	}
	if _, err := etcdembed.Start(context.Background(), etcdembed.Config{Dir: t.TempDir(), ClientAddr: "0.0.0.0:0", LoopbackOnly: true}); err == nil {
		t.Error("etcdembed with LoopbackOnly on 0.0.0.0: started")
	}
}
