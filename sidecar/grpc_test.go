package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// interopCases are the gRPC project's interop test cases that a server
// behind a proxy must pass (google.golang.org/grpc/interop/client).
var interopCases = []string{
	"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong", "empty_stream",
	"timeout_on_sleeping_server", "cancel_after_begin", "cancel_after_first_response", "custom_metadata",
	"status_code_and_message", "special_status_message", "unimplemented_method", "unimplemented_service",
}

// buildInteropClient builds the gRPC project's interop client (a tool of
// this module, see go.mod).
func buildInteropClient(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "interop-client")
	out, err := exec.Command("go", "build", "-o", bin, "google.golang.org/grpc/interop/client").CombinedOutput()
	if err != nil {
		tb.Fatalf("building the interop client: %v\n%s", err, out)
	}
	return bin
}

// TestGRPCInterop: the interop client's cases, over h2c through the edge,
// the mesh and the sidecar, against the interop TestService served by a
// Griddle handler (services/interop: a grpc.Server as the http.Handler).
func TestGRPCInterop(t *testing.T) {
	client := buildInteropClient(t)
	addr, _ := startMesh(t, meshSpec{listen: "tcp://127.0.0.1:0", plugin: "../services/interop", service: "interop",
		prefixes: []string{"/grpc.testing."}, probe: "/grpc.testing.TestService/EmptyCall", probeAny: true})
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range interopCases {
		t.Run(c, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			start := time.Now()
			out, err := exec.CommandContext(ctx, client, "--server_host="+host, "--server_port="+port,
				"--test_case="+c, "--use_tls=false").CombinedOutput()
			if err != nil {
				t.Fatalf("%s failed after %v: %v\n%s", c, time.Since(start), err, out)
			}
		})
	}
}

// TestGRPCBetweenServices: the same cases from a handler (services/interop
// as caller) to another service through its sidecar: the handler dials
// with plugins.MeshAPI.DialGRPC, its sidecar serves the tunnel over HTTP/2
// and routes each call through the mesh.
func TestGRPCBetweenServices(t *testing.T) {
	addr, _ := startMesh(t, meshSpec{plugin: "../services/interop", service: "caller", prefixes: []string{"/interop/"},
		probe: "/interop/run", probeAny: true,
		also: []meshSpec{{plugin: "../services/interop", service: "interop"}}})
	for _, c := range interopCases {
		t.Run(c, func(t *testing.T) {
			resp, err := http.Get("http://" + addr + "/interop/run?target=interop&case=" + c)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(body) != "ok\n" {
				t.Fatalf("%s: %d %s", c, resp.StatusCode, body)
			}
		})
	}
	t.Run("no such service", func(t *testing.T) { // the calls go where they are sent
		resp, err := http.Get("http://" + addr + "/interop/run?target=ghost&case=empty_unary")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 200 {
			t.Fatalf("a call to a service that does not exist succeeded: %s", body)
		}
		t.Logf("%d %s", resp.StatusCode, body)
	})
}
