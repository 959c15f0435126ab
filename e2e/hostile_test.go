package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	osexec "os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// hostileKey is the pin key the suite's edge is given.
const hostileKey = "0123456789abcdef0123456789abcdef"

// rawExchange writes req on a fresh connection to addr and returns what
// came back until the server closed the connection or 3s passed, and the
// status lines in it.
func rawExchange(t *testing.T, addr, req string) (string, []string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b), statusLines.FindAllString(string(b), -1)
}

var statusLines = regexp.MustCompile(`HTTP/1\.[01] \d{3}`)

// hostileMesh is the mesh the hostile clients attack: hello v1 and v2 (v2
// at weight 0, no protocol upgrades), profiles (GET, PUT and POST only), messages and feed (which
// takes message.sent events at /feed/events).
type hostileMesh struct {
	m       *meshtest.Mesh
	edge    *meshtest.Proc
	hello   []*meshtest.Proc // v1, v2
	base    string
	keyFile string
}

func startHostileMesh(t *testing.T) *hostileMesh {
	m := meshtest.Start(t, bin)
	keyFile := writeFile(t, "pin.key", hostileKey+"\n")
	hello := []*meshtest.Proc{m.Sidecar("hello", "v1"), m.Sidecar("hello", "v2")}
	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/")
	m.Sidecar("messages", "v1", "--http-prefix", "/messages/")
	m.Sidecar("feed", "v1", "--http-prefix", "/feed/")
	e := m.Edge("--pin-key-file", keyFile, "--max-body-bytes", "65536")
	applyRules(t, m, "service: hello\nhttp: [{pathPrefix: /hello/, methods: [GET, POST]}]\nstreams: {upgrades: false}\nversions:\n  - to: {v1: 100, v2: 0}\n")
	applyRules(t, m, "service: profiles\nhttp: [{pathPrefix: /profiles/, methods: [GET, PUT, POST]}]\nversions:\n  - to: {v1: 100}\n")
	h := &hostileMesh{m: m, edge: e, hello: hello, base: "http://" + e.Addr, keyFile: keyFile}
	for _, p := range []string{"/profiles/1", "/messages/1", "/feed/1", "/hello/greet"} {
		waitRoute(t, h.base+p)
	}
	seed(t, e.Addr, 50)
	return h
}

// state is what a hostile request must leave as it was: user 42's feed,
// whether profiles 9001 and 9002 exist, profile 1, and the version labels
// the edge has counted requests under.
func (h *hostileMesh) state(t *testing.T) string {
	t.Helper()
	_, feed, _ := get(t, h.base+"/feed/42")
	s9001, _, _ := get(t, h.base+"/profiles/9001")
	s9002, _, _ := get(t, h.base+"/profiles/9002")
	_, p1, _ := get(t, h.base+"/profiles/1")
	return fmt.Sprintf("feed/42=%s profiles/9001=%d profiles/9002=%d profiles/1=%s versions=%v", feed, s9001, s9002, p1, h.versionLabels(t))
}

var sidecarRequests = regexp.MustCompile(`(?m)^griddle_sidecar_requests_total\{[^}]*\} (\d+)`)

