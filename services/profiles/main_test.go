package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/plugins"
	"github.com/griddle-mesh/griddle/plugins/plugintest"
	"github.com/griddle-mesh/griddle/plugins/store"
)

const (
	traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tracestate  = "griddle=1"
	routing     = "CgN1NDI" // the routing context {sticky key u42}, as the mesh encodes it
)

func TestProfilesCRUD(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithStore())
	tooMany := "[" + strings.Repeat(`{"id":1,"name":"a"},`, maxBulk) + `{"id":1,"name":"a"}]`
	var full strings.Builder // maxBulk profiles, ids 1001..2000
	for i := range maxBulk {
		if i > 0 {
			full.WriteByte(',')
		}
		fmt.Fprintf(&full, `{"id":%d,"name":"user-%d","bio":"%s"}`, 1001+i, 1001+i, strings.Repeat("b", 500))
	}
	const badPut = `{"error":"body: want a JSON object {\"name\", \"bio\", \"city\"}"}`
	const badBulk = `{"error":"body: want a JSON array of {\"id\", \"name\", \"bio\", \"city\"}"}`
	// The rows run in order: later ones see what earlier ones stored.
	for _, c := range []struct {
		name, method, path, body string
		wantCode                 int
		wantBody                 string
	}{
		{"get missing", "GET", "/profiles/7", "", 404, `{"error":"no such profile"}`},
		{"get bad id", "GET", "/profiles/x", "", 400, `{"error":"id: want a positive integer"}`},
		{"get zero id", "GET", "/profiles/0", "", 400, `{"error":"id: want a positive integer"}`},
		{"put creates", "PUT", "/profiles/7", `{"name":"ada","bio":"math"}`, 201, `{"id":7,"name":"ada","bio":"math"}`},
		{"get after create", "GET", "/profiles/7", "", 200, `{"id":7,"name":"ada","bio":"math"}`},
		{"put replaces", "PUT", "/profiles/7", `{"name":"ada","city":"london"}`, 200, `{"id":7,"name":"ada","city":"london"}`},
		{"get after replace", "GET", "/profiles/7", "", 200, `{"id":7,"name":"ada","city":"london"}`},
		{"put bad id", "PUT", "/profiles/-1", `{"name":"x"}`, 400, `{"error":"id: want a positive integer"}`},
		{"put bad json", "PUT", "/profiles/7", `{"name":`, 400, badPut},
		{"put unknown field", "PUT", "/profiles/7", `{"nom":"x"}`, 400, badPut},
		{"put array", "PUT", "/profiles/7", `[]`, 400, badPut},
		{"put trailing data", "PUT", "/profiles/7", `{"name":"x"} {}`, 400, `{"error":"body: want a single JSON value"}`},
		{"put empty name", "PUT", "/profiles/7", `{"name":""}`, 400, `{"error":"name: want 1 to 200 bytes"}`},
		{"put long name", "PUT", "/profiles/7", `{"name":"` + strings.Repeat("a", maxNameLen+1) + `"}`, 400, `{"error":"name: want 1 to 200 bytes"}`},
		{"put long bio", "PUT", "/profiles/7", `{"name":"x","bio":"` + strings.Repeat("a", maxBioLen+1) + `"}`, 400, `{"error":"bio: want at most 2000 bytes"}`},
		{"put long city", "PUT", "/profiles/7", `{"name":"x","city":"` + strings.Repeat("a", maxCityLen+1) + `"}`, 400, `{"error":"city: want at most 100 bytes"}`},
		{"put too large", "PUT", "/profiles/7", `{"name":"` + strings.Repeat("a", maxBody) + `"}`, 413, `{"error":"body too large"}`},
		{"unchanged by bad puts", "GET", "/profiles/7", "", 200, `{"id":7,"name":"ada","city":"london"}`},
		{"bulk import", "POST", "/profiles/", `[{"id":1,"name":"user-1"},{"id":2,"name":"bo","bio":"hi"},{"id":7,"name":"eve"}]`, 200, `{"imported":3}`},
		{"get imported", "GET", "/profiles/2", "", 200, `{"id":2,"name":"bo","bio":"hi"}`},
		{"get replaced by import", "GET", "/profiles/7", "", 200, `{"id":7,"name":"eve"}`},
		{"bulk import of the most", "POST", "/profiles/", "[" + full.String() + "]", 200, `{"imported":1000}`},
		{"get the last of the most", "GET", "/profiles/2000", "", 200, `{"id":2000,"name":"user-2000","bio":"` + strings.Repeat("b", 500) + `"}`},
		{"bulk empty", "POST", "/profiles/", `[]`, 400, `{"error":"body: want 1 to 1000 profiles"}`},
		{"bulk too many", "POST", "/profiles/", tooMany, 400, `{"error":"body: want 1 to 1000 profiles"}`},
		{"bulk object", "POST", "/profiles/", `{"id":1,"name":"x"}`, 400, badBulk},
		{"bulk bad id", "POST", "/profiles/", `[{"id":3,"name":"x"},{"id":0,"name":"y"}]`, 400, `{"error":"[1].id: want a positive integer"}`},
		{"bulk bad name", "POST", "/profiles/", `[{"id":3,"name":"x"},{"id":4,"name":""}]`, 400, `{"error":"[1].name: want 1 to 200 bytes"}`},
		{"bulk all or nothing", "GET", "/profiles/3", "", 404, `{"error":"no such profile"}`},
		{"bulk too large", "POST", "/profiles/", `[{"id":1,"name":"` + strings.Repeat("a", maxBulkBody) + `"}]`, 413, `{"error":"body too large"}`},
		{"post on a profile", "POST", "/profiles/7", `[]`, 405, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body, _ := do(t, s.Client(), c.method, s.URL()+c.path, c.body, nil)
			if code != c.wantCode || (c.wantBody != "" && body != c.wantBody) {
				t.Errorf("got %d %s, want %d %s", code, body, c.wantCode, c.wantBody)
			}
		})
	}

	// GET serves what is stored, as stored.
	var stored []byte
	err := s.Store().ReadTransact(t.Context(), func(tx store.ReadTx) error {
		var err error
		stored, err = tx.Get([]byte("profile/2"))
		return err
	})
	if want := `{"id":2,"name":"bo","bio":"hi"}` + "\n"; err != nil || string(stored) != want {
		t.Errorf("stored profile/2: got %q, %v; want %q", stored, err, want)
	}
}

