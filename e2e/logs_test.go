package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// TestOneLogFormat: a standalone sidecar and edge with --log-format json
// write only JSON lines, etcd's client included (its complaints once etcd
// is gone come through the same handler, with component=etcd); the edge's
// --access-log has a line per request with where it went.
func TestOneLogFormat(t *testing.T) {
	m := meshtest.Start(t, bin)
	sc := m.Sidecar("hello", "v1", "--http-prefix", "/hello/", "--log-format", "json")
	access := filepath.Join(t.TempDir(), "access.log")
	e := m.Edge("--log-format", "json", "--access-log", access)
	waitRoute(t, "http://"+e.Addr+"/hello/greet")
	before, _ := os.ReadFile(access)
	if status, body, _ := get(t, "http://"+e.Addr+"/hello/greet?name=log"); status != 200 {
		t.Fatalf("status %d (%s)", status, body)
	}
	if status, _, _ := get(t, "http://"+e.Addr+"/nowhere"); status != http.StatusNotFound {
		t.Fatalf("/nowhere: status %d, want 404", status)
	}

	b, err := os.ReadFile(access)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b[len(before):])), "\n")
	if len(lines) != 2 {
		t.Fatalf("access log: %d lines, want 2:\n%s", len(lines), b)
	}
	var ok, missing map[string]any
	if json.Unmarshal([]byte(lines[0]), &ok) != nil || json.Unmarshal([]byte(lines[1]), &missing) != nil {
		t.Fatalf("access log is not JSON:\n%s", b)
	}
	if ok["msg"] != "access" || ok["method"] != "GET" || ok["path"] != "/hello/greet" || ok["service"] != "hello" || ok["version"] != "v1" ||
		ok["status"] != float64(200) || ok["request_id"] == nil || ok["duration"] == nil {
		t.Errorf("access line of the served request: %s", lines[0])
	}
	if missing["status"] != float64(404) || missing["error_id"] == nil {
		t.Errorf("access line of the 404: %s", lines[1])
	}

	m.Etcd.Close()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(sc.Log(), `"component":"etcd"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no etcd client line in the sidecar's log within 20s of stopping etcd:\n%s", sc.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, p := range map[string]*meshtest.Proc{"sidecar": sc, "edge": e} {
		for _, l := range strings.Split(strings.TrimSpace(p.Log()), "\n") {
			if !json.Valid([]byte(l)) {
				t.Errorf("%s wrote a line that is not JSON: %s", name, l)
			}
		}
	}
}
