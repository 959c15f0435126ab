package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// cliIn runs the griddle CLI with stdin and returns stdout, stderr and the exit code.
func cliIn(t *testing.T, url, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.Griddle, args...)
	cmd.Env = append(os.Environ(), "GRIDDLE_CONTROL="+url, "GRIDDLE_TOKEN="+controlToken)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &ee):
		return out.String(), errOut.String(), ee.ExitCode()
	}
	t.Fatalf("griddle %v: %v", args, err)
	return "", "", -1
}

const authoredHello = `# hello: owned by the greeting team
service: hello
http:
  - pathPrefix: /hello/
versions:
  - name: tone-test   # an A/B test of the greeting's tone
    sticky: header:x-user
    to: {v1: 50, v2: 50}
  - to: {v1: 100}     # everyone else
`

// TestOperatorCLIRoundTrips: what get prints applies back as a no-op in
// every output form, diff output applies with patch, and the exit codes
// are those documented.
func TestOperatorCLIRoundTrips(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	url := startControl(t, m)
	if out, errOut, code := cliIn(t, url, authoredHello, "routes", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	got, _, code := cliIn(t, url, "", "routes", "get", "hello")
	if code != 0 || got != authoredHello {
		t.Fatalf("routes get: exit %d, printed\n%s\nwant the document as applied:\n%s", code, got, authoredHello)
	}
	rev := rulesRevision(t, url)
	for _, form := range []string{"text", "json", "yaml"} {
		out, _, code := cliIn(t, url, "", "routes", "get", "hello", "-o", form)
		if code != 0 {
			t.Fatalf("get -o %s: exit %d", form, code)
		}
		res, errOut, code := cliIn(t, url, out, "routes", "apply", "-f", "-")
		if code != 0 || !strings.Contains(res, "unchanged") {
			t.Fatalf("get -o %s | apply: exit %d: %s%s", form, code, res, errOut)
		}
		if r := rulesRevision(t, url); r != rev {
			t.Fatalf("get -o %s | apply wrote revision %d (was %d)", form, r, rev)
		}
	}

	// diff: hunks, exit 1, and patch turns the current text into the proposal.
	proposed := strings.Replace(authoredHello, "to: {v1: 100}", "to: {v1: 90, v2: 10}", 1)
	if _, _, code := cliIn(t, url, authoredHello, "routes", "diff", "-f", "-"); code != 0 {
		t.Fatalf("diff of the current text: exit %d, want 0", code)
	}
	d, errOut, code := cliIn(t, url, proposed, "routes", "diff", "-f", "-")
	if code != 1 || !strings.Contains(d, "@@ -") || !strings.Contains(d, "+  - to: {v1: 90, v2: 10}") {
		t.Fatalf("diff: exit %d, want 1 with a hunk:\n%s%s", code, d, errOut)
	}
	if patch, err := exec.LookPath("patch"); err == nil {
		f := filepath.Join(t.TempDir(), "hello.yaml")
		os.WriteFile(f, []byte(got), 0o644)
		cmd := exec.Command(patch, "-s", f)
		cmd.Stdin = strings.NewReader(d)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("patch: %v: %s", err, out)
		}
		if b, _ := os.ReadFile(f); string(b) != proposed {
			t.Fatalf("patched:\n%s\nwant\n%s", b, proposed)
		}
	}

	// Exit codes and the rest of the CLI.
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown subcommand", []string{"routes", "frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown top command", []string{"frobnicate"}, 2, "unknown command"},
		{"bad flag", []string{"routes", "get", "hello", "--nope"}, 2, "unknown flag"},
		{"too many arguments", []string{"routes", "history", "a", "b"}, 2, "accepts 1 arg"},
		{"bad output", []string{"routes", "get", "hello", "-o", "xml"}, 2, "--output"},
		{"no such version", []string{"canary", "start", "hello", "--to", "v9"}, 2, "no live instance of hello v9"},
		{"version", []string{"--version"}, 0, "griddle "},
		{"listing", []string{"routes", "list"}, 0, "hello"},
		{"listing by get", []string{"routes", "get"}, 0, "v1 100%"},
		{"completion of services", []string{"__complete", "routes", "get", "he"}, 0, "hello"},
		{"completion of versions", []string{"__complete", "canary", "start", "hello", "--to", ""}, 0, "v1"},
		{"status --wait without a canary", []string{"canary", "status", "hello", "--wait"}, 1, "no canary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := cliIn(t, url, "", tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("griddle %v: exit %d, output %q; want exit %d mentioning %q", tc.args, code, out+errOut, tc.code, tc.want)
			}
		})
	}
}