// TestGetServesSeededBytes checks that GET answers profiles written
// straight into the store (as a seeding command does) byte for byte.
func TestGetServesSeededBytes(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithStore())
	const seeded = `{"id":42,"name":"user-42"}` + "\n"
	if err := s.Store().Transact(t.Context(), func(tx store.Tx) error {
		return tx.Set([]byte("profile/42"), []byte(seeded))
	}); err != nil {
		t.Fatal(err)
	}
	code, body, h := do(t, s.Client(), "GET", s.URL()+"/profiles/42", "", nil)
	if code != 200 || body+"\n" != seeded || h.Get("Content-Type") != "application/json" {
		t.Errorf("got %d %s (%s), want 200 %s (application/json)", code, body, h.Get("Content-Type"), seeded)
	}
}

// TestGreetingPropagates checks that the outbound call through plugins.Mesh
// carries the deadline, trace context, routing context and request id of
// the incoming request.
func TestGreetingPropagates(t *testing.T) {
	var (
		mu   sync.Mutex
		seen http.Header
		host string
	)
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen, host = r.Header.Clone(), r.Host
		mu.Unlock()
		w.Header().Set("X-Seen-Deadline", r.Header.Get(plugins.HeaderDeadline))
		io.WriteString(w, "hello, "+r.URL.Query().Get("name"))
	})
	s := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("hello", hello))
	seed(t, s, 42)

	deadline := plugins.FormatDeadline(time.Now().Add(5 * time.Second))
	code, body, _ := do(t, s.Client(), "GET", s.URL()+"/profiles/42/greeting", "", http.Header{
		plugins.HeaderDeadline:    {deadline},
		plugins.HeaderRequestID:   {"req-1"},
		plugins.HeaderTraceparent: {traceparent},
		plugins.HeaderTracestate:  {tracestate},
		plugins.HeaderRouting:     {routing},
	})
	if code != http.StatusOK {
		t.Fatalf("got %d %s, want 200", code, body)
	}
	var g greeting
	if err := json.Unmarshal([]byte(body), &g); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	want := greeting{Greeting: "hello, user-42", HelloSawDeadline: deadline, MyDeadline: deadline}
	if g != want {
		t.Errorf("got %+v, want %+v", g, want)
	}

	mu.Lock()
	defer mu.Unlock()
	if host != "hello" {
		t.Errorf("Host: got %q, want hello", host)
	}
	for _, c := range []struct{ header, want string }{
		{plugins.HeaderDeadline, deadline},
		{plugins.HeaderParentID, "req-1"},
		{plugins.HeaderTraceparent, traceparent},
		{plugins.HeaderTracestate, tracestate},
		{plugins.HeaderRouting, routing},
	} {
		if got := seen.Get(c.header); got != c.want {
			t.Errorf("%s: got %q, want %q", c.header, got, c.want)
		}
	}
}

