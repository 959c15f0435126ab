package plugintest_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/plugins/plugintest"
	"github.com/griddle-mesh/griddle/plugins/store"
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
	s := plugintest.Start(t, "../../services/profiles", plugintest.WithStore(), plugintest.WithService("hello", hello))
	if code, body := do(t, s.Client(), http.MethodPut, s.URL()+"/profiles/5", `{"name":"ada"}`); code != http.StatusCreated {
		t.Fatalf("PUT: got %d %s, want 201", code, body)
	}
	code, body := get(t, s.Client(), s.URL()+"/profiles/5/greeting")
	if want := `"greeting":"stub for hello"`; code != http.StatusOK || !strings.Contains(body, want) {
		t.Errorf("got %d %s, want 200 containing %s", code, body, want)
	}
}

// TestWithStore checks that the handler and the test share the service's
// key space, and that events the handler publishes in its transaction are
// visible through Events.
func TestWithStore(t *testing.T) {
	profiles := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":2,"name":"bo"}`)
	})
	s := plugintest.Start(t, "../../services/messages", plugintest.WithStore(), plugintest.WithService("profiles", profiles))
	if s.Service() != "messages" {
		t.Errorf("Service: got %q, want messages", s.Service())
	}
	code, body := do(t, s.Client(), http.MethodPost, s.URL()+"/messages/2", `{"from":"1","text":"hi"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST: got %d %s, want 201", code, body)
	}
	var kvs []store.KeyValue
	if err := s.Store().ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		kvs, err = tx.Range([]byte("m/"), []byte("m0"), store.RangeOptions{})
		return err
	}); err != nil || len(kvs) != 1 {
		t.Errorf("messages' keys m/…: got %d, %v; want 1", len(kvs), err)
	}
	evs := s.Events(t.Context(), "message.sent")
	if len(evs) != 1 || evs[0].Publisher != "messages" || evs[0].Seq != 1 || !strings.Contains(string(evs[0].Body), `"text":"hi"`) {
		t.Errorf("events: got %+v, want one by messages with the message", evs)
	}
	if evs := s.Events(t.Context(), "other"); len(evs) != 0 {
		t.Errorf("events on another topic: got %d, want 0", len(evs))
	}
}

// TestWithServiceName checks that the name, not the package directory,
// names the key space the handler writes to.
func TestWithServiceName(t *testing.T) {
	s := plugintest.Start(t, "../../services/profiles", plugintest.WithStore(), plugintest.WithServiceName("people"))
	if s.Service() != "people" {
		t.Errorf("Service: got %q, want people", s.Service())
	}
	if code, body := do(t, s.Client(), http.MethodPut, s.URL()+"/profiles/5", `{"name":"ada"}`); code != http.StatusCreated {
		t.Fatalf("PUT: got %d %s, want 201", code, body)
	}
	var v []byte
	if err := s.Store().ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		v, err = tx.Get([]byte("profile/5"))
		return err
	}); err != nil || !strings.Contains(string(v), `"ada"`) {
		t.Errorf("profile/5 in people's space: got %q, %v", v, err)
	}
}

func do(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
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
