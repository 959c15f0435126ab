package plugins

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestParseDeadline(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     time.Time
		ok       bool
	}{
		{"empty", "", time.Time{}, false},
		{"unix nanos", "1700000000123456789", time.Unix(0, 1700000000123456789), true},
		{"negative", "-5", time.Time{}, false},
		{"zero", "0", time.Time{}, false},
		{"not a number", "soon", time.Time{}, false},
		{"overflow", "99999999999999999999", time.Time{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := parseDeadline(c.in)
			if ok != c.ok || !got.Equal(c.want) {
				t.Errorf("got %v %v, want %v %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func FuzzParseDeadline(f *testing.F) {
	f.Add("1700000000123456789")
	f.Add("")
	f.Add("-1")
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseDeadline(s)
		if !ok {
			return
		}
		if got := FormatDeadline(d); got != strconv.FormatInt(d.UnixNano(), 10) {
			t.Fatalf("FormatDeadline(%v) = %q", d, got)
		}
		if again, ok := parseDeadline(FormatDeadline(d)); !ok || !again.Equal(d) {
			t.Fatalf("round trip of %q: got %v %v, want %v", s, again, ok, d)
		}
	})
}

// TestPropagation serves a handler the way Serve does, with its mesh on a
// real unix socket, and checks what an outbound call carries.
func TestPropagation(t *testing.T) {
	dir, err := os.MkdirTemp("", "plugins-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "mesh.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen *http.Request
	)
	meshSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Clone(context.Background())
		mu.Unlock()
	})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = meshSrv.Serve(ln) })
	defer func() { _ = meshSrv.Close(); wg.Wait() }()

	mesh := newMesh(sock)
	defer mesh.client.Transport.(*meshTransport).base.CloseIdleConnections()
	var handlerDeadline time.Time
	var callErr error
	h := &contextHandler{mesh: mesh, h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := r.Context().Deadline()
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://hello/hello/greet?name=x", nil)
		if err == nil {
			var resp *http.Response
			if resp, err = Mesh(r.Context()).Client().Do(req); err == nil {
				resp.Body.Close()
			}
		}
		mu.Lock()
		handlerDeadline, callErr = d, err
		mu.Unlock()
	})}
	srv := httptest.NewServer(h)
	defer srv.Close()

	deadline := time.Now().Add(time.Minute).Truncate(time.Microsecond)
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set(HeaderDeadline, FormatDeadline(deadline))
	req.Header.Set(HeaderRequestID, "rid")
	req.Header.Set(HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	req.Header.Set(HeaderTracestate, "a=1")
	req.Header.Set(HeaderRouting, "r")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if callErr != nil {
		t.Fatalf("outbound call: %v", callErr)
	}
	if !handlerDeadline.Equal(deadline) {
		t.Errorf("handler deadline: got %v, want %v", handlerDeadline, deadline)
	}
	if seen == nil {
		t.Fatal("the mesh saw no request")
	}
	for _, c := range []struct{ name, got, want string }{
		{"Host", seen.Host, "hello"},
		{"URI", seen.RequestURI, "/hello/greet?name=x"},
		{HeaderDeadline, seen.Header.Get(HeaderDeadline), FormatDeadline(deadline)},
		{HeaderParentID, seen.Header.Get(HeaderParentID), "rid"},
		{HeaderRequestID, seen.Header.Get(HeaderRequestID), ""},
		{HeaderTraceparent, seen.Header.Get(HeaderTraceparent), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{HeaderTracestate, seen.Header.Get(HeaderTracestate), "a=1"},
		{HeaderRouting, seen.Header.Get(HeaderRouting), "r"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestMeshBadURL(t *testing.T) {
	m := newMesh("/nonexistent/mesh.sock")
	_, err := m.Client().Get("https://hello/x")
	if !errors.Is(err, ErrMeshURL) {
		t.Fatalf("got %v, want ErrMeshURL", err)
	}
}