func TestGreetingFailures(t *testing.T) {
	s := plugintest.Start(t, ".", plugintest.WithStore()) // no hello service: the mesh answers 502
	seed(t, s, 1)
	for _, c := range []struct {
		name, path string
		wantCode   int
		wantBody   string
	}{
		{"hello unreachable", "/profiles/1/greeting", 502, `{"error":"hello service failed"}`},
		{"no such profile", "/profiles/2/greeting", 404, `{"error":"no such profile"}`},
		{"bad id", "/profiles/x/greeting", 400, `{"error":"id: want a positive integer"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body, h := do(t, s.Client(), "GET", s.URL()+c.path, "", nil)
			if code != c.wantCode || body != c.wantBody {
				t.Errorf("got %d %s, want %d %s", code, body, c.wantCode, c.wantBody)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type: got %q, want application/json", ct)
			}
		})
	}
}

// TestNoStore checks that a handler whose sidecar serves no store answers
// 503 with a fixed message, not the store's error.
func TestNoStore(t *testing.T) {
	s := plugintest.Start(t, ".")
	code, body, _ := do(t, s.Client(), "GET", s.URL()+"/profiles/1", "", nil)
	if code != http.StatusServiceUnavailable || body != `{"error":"store unavailable"}` {
		t.Errorf("got %d %s, want 503 {\"error\":\"store unavailable\"}", code, body)
	}
}

// TestGreetingRealHello runs profiles against the real hello handler.
func TestGreetingRealHello(t *testing.T) {
	hello := plugintest.Start(t, "../hello")
	u, err := url.Parse(hello.URL())
	if err != nil {
		t.Fatal(err)
	}
	s := plugintest.Start(t, ".", plugintest.WithStore(), plugintest.WithService("hello", httputil.NewSingleHostReverseProxy(u)))
	seed(t, s, 3)

	deadline := plugins.FormatDeadline(time.Now().Add(5 * time.Second))
	code, body, _ := do(t, s.Client(), "GET", s.URL()+"/profiles/3/greeting", "", http.Header{plugins.HeaderDeadline: {deadline}})
	if code != http.StatusOK {
		t.Fatalf("got %d %s, want 200", code, body)
	}
	var g greeting
	if err := json.Unmarshal([]byte(body), &g); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	want := greeting{Greeting: "hello, user-3", HelloSawDeadline: deadline, MyDeadline: deadline}
	if g != want {
		t.Errorf("got %+v, want %+v", g, want)
	}
}

// seed imports profiles {id, "user-<id>"} through the bulk import.
func seed(t *testing.T, s *plugintest.Server, ids ...int) {
	t.Helper()
	var in []Profile
	for _, id := range ids {
		in = append(in, Profile{ID: int64(id), Name: "user-" + strconv.Itoa(id)})
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if code, body, _ := do(t, s.Client(), "POST", s.URL()+"/profiles/", string(b), nil); code != http.StatusOK {
		t.Fatalf("seeding: got %d %s, want 200", code, body)
	}
}

func do(t *testing.T, c *http.Client, method, url, body string, h http.Header) (int, string, http.Header) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
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
	return resp.StatusCode, strings.TrimSuffix(string(b), "\n"), resp.Header
}
