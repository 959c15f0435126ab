package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/pluginproto"
)

// TestHandlerIsolation: the handler's environment holds none of what the
// sidecar was given for itself (only what --handler-env names), and its
// socket serves its own sidecar only: another process that connects is
// refused.
func TestHandlerIsolation(t *testing.T) {
	t.Setenv("GRIDDLE_ETCD_PASSWORD", "etcd-secret")
	t.Setenv("GRIDDLE_STORE_TOKEN", "store-secret-0123456789")
	t.Setenv("TEAM_SETTING", "passed")
	m := meshtest.Start(t, bin)
	sc := m.Sidecar("hello", "v1", "--http-prefix", "/hello/", "--handler-env", "TEAM_SETTING")
	var st sidecarStatus
	if err := sc.Status(&st); err != nil || st.HandlerPID == 0 {
		t.Fatalf("status: %+v %v", st, err)
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(st.HandlerPID) + "/environ")
	if err != nil {
		t.Skipf("cannot read the handler's environment: %v", err)
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		k, v, _ := strings.Cut(string(kv), "=")
		env[k] = v
	}
	for _, k := range []string{"GRIDDLE_ETCD_PASSWORD", "GRIDDLE_STORE_TOKEN"} {
		if v, ok := env[k]; ok {
			t.Errorf("the handler's environment holds the sidecar's %s=%s", k, v)
		}
	}
	if env["TEAM_SETTING"] != "passed" {
		t.Errorf("TEAM_SETTING (--handler-env) = %q in the handler, want it passed", env["TEAM_SETTING"])
	}
	sock := env[pluginproto.EnvHandlerSocket]
	if sock == "" {
		t.Fatal("no handler socket in the handler's environment")
	}

	// This test process is not the handler's parent: the connection is
	// closed at once, and the sidecar's own keep serving.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Logf("dialling the handler's socket: %v (refused before accept)", err)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("\x00\x00\x00\x10hello, handler!!"))
		// Closed unread: an end of file, or a reset for the bytes it left.
		if n, err := io.Copy(io.Discard, c); n != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("a stranger's connection to the handler: read %d bytes, %v; want it closed with nothing", n, err)
		}
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sc.Log(), "from another process refused") {
		if time.Now().After(deadline) {
			t.Fatalf("the handler did not log the refusal:\n%s", sc.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e := m.Edge("--no-pprof")
	waitRoute(t, "http://"+e.Addr+"/hello/greet")
	// pprof is on the admin address unless turned off.
	for _, c := range []struct {
		proc *meshtest.Proc
		want int
	}{{sc, 200}, {e, 404}} {
		resp, err := http.Get("http://" + c.proc.Admin + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: /debug/pprof/ answered %d, want %d", c.proc.Name, resp.StatusCode, c.want)
		}
	}
	if status, body, _ := get(t, "http://"+e.Addr+"/hello/greet?name=still"); status != 200 || body != "hello, still" {
		t.Errorf("after the stranger: %d %q", status, body)
	}
}
