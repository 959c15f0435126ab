package edge

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFramingGuard runs net/http behind the guard on a real listener: each
// case sends raw bytes and checks the answers in order and the requests
// the handler saw.
func TestFramingGuard(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: refuseFraming(h), ConnContext: withGuard, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(guardListener{Listener: ln, maxHeaderBytes: 1 << 20})
	t.Cleanup(func() { srv.Close() })

	status := regexp.MustCompile(`HTTP/1\.1 \d{3}`)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct {
		name   string
		req    string
		want   []string // status lines
		seen   []string // requests the handler saw
		reason string   // in the 400's body
	}{
		{"CL+TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			[]string{"HTTP/1.1 400"}, nil, "both Content-Length and Transfer-Encoding"},
		{"TE+CL, names in other cases", "POST /a HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n" + "5\r\nabcde\r\n0\r\n\r\n",
			[]string{"HTTP/1.1 400"}, nil, "both Content-Length and Transfer-Encoding"},
		{"double equal Content-Length", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
			[]string{"HTTP/1.1 400"}, nil, "Content-Length given more than once"},
		{"obs-fold", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n X-B: b\r\n\r\n",
			[]string{"HTTP/1.1 400"}, nil, "obs-fold"},
		{"obs-fold with a tab", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
			[]string{"HTTP/1.1 400"}, nil, "obs-fold"},
		{"pipelined: the valid request is answered, the smuggling one refused after it",
			"GET /first HTTP/1.1\r\nHost: x\r\n\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			[]string{"HTTP/1.1 200", "HTTP/1.1 400"}, []string{"GET /first "}, "both Content-Length"},
		{"chunked body with extensions and trailers, then another request",
			"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2 \r\nde\r\n0\r\nX-Trailer: t\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			[]string{"HTTP/1.1 200", "HTTP/1.1 200"}, []string{"POST /a abcde", "GET /second "}, ""},
		{"a request inside a body is body",
			"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled + "GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			[]string{"HTTP/1.1 200", "HTTP/1.1 200"}, []string{"POST /a " + smuggled, "GET /second "}, ""},
		{"bare LF line ends", "POST /a HTTP/1.1\nHost: x\nContent-Length: 2\n\nhiGET /second HTTP/1.1\nHost: x\nConnection: close\n\n",
			[]string{"HTTP/1.1 200", "HTTP/1.1 200"}, []string{"POST /a hi", "GET /second "}, ""},
		{"malformed chunk size: the body fails and nothing after it is read",
			"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + smuggled,
			[]string{"HTTP/1.1 400"}, []string{"POST /a "}, ""},
		{"the refusal method from a client", refusedMethod + " / HTTP/1.1\r\nHost: x\r\n\r\n",
			[]string{"HTTP/1.1 400"}, nil, "request refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, c.req)
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			b, err := io.ReadAll(conn)
			if err != nil {
				t.Errorf("the connection was not closed: %v", err)
			}
			if got := status.FindAllString(string(b), -1); !slices.Equal(got, c.want) {
				t.Errorf("answers %q, want %q\n%s", got, c.want, b)
			}
			if c.reason != "" && !strings.Contains(string(b), c.reason) {
				t.Errorf("answer without the reason %q:\n%s", c.reason, b)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(seen, c.seen) {
				t.Errorf("the handler saw %q, want %q", seen, c.seen)
			}
		})
	}
}

// TestFramingGuardOverTLS: on the HTTPS listener, HTTP/1.1 goes through the
// guard (and its requests keep their TLS state), HTTP/2 by ALPN does not.
func TestFramingGuardOverTLS(t *testing.T) {
	certs := httptest.NewUnstartedServer(nil)
	certs.StartTLS() // for its certificate
	certs.Close()
	var calls atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		fmt.Fprintf(w, "%s tls=%v", r.Proto, r.TLS != nil)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: certs.TLS.Certificates, NextProtos: []string{"h2", "http/1.1"}}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	srv := &http.Server{Handler: refuseFraming(h), ConnContext: withGuard, TLSConfig: cfg, Protocols: &protos}
	entry := newTLSEntry(ln, cfg, 1<<20, 5*time.Second)
	go srv.Serve(entry)
	t.Cleanup(func() { srv.Close() })

	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(conn)
	if got := regexp.MustCompile(`HTTP/1\.1 \d{3}`).FindAllString(string(b), -1); !slices.Equal(got, []string{"HTTP/1.1 200", "HTTP/1.1 400"}) ||
		!strings.Contains(string(b), "HTTP/1.1 tls=true") || !strings.Contains(string(b), "both Content-Length and Transfer-Encoding") {
		t.Errorf("HTTP/1.1 over TLS: answers %q, want a 200 with the TLS state, then the refusal:\n%s", got, b)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want once (the request before the refused one)", n)
	}

	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	resp, err := c.Get("https://" + ln.Addr().String() + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "HTTP/2.0 tls=true" {
		t.Errorf("HTTP/2 by ALPN: %s %q, want HTTP/2 with the TLS state", resp.Proto, body)
	}
}
