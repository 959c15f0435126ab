package plugins

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/wire"
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

// TestPropagation serves a handler the way Serve does, over real hop
// connections on a unix socket, with a sidecar stand-in at the other end,
// and checks what an outbound call carries.
func TestPropagation(t *testing.T) {
	dir, err := os.MkdirTemp("", "plugins-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "handler.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu              sync.Mutex
		seen            *http.Request
		handlerDeadline time.Time
		callErr         error
	)
	mesh := newMesh(true)
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
	hs := &hopServer{mesh: mesh, ln: ln, srv: hop.Server{Handler: h.serveEnvelope, Context: mesh.inbound}}
	var wg sync.WaitGroup
	wg.Go(func() { _ = hs.accept() })
	defer func() { hs.shutdown(time.Second); wg.Wait() }()

	// The sidecar's side: it serves the handler's calls and sends it a request.
	nc, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	meshSrv := hop.Server{Handler: func(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
		mu.Lock()
		seen = r.Clone(context.Background())
		mu.Unlock()
	}}
	sidecar := hop.New(nc, hop.Config{Serve: meshSrv.Serve})
	defer sidecar.Close()

	deadline := time.Now().Add(time.Minute).Truncate(time.Microsecond)
	env := &wire.Request{
		Id: "rid", Method: http.MethodGet, Path: "/", DeadlineUnixNano: deadline.UnixNano(),
		Trace:   &wire.Trace{Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Tracestate: "a=1"},
		Routing: &wire.Routing{StickyKey: "u1"},
	}
	payload, err := proto.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := hop.Call(sidecar, payload, time.Now().Add(10*time.Second), 1<<20, nil); err != nil {
		t.Fatal(err)
	}
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
		{HeaderRouting, seen.Header.Get(HeaderRouting), wire.EncodeRouting(env.Routing)},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestMeshBadURL(t *testing.T) {
	m := newMesh(true)
	_, err := m.Client().Get("https://hello/x")
	if !errors.Is(err, ErrMeshURL) {
		t.Fatalf("got %v, want ErrMeshURL", err)
	}
}
