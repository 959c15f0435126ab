package plugintest_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/plugins/plugintest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartServesHandler(t *testing.T) {
	s := plugintest.Start(t, "github.com/griddle-mesh/griddle/services/hello")
	if s.Host().PID() == 0 || !s.Host().Healthy() {
		t.Fatalf("PID %d Healthy %v, want a healthy process", s.Host().PID(), s.Host().Healthy())
	}
	if !strings.HasSuffix(s.Binary(), "/hello") {
		t.Errorf("Binary: got %q, want a path ending in /hello", s.Binary())
	}
	code, body := get(t, s.Client(), s.URL()+"/hello/greet?name=t")
	if code != http.StatusOK || body != "hello, t" {
		t.Errorf("got %d %q, want 200 %q", code, body, "hello, t")
	}
}

func TestWithService(t *testing.T) {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Deadline", "none")
		_, _ = io.WriteString(w, "stub for "+r.Host)
	})
	s := plugintest.Start(t, "../../services/profiles", plugintest.WithService("hello", hello))
	code, body := get(t, s.Client(), s.URL()+"/profiles/5/greeting")
	if want := `"greeting":"stub for hello"`; code != http.StatusOK || !strings.Contains(body, want) {
		t.Errorf("got %d %s, want 200 containing %s", code, body, want)
	}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
