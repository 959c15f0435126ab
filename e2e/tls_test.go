package e2e

import (
	"testing"

	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/meshtls"
)

// TestMutualTLS: an edge with the mesh's certificate reaches a sidecar on
// tls+tcp://; an edge without one, or with one from another CA, cannot, and
// says so with a 503.
func TestMutualTLS(t *testing.T) {
	f, err := meshtls.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	flags := []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA}
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1", append([]string{"--http-prefix", "/hello/", "--listen", "tls+tcp://127.0.0.1:0"}, flags...)...)

	trusted := m.Edge(flags...)
	waitRoute(t, "http://"+trusted.Addr+"/hello/greet")
	if status, body, _ := get(t, "http://"+trusted.Addr+"/hello/greet?name=tls"); status != 200 || body != "hello, tls" {
		t.Errorf("edge with the mesh's certificate: %d %q, want 200 %q", status, body, "hello, tls")
	}

	other, err := meshtls.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"without a certificate":         nil,
		"with another CA's certificate": {"--tls-cert", other.Cert, "--tls-key", other.Key, "--tls-ca", other.CA},
	} {
		stranger := m.Edge(args...)
		waitRoute(t, "http://"+stranger.Addr+"/hello/greet")
		if status, _, h := get(t, "http://"+stranger.Addr+"/hello/greet?name=tls"); status != 503 || h.Get("X-Griddle-Error-Id") == "" {
			t.Errorf("edge %s: status %d, want 503 with an error id", name, status)
		}
	}
}
