package meshtls

import (
	"crypto/tls"
	"errors"
	"testing"
)

func TestFiles(t *testing.T) {
	f, err := WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.Server()
	if err != nil || srv == nil || srv.ClientAuth != tls.RequireAndVerifyClientCert || srv.MinVersion != tls.VersionTLS13 {
		t.Fatalf("Server() = %+v, %v: want mutual TLS 1.3", srv, err)
	}
	cli, err := f.Client()
	if err != nil || cli == nil || len(cli.Certificates) != 1 || cli.RootCAs == nil {
		t.Fatalf("Client() = %+v, %v: want a certificate and the CA", cli, err)
	}
	if cfg, err := (Files{}).Server(); cfg != nil || err != nil {
		t.Errorf("no files: got %v, %v; want nil, nil", cfg, err)
	}
	for name, bad := range map[string]Files{
		"no key":     {Cert: f.Cert, CA: f.CA},
		"no ca":      {Cert: f.Cert, Key: f.Key},
		"ca not pem": {Cert: f.Cert, Key: f.Key, CA: f.Key},
	} {
		if _, err := bad.Client(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Client() error %v, want ErrConfig", name, err)
		}
	}
}
