package sample

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/wire"
)

const rules = `service: hello
versions:
  - match: {header: {x-beta: "1"}, query: {lang: en}}
    to: {v2: 100}
  - name: ranking
    sticky: cookie:uid
    to: {v1: 90, v2: 10}
`

func compile(t testing.TB, doc string) *routing.Service {
	t.Helper()
	d, err := routing.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := routing.Compile([]routing.Document{*d}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return tab.Service(d.Service)
}

func TestRecordKeepsOnlyWhatRulesRead(t *testing.T) {
	s, err := New(Config{Every: 1, Size: 4})
	if err != nil {
		t.Fatal(err)
	}
	svc := compile(t, rules)
	r := httptest.NewRequest("POST", "/hello/greet?lang=en&token=secret", strings.NewReader("a body"))
	r.Header.Set("X-Beta", "1")
	r.Header.Set("Authorization", "Bearer secret")
	r.Header.Set("Cookie", "uid=u1; session=secret")
	rc := &wire.Routing{Pins: map[string]string{"feed": "v2"}}
	d := svc.Decide(r, rc)
	if !s.Due() {
		t.Fatal("Due: false with Every 1")
	}
	s.Record(r, "hello", svc, rc, d.Version)
	got := s.Snapshot("hello")
	if len(got) != 1 {
		t.Fatalf("Snapshot: %d requests, want 1", len(got))
	}
	q := got[0]
	if q.Method != "POST" || q.Path != "/hello/greet" || q.Version != "v2" || q.Pins["feed"] != "v2" {
		t.Errorf("recorded %+v", q)
	}
	if len(q.Header) != 1 || q.Header["X-Beta"][0] != "1" || len(q.Cookie) != 1 || q.Cookie["uid"] != "u1" || len(q.Query) != 1 || q.Query["lang"] != "en" {
		t.Errorf("recorded header %v cookie %v query %v, want only X-Beta, uid and lang", q.Header, q.Cookie, q.Query)
	}
	if want := "header:X-Beta cookie:uid query:lang"; strings.Join(q.Reads, " ") != want {
		t.Errorf("Reads %v, want %s", q.Reads, want)
	}
	// The rebuilt request decides as the original did.
	if d2 := svc.Decide(q.HTTP(), q.Routing()); d2.Version != d.Version {
		t.Errorf("replayed: %s, want %s", d2.Version, d.Version)
	}
	if s.Snapshot("other") != nil && len(s.Snapshot("other")) != 0 {
		t.Errorf("Snapshot of another service is not empty")
	}
}

func TestRecordsConfiguredNames(t *testing.T) {
	s, _ := New(Config{Every: 1, Headers: []string{"x-beta"}, Cookies: []string{"uid"}})
	r := httptest.NewRequest("GET", "/hello/", nil)
	r.Header.Set("X-Beta", "1")
	r.Header.Set("Cookie", "uid=u7; session=secret")
	s.Record(r, "hello", nil, nil, "v1")
	q := s.Snapshot("hello")[0]
	if q.Header["X-Beta"][0] != "1" || q.Cookie["uid"] != "u7" || len(q.Cookie) != 1 || strings.Join(q.Reads, " ") != "header:X-Beta cookie:uid" {
		t.Errorf("recorded %+v, want X-Beta and uid without rules", q)
	}
	if _, err := New(Config{Cookies: []string{"a=b"}}); err == nil || !strings.Contains(err.Error(), "--sample-cookie[0]") {
		t.Errorf("bad cookie name: %v", err)
	}
}

func TestRingKeepsTheLatest(t *testing.T) {
	s, _ := New(Config{Every: 1, Size: 5})
	svc := compile(t, rules)
	for i := range 12 {
		s.Record(httptest.NewRequest("GET", "/hello/"+string(rune('a'+i)), nil), "hello", svc, nil, "v1")
	}
	got := s.Snapshot("")
	if len(got) != 5 {
		t.Fatalf("ring of 5: %d kept", len(got))
	}
	for i, q := range got {
		if want := "/hello/" + string(rune('a'+7+i)); q.Path != want {
			t.Errorf("kept[%d] = %s, want %s (the latest five, oldest first)", i, q.Path, want)
		}
	}
	if st := s.Stats(); st.Recorded != 12 || st.Size != 5 {
		t.Errorf("Stats %+v", st)
	}
}

func TestDueOneInEvery(t *testing.T) {
	s, _ := New(Config{Every: 10})
	n := 0
	for range 100000 {
		if s.Due() {
			n++
		}
	}
	// Binomial(100000, 0.1): sd 95; 6 sd either side.
	if n < 9430 || n > 10570 {
		t.Errorf("1 in 10 of 100,000: %d due", n)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Every: -1}, "--sample-every"},
		{Config{Size: -1}, "--sample-size"},
		{Config{Size: 1 << 21}, "--sample-size"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	var nilSampler *Sampler
	if nilSampler.Due() {
		t.Error("a nil Sampler is due")
	}
}

func TestHandler(t *testing.T) {
	s, _ := New(Config{Every: 1})
	s.Due()
	s.Record(httptest.NewRequest("GET", "/x", nil), "hello", nil, nil, "v1")
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/sample?service=hello", nil))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"path":"/x"`) {
		t.Fatalf("GET /sample: %d %s", w.Code, w.Body)
	}
}

// BenchmarkDue is what every request pays.
func BenchmarkDue(b *testing.B) {
	s, _ := New(Config{})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Due()
		}
	})
}

// BenchmarkRecord is what a sampled request pays.
func BenchmarkRecord(b *testing.B) {
	s, _ := New(Config{Every: 1})
	svc := compile(b, rules)
	r := httptest.NewRequest("GET", "/hello/greet", nil)
	r.Header.Set("Cookie", "uid=u1; session=x")
	rc := &wire.Routing{StickyKey: "u1"}
	b.ReportAllocs()
	for b.Loop() {
		s.Record(r, "hello", svc, rc, "v1")
	}
}