// TestCanarySeesWhatTheEdgeSees: the new version's only sidecar is killed
// during the canary, so its own figures stop and the failures show only at
// the edge (requests to an instance that is gone); the canary is rolled
// back, and canary status --wait says so with exit status 4.
func TestCanarySeesWhatTheEdgeSees(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	v2 := m.Sidecar("hello", "v2")
	e := m.Edge("--no-admission")
	_, url := controlProc(t, m)
	rules := writeFile(t, "hello.yaml", "service: hello\nhttp: [{pathPrefix: /hello/}]\nversions:\n  - to: {v1: 100}\n")
	if out, code := cli(t, url, "routes", "apply", "-f", rules); code != 0 {
		t.Fatalf("routes apply: exit %d: %s", code, out)
	}
	load := startPaced("http://"+e.Addr+"/hello/greet?name=edge", 80)
	defer load.finish()
	if out, code := cli(t, url, "canary", "start", "hello", "--to", "v2", "--steps", "30,60,100",
		"--interval", "4s", "--max-error-rate", "5%", "--min-requests", "5"); code != 0 {
		t.Fatalf("canary start: exit %d: %s", code, out)
	}
	for deadline := time.Now().Add(20 * time.Second); canaryState(t, url).Step < 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first step was not applied")
		}
	}
	// A manual change now is refused, naming the canary.
	split := writeFile(t, "split.yaml", "service: hello\nhttp: [{pathPrefix: /hello/}]\nversions:\n  - to: {v1: 50, v2: 50}\n")
	if out, code := cli(t, url, "routes", "apply", "-f", split); code != 3 || !strings.Contains(out, "steered by its canary") {
		t.Fatalf("apply during the canary: exit %d: %s; want 3, refused", code, out)
	}
	time.Sleep(500 * time.Millisecond)
	v2.Kill()
	out, errOut, code := cliIn(t, url, "", "canary", "status", "hello", "--wait", "--timeout", "60s")
	if code != 4 || !strings.Contains(errOut, "rolled-back") {
		t.Fatalf("canary status --wait: exit %d: %s%s; want 4, rolled back", code, out, errOut)
	}
	c := canaryState(t, url)
	last := c.History[len(c.History)-1]
	t.Logf("rolled back: %s", c.Reason)
	if c.State != canary.RolledBack || last.Metrics == nil || last.Metrics.Callers == nil || last.Metrics.Callers.Errors == 0 {
		t.Fatalf("canary %s (%s), last decision %+v: want rolled back on errors the edge saw", c.State, c.Reason, last.Metrics)
	}
}

// TestCanaryInUp: in `griddle up`, whose own sidecars have no admin port, a
// canary to a second version started beside it is judged on what up's edge
// sees and promotes.
func TestCanaryInUp(t *testing.T) {
	root, err := meshtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	listen, admin, etcd, ctl := meshtest.FreeAddr(t), meshtest.FreeAddr(t), meshtest.FreeAddr(t), meshtest.FreeAddr(t)
	up := exec.Command(bin.Griddle, "up", "--dir", dir, "--listen", listen, "--admin", admin, "--etcd-listen", etcd,
		"--control", ctl, "--services", "hello")
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
			t.Logf("griddle up said:\n%s", upLog.String())
		}
	}()
	for deadline := time.Now().Add(90 * time.Second); !strings.Contains(upLog.String(), "the mesh is running"); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("griddle up exited: %v\n%s", err, upLog.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("griddle up did not start in 90s")
		}
	}
	url := "http://" + ctl
	// A second version of hello beside up's first.
	v2Admin := meshtest.FreeAddr(t)
	v2 := exec.Command(bin.Griddle, "sidecar", "--service", "hello", "--version", "v2", "--id", "hello-v2-beside-up",
		"--plugin", bin.Handlers["hello"], "--etcd", etcd, "--admin", v2Admin, "--ttl", "2s")
	var v2Log meshtest.SyncBuffer
	v2.Stdout, v2.Stderr = &v2Log, &v2Log
	if err := v2.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		v2.Process.Signal(syscall.SIGTERM)
		v2.Wait()
		if t.Failed() {
			t.Logf("the v2 sidecar said:\n%s", v2Log.String())
		}
	}()
	rules := writeFile(t, "hello.yaml", "service: hello\nhttp: [{pathPrefix: /hello/}]\nversions:\n  - to: {v1: 100}\n")
	if out, code := cli(t, url, "routes", "apply", "-f", rules); code != 0 {
		t.Fatalf("routes apply: exit %d: %s", code, out)
	}
	load := startPaced("http://"+listen+"/hello/greet?name=up", 60)
	defer load.finish()
	var out string
	var code int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, code = cli(t, url, "canary", "start", "hello", "--to", "v2", "--steps", "50,100", "--interval", "2s",
			"--max-error-rate", "2%", "--min-requests", "5")
		if code == 0 || time.Now().After(deadline) {
			break
		}
	}
	if code != 0 {
		t.Fatalf("canary start: exit %d: %s", code, out)
	}
	wout, werr, code := cliIn(t, url, "", "canary", "status", "hello", "--wait", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("canary status --wait: exit %d: %s%s; want 0, promoted", code, wout, werr)
	}
	c := canaryState(t, url)
	var judged *canary.Metrics
	for _, ev := range c.History {
		if ev.Action == "step" && ev.Metrics != nil {
			judged = ev.Metrics
		}
	}
	if c.State != canary.Promoted || judged == nil || judged.Callers == nil || judged.Callers.Requests == 0 {
		t.Fatalf("canary %s (%s); judged on %+v: want promoted on the edge's figures", c.State, c.Reason, judged)
	}
}
