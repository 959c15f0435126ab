package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/internal/meshtest"
)

const controlToken = "e2e-token"

// startControl runs `griddle control` against m's etcd and returns its URL.
func startControl(t *testing.T, m *meshtest.Mesh) string {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(controlToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := meshtest.FreeAddr(t)
	var log bytes.Buffer
	cmd := exec.Command(bin.Griddle, "control", "--listen", addr, "--etcd", m.EtcdEndpoints(),
		"--token-file", tokenFile, "--session-ttl", "2s", "--poll", "100ms", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("griddle control did not stop within 10s")
		}
		if t.Failed() {
			t.Logf("--- log of griddle control:\n%s", log.String())
		}
	})
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		select {
		case <-done:
			t.Fatalf("griddle control exited:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("griddle control not ready in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cli runs the griddle CLI as an operator would and returns its output and
// exit code.
func cli(t *testing.T, url string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.Griddle, args...)
	cmd.Env = append(os.Environ(), "GRIDDLE_CONTROL="+url, "GRIDDLE_TOKEN="+controlToken)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("griddle %v: %v", args, err)
	return "", -1
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func rulesRevision(t *testing.T, url string) int64 {
	t.Helper()
	out, code := cli(t, url, "routes", "get", "hello", "-o", "json")
	if code != 0 {
		t.Fatalf("routes get: exit %d: %s", code, out)
	}
	var r api.Rules
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("routes get -o json: %v\n%s", err, out)
	}
	return r.Revision
}

func TestControlCLI(t *testing.T) {
	m := meshtest.Start(t, bin)
	url := startControl(t, m)
	v1 := writeFile(t, "v1.yaml", "service: hello\nhttp:\n  - pathPrefix: /hello/\nversions:\n  - to: {v1: 100}\n")
	split := writeFile(t, "split.yaml", "service: hello\nhttp:\n  - pathPrefix: /hello/\nversions:\n  - to: {v1: 90, v2: 10}\n")
	bad := writeFile(t, "bad.yaml", "service: hello\nversions:\n  - to: {v1: 90}\n")

	if out, code := cli(t, url, "routes", "validate", "-f", bad, "--control", "http://127.0.0.1:1"); code != 2 || !strings.Contains(out, "versions[0].to") {
		t.Fatalf("offline validate of a bad document: exit %d, %q; want 2 naming versions[0].to", code, out)
	}
	if out, code := cli(t, url, "routes", "apply", "-f", v1); code != 0 || !strings.Contains(out, "applied revision") {
		t.Fatalf("first apply: exit %d: %s", code, out)
	}
	base := rulesRevision(t, url)

	// Two operators apply on the same revision at once: one wins, one gets exit 3.
	type result struct {
		out  string
		code int
	}
	var wg sync.WaitGroup
	res := make([]result, 2)
	for i := range 2 {
		wg.Go(func() {
			res[i].out, res[i].code = cli(t, url, "routes", "apply", "-f", split, "--revision", itoa(base))
		})
	}
	wg.Wait()
	if res[0].code+res[1].code != 3 || (res[0].code != 0 && res[1].code != 0) {
		t.Fatalf("concurrent applies: %+v; want exit 0 and exit 3", res)
	}
	loser := res[0]
	if loser.code == 0 {
		loser = res[1]
	}
	if !strings.Contains(loser.out, "is stale") || !strings.Contains(loser.out, "get them again and re-apply") {
		t.Fatalf("conflict message %q", loser.out)
	}
	cur := rulesRevision(t, url)

	// Invalid document: exit 2, field named, rules untouched.
	if out, code := cli(t, url, "routes", "apply", "-f", bad); code != 2 || !strings.Contains(out, "versions[0].to") {
		t.Fatalf("invalid apply: exit %d: %s", code, out)
	}
	if r := rulesRevision(t, url); r != cur {
		t.Fatalf("rules moved from %d to %d after an invalid apply", cur, r)
	}
	// No token: refused.
	cmd := exec.Command(bin.Griddle, "routes", "apply", "-f", v1, "--control", url, "--token", "")
	cmd.Env = os.Environ()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "Bearer") {
		t.Fatalf("apply without token: %v %s", err, out)
	}

	if out, code := cli(t, url, "routes", "diff", "-f", v1); code != 1 || !strings.Contains(out, "-  - to: {v1: 90, v2: 10}\n+  - to: {v1: 100}\n") {
		t.Fatalf("diff: exit %d: %s", code, out)
	}
	if out, code := cli(t, url, "routes", "history", "hello"); code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("history: exit %d: %s", code, out)
	}
	if out, code := cli(t, url, "routes", "rollback", "hello", "--to", itoa(base)); code != 0 || !strings.Contains(out, "applied again") {
		t.Fatalf("rollback: exit %d: %s", code, out)
	}
	if out, code := cli(t, url, "routes", "get", "hello"); code != 0 || !strings.Contains(out, "v1: 100") || strings.Contains(out, "v2") {
		t.Fatalf("get after rollback: exit %d: %s", code, out)
	}

	// A canary through the CLI: the leader applies the first step.
	m.Sidecar("hello", "v2")
	if out, code := cli(t, url, "canary", "start", "hello", "--to", "v2", "--steps", "5,50,100", "--interval", "1h", "--max-error-rate", "1%"); code != 0 || !strings.Contains(out, "running") {
		t.Fatalf("canary start: exit %d: %s", code, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := cli(t, url, "canary", "status", "hello")
		if strings.Contains(out, "running at 5%") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first step was not applied: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, _ := cli(t, url, "routes", "get", "hello"); !strings.Contains(out, "v2: 5") {
		t.Fatalf("rules after the first step: %s", out)
	}
	if out, code := cli(t, url, "canary", "abort", "hello"); code != 0 || !strings.Contains(out, "aborted") {
		t.Fatalf("canary abort: exit %d: %s", code, out)
	}

	// griddle status, for people and for scripts.
	out, code := cli(t, url, "status", "-o", "json")
	var st api.Services
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Services) != 1 || st.Services[0].Weights["v1"] != 100 || st.Leader == "" {
		t.Fatalf("status -o json: exit %d: %s", code, out)
	}
	if out, code := cli(t, url, "status"); code != 0 || !strings.Contains(out, "hello") || !strings.Contains(out, "control plane leader") {
		t.Fatalf("status: exit %d: %s", code, out)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