// helloServed is how many requests hello's sidecars have handled.
func (h *hostileMesh) helloServed(t *testing.T) int {
	t.Helper()
	n := 0
	for _, p := range h.hello {
		resp, err := http.Get("http://" + p.Admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range sidecarRequests.FindAllStringSubmatch(string(b), -1) {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

var versionLabel = regexp.MustCompile(`griddle_edge_requests_total\{[^}]*version="([^"]*)"`)

func (h *hostileMesh) versionLabels(t *testing.T) []string {
	t.Helper()
	resp, err := http.Get("http://" + h.edge.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var vs []string
	for _, m := range versionLabel.FindAllStringSubmatch(string(b), -1) {
		if m[1] != "" && !slices.Contains(vs, m[1]) { // "": no version chosen
			vs = append(vs, m[1])
		}
	}
	slices.Sort(vs)
	return vs
}

// do sends a request built by build and returns its status and the
// version that answered.
func (h *hostileMesh) do(t *testing.T, method, path string, body string, build func(r *http.Request)) (int, string) {
	t.Helper()
	r, _ := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if build != nil {
		build(r)
	}
	resp, err := client.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Griddle-Version")
}

func sign(t *testing.T, pins string, ttl time.Duration) string {
	t.Helper()
	tok, err := routing.SignPins([]byte(hostileKey), pins, time.Now().Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

const forgedEvent = `{"id":"forged-1","from":"1","to":"42","text":"forged by a client","at":"2026-01-01T00:00:00Z"}`

// TestHostileClients runs the refusals of the edge as the boundary with
// the internet against real processes: each case asserts its refusal and
// that the mesh's state is what it was before.
func TestHostileClients(t *testing.T) {
	h := startHostileMesh(t)
	addr := h.edge.Addr
	wantV1 := func(t *testing.T, status int, version string) {
		t.Helper()
		if status != 200 || version != "v1" {
			t.Errorf("answered %d by %q, want 200 by v1 (the rules' choice)", status, version)
		}
	}
	wantStatus := func(want ...int) func(t *testing.T, status int, _ string) {
		return func(t *testing.T, status int, _ string) {
			t.Helper()
			if !slices.Contains(want, status) {
				t.Errorf("answered %d, want one of %v", status, want)
			}
		}
	}
	// Cases sent with net/http's client.
	type httpCase struct {
		name         string
		method, path string
		body         string
		build        func(r *http.Request)
		check        func(t *testing.T, status int, version string)
	}
	pin := func(v string) func(r *http.Request) {
		return func(r *http.Request) { r.Header.Set("X-Griddle-Pin", v) }
	}
	httpCases := []httpCase{
		{"forged event delivery with an event id", "POST", "/feed/events", forgedEvent, func(r *http.Request) {
			r.Header.Set("X-Griddle-Event-Id", "forged-1")
			r.Header.Set("X-Griddle-Event-Topic", "message.sent")
			r.Header.Set("X-Griddle-Event-Publisher", "messages")
			r.Header.Set("Content-Type", "application/json")
		}, wantStatus(404)},
		{"forged event delivery, plain POST", "POST", "/feed/events", forgedEvent, nil, wantStatus(404)},
		{"forged event delivery, escaped path", "POST", "/feed/%65vents", forgedEvent, pin("unused"), wantStatus(404)},
		{"forged event delivery, doubled slash", "POST", "/feed//events", forgedEvent, nil, wantStatus(301, 404, 405)},
		{"plain pin from the internet", "GET", "/hello/greet", "", pin("hello=v2"), wantV1},
		{"pin token signed by another key", "GET", "/hello/greet", "", func(r *http.Request) {
			tok, _ := routing.SignPins([]byte("another key, 16 bytes or more"), "hello=v2", time.Now().Add(time.Hour))
			r.Header.Set("X-Griddle-Pin", tok)
		}, wantV1},
		{"pin token with its pins changed", "GET", "/hello/greet", "", func(r *http.Request) {
			r.Header.Set("X-Griddle-Pin", strings.Replace(sign(t, "hello=v1", time.Hour), "hello=v1", "hello=v2", 1))
		}, wantV1},
		{"expired pin token", "GET", "/hello/greet", "", func(r *http.Request) { r.Header.Set("X-Griddle-Pin", sign(t, "hello=v2", -time.Second)) }, wantV1},
		{"forged pin cookie", "GET", "/hello/greet", "", func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: routing.CookiePin, Value: "hello=v2|9999999999|AAAA"})
		}, wantV1},
		{"signed pin to a version with no instance", "GET", "/hello/greet", "", pin(sign(t, "hello=v9", time.Hour)), wantV1},
		{"forged routing context", "GET", "/hello/greet", "", func(r *http.Request) {
			r.Header.Set("X-Griddle-Routing", `{"pins":{"hello":"v2"}}`)
		}, wantV1},
		{"forged deadline in the past", "GET", "/hello/greet", "", func(r *http.Request) { r.Header.Set("X-Griddle-Deadline", "1") }, wantV1},
		{"method the rules do not expose (DELETE)", "DELETE", "/profiles/1", "", nil, wantStatus(404)},
		{"method the rules do not expose (PATCH)", "PATCH", "/profiles/9001", `{"name":"x"}`, nil, wantStatus(404)},
		{"body over --max-body-bytes, announced", "POST", "/hello/echo", strings.Repeat("x", 70000), nil, wantStatus(413)},
		{"body over --max-body-bytes, chunked", "POST", "/hello/echo", "", func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(strings.Repeat("x", 70000)))
			r.ContentLength = -1
		}, wantStatus(413)},
		{"upgrade to WebSocket where the rules allow none", "GET", "/hello/greet", "", func(r *http.Request) {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}, wantStatus(501)},
		{"path no service exposes", "GET", "/admin/", "", nil, wantStatus(404)},
		{"headers over 64 KiB", "GET", "/hello/greet", "", func(r *http.Request) {
			r.Header.Set("X-Test-Big", strings.Repeat("a", 100<<10))
		}, wantStatus(431)},
	}
	before := h.state(t)
	for _, c := range httpCases {
		t.Run(c.name, func(t *testing.T) {
			status, version := h.do(t, c.method, c.path, c.body, c.build)
			c.check(t, status, version)
			if after := h.state(t); after != before {
				t.Errorf("state changed:\n before %s\n after  %s", before, after)
			}
		})
	}

	t.Run("random pins mint no metric labels", func(t *testing.T) {
		for range 20 {
			b := make([]byte, 6)
			rand.Read(b)
			h.do(t, "GET", "/hello/greet", "", pin("hello=x"+hex.EncodeToString(b)))
			h.do(t, "GET", "/hello/greet", "", pin(sign(t, "hello=y"+hex.EncodeToString(b), time.Hour)))
		}
		if after := h.state(t); after != before {
			t.Errorf("state changed:\n before %s\n after  %s", before, after)
		}
	})

	// Cases written as raw bytes: request smuggling and malformed requests.
	forged := "POST /feed/events HTTP/1.1\r\nHost: x\r\nX-Griddle-Event-Id: forged-2\r\nContent-Type: application/json\r\nContent-Length: " +
		fmt.Sprint(len(forgedEvent)) + "\r\nConnection: close\r\n\r\n" + forgedEvent
	putHidden := "PUT /profiles/9002 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"name\":\"z\"}"
	rawCases := []struct {
		name, req string
		// want is the status of each answer, in order; a request hidden
		// in another's body must not be answered (it never ran).
		want []string
	}{
		{"CL+TE: refused at the entry, the smuggled request never read",
			"POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + forged,
			[]string{"HTTP/1.1 400"}},
		{"TE+CL: a body hidden behind Content-Length 0",
			"POST /hello/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" +
				fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(putHidden), putHidden),
			[]string{"HTTP/1.1 400"}},
		{"CL+TE after a valid request on the same connection: the first answered, the second refused",
			"GET /hello/greet HTTP/1.1\r\nHost: x\r\n\r\nPOST /profiles/9002 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + putHidden,
			[]string{"HTTP/1.1 200", "HTTP/1.1 400"}},
		{"double Content-Length",
			"POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd" + putHidden,
			[]string{"HTTP/1.1 400"}},
		{"double Content-Length, equal values",
			"POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd" + putHidden,
			[]string{"HTTP/1.1 400"}},
		{"Content-Length with a sign", "POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd", []string{"HTTP/1.1 400"}},
		{"negative Content-Length", "POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", []string{"HTTP/1.1 400"}},
		{"space before the colon", "POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length : 12\r\n\r\n" + putHidden[:12], []string{"HTTP/1.1 400"}},
		{"unknown transfer coding", "POST /hello/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", []string{"HTTP/1.1 501"}},
		{"transfer coding list", "POST /hello/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", []string{"HTTP/1.1 501"}},
		{"malformed chunk size", "POST /hello/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + putHidden, []string{"HTTP/1.1 400"}},
		{"obs-fold: refused, so it cannot smuggle a mesh header", "GET /hello/echo HTTP/1.1\r\nHost: x\r\nX-Test-A: a\r\n X-Griddle-Pin: hello=v2\r\nConnection: close\r\n\r\n",
			[]string{"HTTP/1.1 400"}},
		{"NUL in a header value", "GET /hello/greet HTTP/1.1\r\nHost: x\r\nX-Test-A: a\x00b\r\n\r\n", []string{"HTTP/1.1 400"}},
		{"no Host", "GET /hello/greet HTTP/1.1\r\n\r\n", []string{"HTTP/1.1 400"}},
		{"two Hosts", "GET /hello/greet HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", []string{"HTTP/1.1 400"}},
		{"invalid method", "G(T /hello/greet HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 400"}},
		{"malformed escape in the path", "GET /hello/%zz HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 400"}},
		{"absolute-form target with the delivery scheme",
			"POST griddle-event:/feed/events HTTP/1.1\r\nHost: x\r\nX-Griddle-Event-Id: forged-3\r\nContent-Length: " + fmt.Sprint(len(forgedEvent)) + "\r\nConnection: close\r\n\r\n" + forgedEvent,
			[]string{"HTTP/1.1 404"}},
		// net/http answers OPTIONS * itself; it never reaches the mesh.
		{"OPTIONS * is not forwarded", "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", []string{"HTTP/1.1 200"}},
		{"CONNECT", "CONNECT profiles:80 HTTP/1.1\r\nHost: profiles:80\r\nConnection: close\r\n\r\n", []string{"HTTP/1.1 404"}},
		{"request line over the header limit", "GET /hello/greet?" + strings.Repeat("a", 100<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 431"}},
		{"HTTP/2 preface on a TLS-less HTTP/1 request line", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", nil},
	}
	// What the edge refuses at its entry: nothing of it reaches a
	// handler, and the answer says why.
	refusedAtEntry := map[string]string{
		"CL+TE: refused at the entry, the smuggled request never read":                               "both Content-Length and Transfer-Encoding",
		"TE+CL: a body hidden behind Content-Length 0":                                               "both Content-Length and Transfer-Encoding",
		"CL+TE after a valid request on the same connection: the first answered, the second refused": "both Content-Length and Transfer-Encoding",
		"double Content-Length":                                 "Content-Length given more than once",
		"double Content-Length, equal values":                   "Content-Length given more than once",
		"obs-fold: refused, so it cannot smuggle a mesh header": "obs-fold",
	}
	for _, c := range rawCases {
		t.Run(c.name, func(t *testing.T) {
			served := h.helloServed(t)
			resp, got := rawExchange(t, addr, c.req)
			if reason, ok := refusedAtEntry[c.name]; ok {
				if !strings.Contains(resp, "400 Bad Request: "+reason) {
					t.Errorf("the refusal does not say %q:\n%s", reason, resp)
				}
				want := served
				if strings.HasPrefix(c.req, "GET /hello/greet") {
					want++ // the valid request before the refused one
				}
				now := h.helloServed(t)
				for deadline := time.Now().Add(2 * time.Second); now < want && time.Now().Before(deadline); now = h.helloServed(t) {
					time.Sleep(20 * time.Millisecond)
				}
				if now != want {
					t.Errorf("hello's sidecars handled %d requests, want %d: the refused request reached a handler", now-served, want-served)
				}
			}
			if c.want == nil {
				// HTTP/2 with prior knowledge: the edge answers with
				// HTTP/2 frames (a SETTINGS frame), no HTTP/1 status.
				if len(got) != 0 || len(resp) == 0 {
					t.Errorf("answers %q (%d bytes), want HTTP/2 frames and no HTTP/1 status", got, len(resp))
				}
			} else if len(got) != len(c.want) || !slices.EqualFunc(got, c.want, func(a, b string) bool {
				// "refused": any answer but a 2xx.
				return a == b || b == "refused" && !strings.HasPrefix(a, "HTTP/1.1 2")
			}) {
				t.Errorf("answers %q, want %q\n%s", got, c.want, resp)
			}
			if strings.HasPrefix(c.name, "OPTIONS") && strings.Contains(resp, "X-Griddle-") {
				t.Errorf("OPTIONS * reached the mesh:\n%s", resp)
			}
			if after := h.state(t); after != before {
				t.Errorf("state changed:\n before %s\n after  %s", before, after)
			}
		})
	}

	t.Run("a slow header sender is cut off", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /hello/greet HTTP/1.1\r\nHost: x\r\nX-Test-A: ")
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		start := time.Now()
		_, err = c.Read(make([]byte, 1))
		if took := time.Since(start); err == nil || took > 10*time.Second {
			t.Errorf("read after %v: %v; want the edge to close the connection within its 5s header timeout", took, err)
		}
		if after := h.state(t); after != before {
			t.Errorf("state changed:\n before %s\n after  %s", before, after)
		}
	})

	t.Run("exposure of a path another service holds is refused", func(t *testing.T) {
		p := h.m.Griddle("thief", "sidecar", "--service", "thief", "--version", "v1", "--id", "thief-1",
			"--plugin", bin.Handlers["hello"], "--etcd", h.m.EtcdEndpoints(), "--http-prefix", "/profiles/admin/")
		exited := make(chan struct{})
		go func() {
			for !strings.Contains(p.Log(), "already claimed") {
				time.Sleep(20 * time.Millisecond)
			}
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Fatalf("the sidecar claiming /profiles/admin/ did not refuse to start:\n%s", p.Log())
		}
		if after := h.state(t); after != before {
			t.Errorf("state changed:\n before %s\n after  %s", before, after)
		}
	})

	t.Run("a service with rules is exposed only by its rule routes", func(t *testing.T) {
		h.m.Sidecar("hello", "v1", "--http-prefix", "/hello-extra/")
		time.Sleep(300 * time.Millisecond) // the claim reaches the edge's catalog
		if status, _ := h.do(t, "GET", "/hello-extra/greet", "", nil); status != 404 {
			t.Errorf("GET /hello-extra/greet = %d, want 404: hello's rules expose /hello/ only", status)
		}
		if after := h.state(t); after != before {
			t.Errorf("state changed:\n before %s\n after  %s", before, after)
		}
	})

	t.Run("slow readers give their admission slots back", func(t *testing.T) {
		tight := h.m.Edge("--admission-max", "8", "--max-body-bytes", "16777216")
		waitRoute(t, "http://"+tight.Addr+"/hello/greet")
		big := strings.Repeat("x", 8<<20)
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		for range 10 {
			c, err := d.Dial("tcp", tight.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go io.WriteString(c, "POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: "+fmt.Sprint(len(big))+"\r\n\r\n"+big)
		}
		// Every answer has arrived at the edge and is being written to a
		// client that reads nothing; none of them holds a slot.
		var st struct {
			Admission map[string]struct{ InFlight int }
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			if err := tight.Status(&st); err != nil {
				t.Fatal(err)
			}
			if _, ok := st.Admission["hello"]; ok && st.Admission["hello"].InFlight == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("admission still holds %+v with 10 slow readers", st.Admission)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for i := range 20 {
			if status, _, _ := get(t, "http://"+tight.Addr+"/hello/greet?name=x"); status != 200 {
				t.Fatalf("request %d beside 10 slow readers: %d, want 200", i, status)
			}
		}
		if after := h.state(t); after != before {
			t.Errorf("state changed:\n before %s\n after  %s", before, after)
		}
	})

	t.Run("connections past --max-conns are refused", func(t *testing.T) {
		capped := h.m.Edge("--max-conns", "4")
		var held []net.Conn
		for range 4 {
			c, err := net.Dial("tcp", capped.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			held = append(held, c)
		}
		refused := false
		for range 3 {
			if _, got := rawExchange(t, capped.Addr, "GET /hello/greet HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); slices.Equal(got, []string{"HTTP/1.1 503"}) {
				refused = true
			}
		}
		if !refused {
			t.Error("with 4 connections open, none of 3 more was refused with 503")
		}
		for _, c := range held {
			c.Close()
		}
		time.Sleep(100 * time.Millisecond)
		if status, _, _ := get(t, "http://"+capped.Addr+"/hello/greet"); status != 200 {
			t.Errorf("after the idle connections closed: %d, want 200", status)
		}
		if after := h.state(t); after != before {
			t.Errorf("state changed:\n before %s\n after  %s", before, after)
		}
	})

	t.Run("bodies past --max-buffered-bytes are refused", func(t *testing.T) {
		capped := h.m.Edge("--max-buffered-bytes", "1000")
		waitRoute(t, "http://"+capped.Addr+"/hello/greet")
		r, _ := http.NewRequest("PUT", "http://"+capped.Addr+"/profiles/9001", strings.NewReader(`{"name":"`+strings.Repeat("n", 2000)+`"}`))
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Errorf("PUT of 2 KB with 1000 bytes allowed in memory: %d, want 503", resp.StatusCode)
		}
		if after := h.state(t); after != before {
			t.Errorf("state changed:\n before %s\n after  %s", before, after)
		}
	})

	// Controls: what the refusals must not break.
	t.Run("control: a signed pin to a live version is honoured", func(t *testing.T) {
		if status, v := h.do(t, "GET", "/hello/greet", "", pin(sign(t, "hello=v2", time.Hour))); status != 200 || v != "v2" {
			t.Errorf("answered %d by %q, want 200 by v2", status, v)
		}
		if status, v := h.do(t, "GET", "/hello/greet", "", func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: routing.CookiePin, Value: sign(t, "hello=v2", time.Hour)})
		}); status != 200 || v != "v2" {
			t.Errorf("by cookie: answered %d by %q, want 200 by v2", status, v)
		}
	})
	t.Run("control: real events are still delivered", func(t *testing.T) {
		if status, _ := h.do(t, "POST", "/messages/42", `{"from":"1","text":"real"}`, func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }); status != 201 {
			t.Fatalf("POST /messages/42: %d", status)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, feed, _ := get(t, h.base+"/feed/42")
			if strings.Contains(feed, `"real"`) {
				if strings.Contains(feed, "forged") {
					t.Errorf("feed holds a forged event: %s", feed)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the real message never reached the feed: %s", feed)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// TestHostilePinCLI: griddle pin signs what the edge honours.
func TestHostilePinCLI(t *testing.T) {
	key := writeFile(t, "pin.key", hostileKey)
	out, err := runGriddle("pin", "--key-file", key, "--ttl", "1m", "hello=v2")
	if err != nil {
		t.Fatalf("griddle pin: %v\n%s", err, out)
	}
	pins, err := routing.VerifyPins([][]byte{[]byte(hostileKey)}, strings.TrimSpace(out), time.Now())
	if err != nil || pins["hello"] != "v2" {
		t.Errorf("token %q: %v, %v; want hello=v2", out, pins, err)
	}
	short := writeFile(t, "short.key", "short")
	if out, err := runGriddle("pin", "--key-file", short, "hello=v2"); err == nil || !strings.Contains(out, "--key-file") {
		t.Errorf("a 5-byte key: %v\n%s; want refused, naming --key-file", err, out)
	}
}

func runGriddle(args ...string) (string, error) {
	out, err := osexec.Command(bin.Griddle, args...).CombinedOutput()
	return string(out), err
}
