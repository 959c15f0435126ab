package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// The httpbin handler (services/httpbin) is built on first use, beside the
// binaries TestMain built, so that only the tests that need it pay for it.
var (
	httpbinOnce sync.Once
	httpbinBin  meshtest.Binaries
	httpbinErr  error
)

// withHTTPBin is bin with the httpbin handler added.
func withHTTPBin(t *testing.T) meshtest.Binaries {
	t.Helper()
	httpbinOnce.Do(func() {
		root, err := meshtest.ModuleRoot()
		if err != nil {
			httpbinErr = err
			return
		}
		out := filepath.Join(filepath.Dir(bin.Griddle), "httpbin")
		cmd := exec.Command("go", "build", "-o", out, "./services/httpbin")
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			httpbinErr = fmt.Errorf("go build ./services/httpbin: %w\n%s", err, o)
			return
		}
		httpbinBin = bin
		httpbinBin.Handlers = maps.Clone(bin.Handlers)
		httpbinBin.Handlers["httpbin"] = out
	})
	if httpbinErr != nil {
		t.Fatal(httpbinErr)
	}
	return httpbinBin
}

// httpbinMesh is the httpbin handler twice: alone under plain net/http
// (the binary's standalone mode) and through a mesh of real processes
// (etcd, `griddle store`, a sidecar with the handler as its plugin, an
// edge), exposed at / so that its paths are the same on both.
type httpbinMesh struct {
	m       *meshtest.Mesh
	edge    *meshtest.Proc
	sidecar *meshtest.Proc
	direct  string // host:port of the handler alone
	through string // host:port of the edge
}

// startHTTPBin starts both. The edge takes bodies up to 300 MiB (the
// suite's largest upload is 200 MiB), gives a request 60 s (moving 200 MiB
// under -race beside every other package's tests took over the default
// 10 s) and runs without admission control, whose shedding is not what
// these tests are about.
func startHTTPBin(t *testing.T) *httpbinMesh {
	t.Helper()
	m := meshtest.Start(t, withHTTPBin(t))
	h := &httpbinMesh{m: m}
	h.sidecar = m.Sidecar("httpbin", "v1", "--http-prefix", "/")
	h.edge = m.Edge("--max-body-bytes", strconv.Itoa(300<<20), "--timeout", "60s", "--no-admission")
	h.direct = m.Direct("httpbin").Addr
	h.through = h.edge.Addr
	// The edge learns the exposure through its watch.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := send(context.Background(), h.through, &rawRequest{method: "GET", target: "/status/204"})
		if err == nil && resp.status == 204 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edge does not serve httpbin 10s after its sidecar registered: %v %+v", err, resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return h
}

// rawRequest is a request exactly as it goes on the wire, so that a case
// controls what a Go client would change: the request-target byte for
// byte, header order and case, framing and trailers.
type rawRequest struct {
	method  string
	target  string      // the request-target as sent
	proto   string      // HTTP/1.1 when empty
	headers [][2]string // in order, names as written; Host: the server's address comes first unless given
	body    []byte      // sent with Content-Length unless chunked; nil: no body and no Content-Length
	// chunked sends body with Transfer-Encoding: chunked, in pieces of
	// chunkSize bytes (all at once when 0), then trailers.
	chunked   bool
	chunkSize int
	trailers  [][2]string
	// expectContinue sends the head alone with Expect: 100-continue and
	// the body only once a 100 Continue came.
	expectContinue bool
}

// rawResponse is what came back, as parsed by net/http.
type rawResponse struct {
	interim       []int // 1xx statuses before the final answer
	status        int
	proto         string
	header        http.Header
	contentLength int64 // -1: not known from the head
	chunked       bool
	body          []byte
	trailer       http.Header
	// Since the request's head was written: when the first and the last
	// byte of the body arrived (zero for an empty body).
	firstByte, lastByte time.Duration
}

// head is the request's head as bytes, with the framing headers.
func (r *rawRequest) head(addr string) []byte {
	var b bytes.Buffer
	proto := r.proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	fmt.Fprintf(&b, "%s %s %s\r\n", r.method, r.target, proto)
	hasHost := false
	for _, h := range r.headers {
		hasHost = hasHost || strings.EqualFold(h[0], "Host")
	}
	if !hasHost {
		fmt.Fprintf(&b, "Host: %s\r\n", addr)
	}
	for _, h := range r.headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	switch {
	case r.chunked:
		b.WriteString("Transfer-Encoding: chunked\r\n")
	case r.body != nil:
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.body))
	}
	if r.expectContinue {
		b.WriteString("Expect: 100-continue\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// writeBody writes the body in its framing.
func (r *rawRequest) writeBody(w io.Writer) error {
	if !r.chunked {
		_, err := w.Write(r.body)
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	size := r.chunkSize
	if size <= 0 {
		size = len(r.body)
	}
	for rest := r.body; len(rest) > 0; {
		n := min(size, len(rest))
		fmt.Fprintf(bw, "%x\r\n", n)
		bw.Write(rest[:n])
		bw.WriteString("\r\n")
		rest = rest[n:]
	}
	bw.WriteString("0\r\n")
	for _, h := range r.trailers {
		fmt.Fprintf(bw, "%s: %s\r\n", h[0], h[1])
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// send sends r to addr on a connection of its own and reads the answer.
func send(ctx context.Context, addr string, r *rawRequest) (*rawResponse, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline := time.Now().Add(60 * time.Second)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	start := time.Now()
	if _, err := conn.Write(r.head(addr)); err != nil {
		return nil, fmt.Errorf("writing the head: %w", err)
	}
	br := bufio.NewReader(conn)
	method := r.method
	out := &rawResponse{}
	var wrote chan error
	writeBody := func() {
		wrote = make(chan error, 1)
		// The server may answer before it read the whole body (a 413):
		// the body is written beside the reading of the answer.
		go func() { wrote <- r.writeBody(conn) }()
	}
	if !r.expectContinue && (r.body != nil || r.chunked) {
		writeBody()
	}
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return nil, fmt.Errorf("reading the answer: %w", err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			out.interim = append(out.interim, resp.StatusCode)
			if resp.StatusCode == http.StatusContinue && r.expectContinue && wrote == nil {
				writeBody()
			}
			continue
		}
		break
	}
	out.status, out.proto, out.header = resp.StatusCode, resp.Proto, resp.Header
	out.contentLength, out.chunked = resp.ContentLength, len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	var body bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			now := time.Since(start)
			if body.Len() == 0 {
				out.firstByte = now
			}
			out.lastByte = now
			body.Write(buf[:n])
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the body after %d bytes: %w", body.Len(), err)
		}
	}
	out.body, out.trailer = body.Bytes(), resp.Trailer
	return out, nil
}

// rss is a process's resident set and its peak (VmRSS and VmHWM of
// /proc/PID/status), in bytes.
func rss(pid int) (cur, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, line, err)
		}
		if name == "VmRSS" {
			cur = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return cur, peak, nil
}
