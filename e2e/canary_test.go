package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// controlProc starts `griddle control` as a process the test can kill.
func controlProc(t *testing.T, m *meshtest.Mesh) (*meshtest.Proc, string) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(controlToken), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := meshtest.FreeAddr(t)
	p := m.Griddle("control "+addr, "control", "--listen", addr, "--etcd", m.EtcdEndpoints(),
		"--token-file", tokenFile, "--session-ttl", "2s", "--poll", "100ms", "--log-level", "debug")
	url := "http://" + addr
	for start := time.Now(); ; {
		if resp, err := http.Get(url + "/v1/services"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, url
			}
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("griddle control not ready:\n%s", p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func canaryState(t *testing.T, url string) canary.Canary {
	t.Helper()
	out, code := cli(t, url, "canary", "status", "hello", "-o", "json")
	if code != 0 {
		t.Fatalf("canary status: exit %d: %s", code, out)
	}
	var c canary.Canary
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("canary status -o json: %v\n%s", err, out)
	}
	return c
}

// TestCanary runs canaries against real sidecars whose metrics the control
// plane reads: a healthy one reaches 100% even though the control plane is
// killed and replaced in the middle; one whose new version fails is rolled
// back.
func TestCanary(t *testing.T) {
	for _, tt := range []struct {
		name      string
		failRate  string
		restart   bool
		wantState canary.State
		wantV2    int
	}{
		{"healthy, control plane restarted midway", "0", true, canary.Promoted, 100},
		{"new version fails", "1", false, canary.RolledBack, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := meshtest.Start(t, bin)
			m.Sidecar("hello", "v1")
			m.Sidecar("hello", "v2", "--plugin-arg", "-fail-rate="+tt.failRate)
			e := m.Edge("--no-admission")
			ctl, url := controlProc(t, m)
			rules := writeFile(t, "hello.yaml", "service: hello\nhttp: [{pathPrefix: /hello/}]\nversions:\n  - to: {v1: 100}\n")
			if out, code := cli(t, url, "routes", "apply", "-f", rules); code != 0 {
				t.Fatalf("routes apply: exit %d: %s", code, out)
			}
			l := startLoad("http://"+e.Addr+"/hello/greet?name=canary", 4)
			defer l.finish()
			if out, code := cli(t, url, "canary", "start", "hello", "--to", "v2", "--steps", "20,50,100",
				"--interval", "1s", "--max-error-rate", "5%", "--max-p99", "1s", "--min-requests", "5"); code != 0 {
				t.Fatalf("canary start: exit %d: %s", code, out)
			}

			restarted := !tt.restart
			deadline := time.Now().Add(60 * time.Second)
			var c canary.Canary
			for {
				c = canaryState(t, url)
				if c.State != canary.Running {
					break
				}
				if !restarted && c.Step >= 0 {
					t.Logf("killing the control plane at step %d (weight %d%%)", c.Step, c.Weight())
					ctl.Kill()
					ctl, url = controlProc(t, m)
					restarted = true
				}
				if time.Now().After(deadline) {
					t.Fatalf("canary still running after 60s: %+v", c)
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Logf("canary ended %s: %s", c.State, c.Reason)
			for _, ev := range c.History {
				t.Logf("  %+v", ev)
			}
			if c.State != tt.wantState {
				t.Fatalf("state = %s (%s), want %s", c.State, c.Reason, tt.wantState)
			}
			if w := c.Weight(); w != tt.wantV2 {
				t.Errorf("v2 weight at the end = %d, want %d", w, tt.wantV2)
			}
			last := 0
			for _, ev := range c.History {
				if ev.Action == "step" {
					if ev.Weight <= last {
						t.Errorf("step to %d%% after %d%%: the canary must resume where it was, not start over", ev.Weight, last)
					}
					last = ev.Weight
				}
			}
			out, code := cli(t, url, "routes", "get", "hello")
			if code != 0 {
				t.Errorf("routes get: exit %d: %s", code, out)
			}
			t.Logf("rules at the end:\n%s", out)
		})
	}
}
