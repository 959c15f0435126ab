package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// demoWalkthrough is the README's quick start after `griddle up --demo`,
// command by command (the curls are checked in Go beside them).
var demoWalkthrough = []string{
	"griddle routes apply -f docs/demo/header.yaml",
	"griddle routes apply --dry-run -f docs/demo/ab.yaml",
	"griddle routes apply -f docs/demo/ab.yaml",
	"griddle canary start hello --to v2 --steps 25,50,100 --interval 5s",
	"griddle canary status hello --wait",
	"griddle canary start hello --to v3 --steps 25,50,100 --interval 5s",
	"griddle canary status hello --wait",
}

// TestDemoWalkthrough runs `griddle up --demo` and the README's walkthrough
// against it: a header rule, a dry run and a sticky A/B split, a canary
// that promotes v2 and one that rolls v3 back on its injected failures.
func TestDemoWalkthrough(t *testing.T) {
	root, err := meshtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append([]string{"griddle up --demo"}, demoWalkthrough...) {
		if !strings.Contains(string(readme), c) {
			t.Errorf("the README's quick start lacks %q: the walkthrough and this test must say the same", c)
		}
	}

	dir := t.TempDir()
	listen, admin, etcd, ctl := meshtest.FreeAddr(t), meshtest.FreeAddr(t), meshtest.FreeAddr(t), meshtest.FreeAddr(t)
	up := exec.Command(bin.Griddle, "up", "--demo", "--services", "hello", "--dir", dir, "--listen", listen, "--admin", admin,
		"--etcd-listen", etcd, "--control", ctl)
	up.Dir = root
	up.Env = append(os.Environ(), "GRIDDLE_TOKEN="+controlToken)
	var upLog meshtest.SyncBuffer
	up.Stdout, up.Stderr = &upLog, &upLog
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- up.Wait() }()
	defer func() {
		up.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			up.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("griddle up --demo said:\n%s", upLog.String())
		}
	}()
	for deadline := time.Now().Add(90 * time.Second); !strings.Contains(upLog.String(), "the mesh is running"); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("griddle up --demo exited: %v\n%s", err, upLog.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("griddle up --demo did not start in 90s")
		}
	}
	base := "http://" + listen + "/hello/greet?name=you"
	greet := func(header, cookie string) (int, string) {
		req, _ := http.NewRequest("GET", base, nil)
		if header != "" {
			req.Header.Set("X-Beta", header)
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: "uid", Value: cookie})
		}
		status, body := 0, ""
		if resp, err := client.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			status, body = resp.StatusCode, string(b)
		}
		return status, body
	}
	run := func(i int) (string, int) {
		t.Helper()
		args := strings.Fields(demoWalkthrough[i])[1:]
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin.Griddle, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GRIDDLE_CONTROL=http://"+ctl, "GRIDDLE_TOKEN="+controlToken)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		}
		t.Fatalf("%s: %v", demoWalkthrough[i], err)
		return "", -1
	}
	must := func(i int) string {
		t.Helper()
		out, code := run(i)
		if code != 0 {
			t.Fatalf("%s: exit %d:\n%s", demoWalkthrough[i], code, out)
		}
		return out
	}

	// v1 serves everyone; the demo's first rules keep v2 and v3 idle.
	for range 10 {
		if status, body := greet("", ""); status != 200 || body != "hello, you" {
			t.Fatalf("before any rule: %d %q, want v1's hello, you", status, body)
		}
	}
	// 1. A header rule: testers get v2.
	must(0)
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if _, body := greet("1", ""); body == "hi, you" {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("x-beta: 1 does not reach v2")
		}
	}
	if _, body := greet("", ""); body != "hello, you" {
		t.Fatalf("without x-beta: %q, want v1", body)
	}
	// 2. The dry run reports what the split would move (once the edge has
	// sampled some demo traffic); then the split, sticky per user.
	for start := time.Now(); sampled(t, admin, "hello") < 20; time.Sleep(200 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the edge sampled %d requests of the demo traffic in 30s, want 20", sampled(t, admin, "hello"))
		}
	}
	out := must(1)
	if !strings.Contains(out, "would move") || !strings.Contains(out, "v1 → v2") || strings.Contains(out, "not in the sample") ||
		strings.Contains(out, " 0 distinct sticky keys") {
		t.Fatalf("dry run: want moves v1 → v2 of sampled sticky keys:\n%s", out)
	}
	t.Logf("dry run:\n%s", out)
	must(2)
	time.Sleep(500 * time.Millisecond)
	seen := map[string]bool{}
	for _, user := range []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"} {
		_, first := greet("", user)
		for range 3 {
			if _, again := greet("", user); again != first {
				t.Fatalf("user %s got %q then %q: a user keeps one variant", user, first, again)
			}
		}
		seen[first] = true
	}
	if !seen["hello, you"] || !seen["hi, you"] {
		t.Errorf("eight users all got %v: the split shows no A/B", seen)
	}
	// 3. A canary that promotes v2, on the demo traffic.
	if out, code := run(3); code != 0 {
		t.Fatalf("canary to v2: exit %d:\n%s", code, out)
	}
	if out, code := run(4); code != 0 {
		t.Fatalf("canary status --wait: exit %d, want 0 (promoted):\n%s", code, out)
	}
	for _, user := range []string{"alice", "bob", "", ""} {
		if _, body := greet("", user); body != "hi, you" {
			t.Fatalf("after promotion, user %q got %q, want v2's hi", user, body)
		}
	}
	// 4. A canary to v3, which fails half its greetings: rolled back.
	if out, code := run(5); code != 0 {
		t.Fatalf("canary to v3: exit %d:\n%s", code, out)
	}
	out, code := run(6)
	if code != 4 || !strings.Contains(out, "rollback") {
		t.Fatalf("canary status --wait: exit %d, want 4 and rolled back:\n%s", code, out)
	}
	t.Logf("the rollback:\n%s", out)
	time.Sleep(500 * time.Millisecond)
	for range 20 {
		if status, body := greet("", ""); status != 200 || body != "hi, you" {
			t.Fatalf("after the rollback: %d %q, want v2 only", status, body)
		}
	}
}

// sampled is how many requests of service the edge at admin holds in its sample.
func sampled(t *testing.T, admin, service string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/sample?service=" + service)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var d struct {
		Requests []json.RawMessage `json:"requests"`
	}
	if json.NewDecoder(resp.Body).Decode(&d) != nil {
		return 0
	}
	return len(d.Requests)
}
