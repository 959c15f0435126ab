package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The transparency suite: go-httpbin (a third-party handler) served alone
// under plain net/http and through the mesh, the same request sent to
// both byte for byte, the answers compared: status, 1xx answers,
// protocol, headers, framing (Content-Length or chunked), body bytes,
// trailers, and for streamed answers that the first byte comes long
// before the last.
//
// What may differ, and why; everything else must be the same:
//   - Date: the time each answer was made.
//   - X-Griddle-* answer headers: the mesh's own (request id, version).
//   - Connection, Keep-Alive, Proxy-Connection: hop-by-hop, about each
//     connection alone (RFC 9110, 7.6.1).
//   - Chunked against a Content-Length, where the handler did not say
//     its answer's length: Transfer-Encoding is hop-by-hop too (RFC 9112,
//     6.1), so the mesh may send a whole answer with its length. A length
//     the handler gave must be kept; that nothing is held back is what the
//     streamed cases measure.
//   - The server's own address (host:port), wherever the handler echoes
//     it (Host, url, Location of absolute redirects): each side is reached
//     at its own; it reads HOST on both.
//   - In what the handler echoes of its request: X-Forwarded-For,
//     X-Forwarded-Proto, X-Forwarded-Host and Forwarded, which the edge
//     adds by design (who the client is), and hop-by-hop request headers
//     (Connection, the names it lists, Keep-Alive, TE, Trailer, Upgrade,
//     Proxy-Connection), which a proxy must not forward; with them the
//     echo's length, whose Content-Length each side must still tell
//     truly.
//   - Per case, listed there: headers and body parts the handler takes
//     from its clock or a random source (Last-Modified of /etag, the
//     random multipart boundary of a multi-range answer, an SSE event's
//     timestamp, Server-Timing durations).
//
// Cases that cannot pass by design are skipped with the reason; the README
// lists them (HTTP fidelity).
func TestTransparency(t *testing.T) {
	h := startHTTPBin(t)
	cases := transparencyCases()
	t.Logf("%d cases", len(cases))
	if len(cases) < 100 {
		t.Errorf("%d cases, want at least 100", len(cases))
	}
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("case %q twice", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			if c.skip != "" {
				t.Skip(c.skip)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			direct, err := send(ctx, h.direct, c.forAddr(h.direct))
			if err != nil {
				t.Fatalf("direct: %v", err)
			}
			through, err := send(ctx, h.through, c.forAddr(h.through))
			if err != nil {
				t.Fatalf("through the mesh: %v (direct answered %d)", err, direct.status)
			}
			compareAnswers(t, c, h.direct, direct, h.through, through)
		})
	}
	transparencyWebSocket(t, h)
	t.Run("websocket frames sent with the handshake", func(t *testing.T) {
		// The client does not wait for the 101: its first frames travel in
		// the same packet as the request's head, so the bytes after the
		// head must reach the handler too. The answer's bytes after the
		// 101 (httpbin's frames are not masked) are compared exactly.
		d, dh, err := rawWebSocket(h.direct)
		if err != nil {
			t.Fatalf("direct: %v", err)
		}
		m, mh, err := rawWebSocket(h.through)
		if err != nil {
			t.Fatalf("through the mesh: %v", err)
		}
		for _, hd := range []http.Header{dh, mh} {
			delete(hd, "Date")
			for k := range hd {
				if strings.HasPrefix(k, "X-Griddle-") {
					delete(hd, k)
				}
			}
		}
		diffHeaders(t, "handshake header", mh, dh)
		if !bytes.Equal(m, d) {
			t.Errorf("bytes after the handshake: got %q, want %q", m, d)
		}
	})
}

// rawWebSocket opens a WebSocket to httpbin's echo at addr and sends, in
// one write with the handshake, a text frame, a binary frame and a close
// frame (masked, with a fixed key). It returns the 101's header and every
// byte the server sent after it until it closed the connection.
func rawWebSocket(addr string) ([]byte, http.Header, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	frame := func(op byte, payload []byte) []byte {
		key := []byte{1, 2, 3, 4}
		f := []byte{0x80 | op, 0x80 | byte(len(payload))}
		f = append(f, key...)
		for i, b := range payload {
			f = append(f, b^key[i%4])
		}
		return f
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET /websocket/echo HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	req.Write(frame(0x1, []byte("hello, frames")))
	req.Write(frame(0x2, []byte{0, 1, 2, 253, 254, 255}))
	req.Write(frame(0x8, []byte{0x03, 0xe8, 'b', 'y', 'e'})) // 1000, "bye"
	if _, err := conn.Write(req.Bytes()); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the handshake's answer: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, resp.Header, fmt.Errorf("handshake: got %d %q, want 101", resp.StatusCode, b)
	}
	rest, err := io.ReadAll(br)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset by peer") {
		return rest, resp.Header, fmt.Errorf("after %d bytes: %w", len(rest), err)
	}
	return rest, resp.Header, nil
}

// transparencyCase is one named request of the suite.
type transparencyCase struct {
	name string
	req  rawRequest
	// varies names answer headers (and trailers) the handler derives from
	// its clock or a random source.
	varies []string
	// valueVaries rewrites, in the named answer header, the parts of each
	// value the handler derives from its clock (a cookie's Expires).
	valueVaries map[string]func(string) string
	// bodyVaries rewrites the parts of a body the handler derives from its
	// clock or a random source.
	bodyVaries func([]byte) []byte
	// stream: the handler writes the body over time, so the first byte
	// must arrive well before the last.
	stream bool
	skip   string // why the case cannot pass by design
}

// forAddr is the case's request for a server at addr: {addr} in the target
// and in header values reads as that address.
func (c transparencyCase) forAddr(addr string) *rawRequest {
	r := c.req
	r.target = strings.ReplaceAll(r.target, "{addr}", addr)
	r.headers = slices.Clone(r.headers)
	for i := range r.headers {
		r.headers[i][1] = strings.ReplaceAll(r.headers[i][1], "{addr}", addr)
	}
	return &r
}

type caseOpt func(*transparencyCase)

func tcase(name, method, target string, opts ...caseOpt) transparencyCase {
	c := transparencyCase{name: name, req: rawRequest{method: method, target: target}}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func hdr(name, value string) caseOpt {
	return func(c *transparencyCase) { c.req.headers = append(c.req.headers, [2]string{name, value}) }
}
func body(b []byte) caseOpt { return func(c *transparencyCase) { c.req.body = b } }
func chunked(b []byte, size int, trailers ...[2]string) caseOpt {
	return func(c *transparencyCase) {
		c.req.body, c.req.chunked, c.req.chunkSize, c.req.trailers = b, true, size, trailers
	}
}
func varies(names ...string) caseOpt {
	return func(c *transparencyCase) { c.varies = append(c.varies, names...) }
}
func valueVaries(name string, f func(string) string) caseOpt {
	return func(c *transparencyCase) {
		if c.valueVaries == nil {
			c.valueVaries = map[string]func(string) string{}
		}
		c.valueVaries[name] = f
	}
}
func bodyVaries(f func([]byte) []byte) caseOpt { return func(c *transparencyCase) { c.bodyVaries = f } }

// cookieExpires is a Set-Cookie attribute Expires=<date>, up to its ';'.
var cookieExpires = regexp.MustCompile(`(?i)expires=[^;]*`)

// expiresVaries stands for the Expires attribute of a cookie.
func expiresVaries(v string) string  { return cookieExpires.ReplaceAllString(v, "Expires=(varies)") }
func streamed() caseOpt              { return func(c *transparencyCase) { c.stream = true } }
func skipBecause(why string) caseOpt { return func(c *transparencyCase) { c.skip = why } }
func httpProto(p string) caseOpt     { return func(c *transparencyCase) { c.req.proto = p } }
func expect100() caseOpt             { return func(c *transparencyCase) { c.req.expectContinue = true } }

// randomBytes are n bytes that are the same for the same seed.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func multipartBody() (contentType string, b []byte) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	w.SetBoundary("griddle-suite-boundary")
	w.WriteField("name", "Ann")
	w.WriteField("name", "Bo")
	f, _ := w.CreateFormFile("file", "notes.txt")
	f.Write([]byte("line one\nline two\n"))
	w.Close()
	return w.FormDataContentType(), buf.Bytes()
}

var (
	sseTimestamp = regexp.MustCompile(`"timestamp":\d+`)
	uuidPattern  = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	digestNonce  = regexp.MustCompile(`(nonce|opaque)="[^"]*"`)
)

func transparencyCases() []transparencyCase {
	const (
		json1   = `{"name":"Ann","city":"Uppsala","tags":["a","b"],"n":1.50}`
		octet   = "application/octet-stream"
		textCT  = "text/plain; charset=utf-8"
		form    = "application/x-www-form-urlencoded"
		jsonCT  = "application/json"
		kib     = 1 << 10
		mib     = 1 << 20
		longArg = "abcdefghijklmnopqrstuvwxyz0123456789"
	)
	mpType, mpBody := multipartBody()
	text1k := bytes.Repeat([]byte("griddle-"), kib/8)
	cases := []transparencyCase{
		// Methods.
		tcase("method GET", "GET", "/anything"),
		tcase("method POST empty body", "POST", "/anything", body([]byte{})),
		tcase("method POST without Content-Length", "POST", "/anything"),
		tcase("method PUT", "PUT", "/put", hdr("Content-Type", textCT), body([]byte("x=1"))),
		tcase("method PATCH", "PATCH", "/patch", hdr("Content-Type", jsonCT), body([]byte(json1))),
		tcase("method DELETE", "DELETE", "/delete"),
		tcase("method DELETE with body", "DELETE", "/anything", hdr("Content-Type", textCT), body([]byte("gone"))),
		tcase("method GET with body", "GET", "/anything", hdr("Content-Type", textCT), body([]byte("payload"))),
		tcase("method HEAD /get", "HEAD", "/get"),
		tcase("method HEAD /head", "HEAD", "/head"),
		tcase("method HEAD of a known length", "HEAD", "/bytes/2048?seed=5"),
		tcase("method HEAD /html", "HEAD", "/html"),
		tcase("method OPTIONS preflight", "OPTIONS", "/anything", hdr("Origin", "http://app.example"),
			hdr("Access-Control-Request-Method", "PUT"), hdr("Access-Control-Request-Headers", "X-Custom, Content-Type")),
		tcase("method OPTIONS asterisk", "OPTIONS", "*"),
		tcase("method custom PURGE", "PURGE", "/anything"),
		tcase("method custom QUERY with body", "QUERY", "/anything", hdr("Content-Type", jsonCT), body([]byte(json1))),
		tcase("method lower-case get", "get", "/anything"),
		tcase("method TRACE", "TRACE", "/anything"),
		tcase("method not allowed", "POST", "/get", body([]byte("x"))),

		// Paths and queries, escapes and odd shapes.
		tcase("path encoded slash", "GET", "/anything/a%2Fb"),
		tcase("path encoded slashes and query slash", "GET", "/anything/a%2Fb%2Fc?x=%2F"),
		tcase("path encoded space", "GET", "/anything/a%20b"),
		tcase("path plus", "GET", "/anything/a+b"),
		tcase("query plus", "GET", "/anything?q=a+b"),
		tcase("query encoded space", "GET", "/anything?q=a%20b"),
		tcase("query bare question mark", "GET", "/anything?"),
		tcase("query repeated and empty keys", "GET", "/anything?a=1&a=2&b=&c"),
		tcase("query encoded reserved", "GET", "/anything?x=%26%3D%3F%23&y=%2B"),
		tcase("query raw hash", "GET", "/anything?a=1#frag"),
		tcase("query bare question mark and hash", "GET", "/anything?#"),
		tcase("path escaped unicode", "GET", "/anything/caf%C3%A9"),
		tcase("path raw unicode", "GET", "/anything/café"),
		tcase("query escaped unicode", "GET", "/anything?name=%E2%9C%93"),
		tcase("query raw unicode", "GET", "/anything?name=✓"),
		tcase("query escaped latin-1", "GET", "/anything?a=%E9"),
		tcase("query escaped NUL", "GET", "/anything?%00=%00"),
		tcase("path leading double slash", "GET", "//anything"),
		tcase("path inner double slashes", "GET", "/anything//x//"),
		tcase("path dot segment", "GET", "/anything/./x"),
		tcase("path dot-dot segment", "GET", "/anything/x/../get"),
		tcase("path escaped dot-dot", "GET", "/anything/%2e%2e/x"),
		tcase("path semicolon", "GET", "/anything/a;b=c"),
		tcase("query semicolon", "GET", "/anything?a=1;b=2"),
		tcase("path tilde escaped and raw", "GET", "/anything/~user/%7Euser"),
		tcase("path invalid escape", "GET", "/anything/%zz"),
		tcase("query invalid escape", "GET", "/anything?q=%zz"),
		tcase("query 4 KiB", "GET", "/anything?q="+strings.Repeat(longArg, 4*kib/len(longArg))),
		tcase("path 2 KiB", "GET", "/anything/"+strings.Repeat(longArg, 2*kib/len(longArg))),
		tcase("absolute-form target", "GET", "http://{addr}/anything?abs=1"),
		tcase("not found", "GET", "/no/such/path"),

		// Headers.
		tcase("header repeated in order", "GET", "/headers", hdr("X-Multi", "one"), hdr("X-Multi", "two"), hdr("X-Multi", "three")),
		tcase("header repeated with commas", "GET", "/headers", hdr("X-List", "a, b"), hdr("X-List", "c")),
		tcase("header repeated interleaved", "GET", "/headers", hdr("X-A", "1"), hdr("X-B", "1"), hdr("X-A", "2"), hdr("X-B", "2")),
		tcase("header case", "GET", "/headers", hdr("x-lower", "1"), hdr("X-UPPER", "2"), hdr("x-MiXeD-cAsE", "3")),
		tcase("header unicode value", "GET", "/headers", hdr("X-Unicode", "héllo ✓ 日本")),
		tcase("header latin-1 byte", "GET", "/headers", hdr("X-Latin", "caf\xe9")),
		tcase("header empty value", "GET", "/headers", hdr("X-Empty", "")),
		tcase("header surrounding spaces", "GET", "/headers", hdr("X-Spaces", "   padded   ")),
		tcase("header 100 of them", "GET", "/headers", func(c *transparencyCase) {
			for i := range 100 {
				hdr(fmt.Sprintf("X-H-%03d", i), fmt.Sprint(i))(c)
			}
		}),
		tcase("header 8 KiB value", "GET", "/headers", hdr("X-Big", strings.Repeat("b", 8*kib))),
		tcase("header no User-Agent", "GET", "/user-agent"),
		tcase("header custom User-Agent", "GET", "/user-agent", hdr("User-Agent", "suite/1.0 (+griddle)")),
		tcase("header Host other than the address", "GET", "/headers", hdr("Host", "example.com")),
		tcase("header Origin for CORS", "GET", "/get", hdr("Origin", "http://app.example")),
		tcase("header hop-by-hop ones", "GET", "/headers", hdr("Connection", "X-Drop"), hdr("X-Drop", "secret"),
			hdr("Keep-Alive", "timeout=5"), hdr("TE", "trailers"), hdr("X-Kept", "yes")),
		tcase("header client X-Forwarded-For", "GET", "/ip", hdr("X-Forwarded-For", "203.0.113.9"),
			skipBecause("by design: the edge replaces a client's own X-Forwarded-For unless the client is a --trusted-proxy, so the handler sees the real client, not 203.0.113.9")),
		tcase("header client Forwarded", "GET", "/headers", hdr("Forwarded", "for=203.0.113.9"),
			skipBecause("by design: the edge replaces a client's own Forwarded unless the client is a --trusted-proxy")),
		tcase("header client X-Griddle-Pin", "GET", "/headers", hdr("X-Griddle-Pin", "httpbin=v1"),
			skipBecause("by design: X-Griddle-* request headers are the mesh's own; the edge reads them and no handler sees them")),
		tcase("header Upgrade nobody takes", "GET", "/get", hdr("Connection", "Upgrade"), hdr("Upgrade", "example/1")),
		tcase("header Accept image/png", "GET", "/image", hdr("Accept", "image/png")),
		tcase("header Accept image/webp", "GET", "/image", hdr("Accept", "image/webp")),
		tcase("header Accept nothing it has", "GET", "/image", hdr("Accept", "text/plain")),
		tcase("header bearer token", "GET", "/bearer", hdr("Authorization", "Bearer s3cr3t")),
		tcase("header bearer missing", "GET", "/bearer"),

		// Request bodies, fixed length and chunked.
		tcase("body 1 KiB text", "POST", "/post", hdr("Content-Type", textCT), body(text1k)),
		tcase("body 1 KiB binary", "POST", "/anything", hdr("Content-Type", octet), body(randomBytes(kib, 1))),
		tcase("body 1 MiB", "POST", "/anything", hdr("Content-Type", octet), body(randomBytes(mib, 2))),
		tcase("body 10 MiB", "PUT", "/anything", hdr("Content-Type", octet), body(randomBytes(10*mib, 3))),
		tcase("body 10 MiB to /upload", "POST", "/upload", hdr("Content-Type", octet), body(randomBytes(10*mib, 4))),
		tcase("body 1 MiB to /upload", "PUT", "/upload", hdr("Content-Type", octet), body(randomBytes(mib, 5))),
		tcase("chunked 1 KiB in 3 chunks", "POST", "/anything", hdr("Content-Type", textCT), chunked(text1k, 400)),
		tcase("chunked 1 MiB", "POST", "/anything", hdr("Content-Type", octet), chunked(randomBytes(mib, 6), 64*kib)),
		tcase("chunked 10 MiB to /upload", "POST", "/upload", hdr("Content-Type", octet), chunked(randomBytes(10*mib, 7), mib)),
		tcase("chunked 10 MiB echoed", "POST", "/anything", hdr("Content-Type", octet), chunked(randomBytes(10*mib, 8), 256*kib)),
		tcase("chunked empty", "POST", "/anything", chunked([]byte{}, 0)),
		tcase("chunked 1-byte chunks", "POST", "/anything", hdr("Content-Type", textCT), chunked(text1k[:100], 1)),
		tcase("chunked with trailers", "POST", "/anything", hdr("Content-Type", textCT), hdr("Trailer", "X-Checksum"),
			chunked([]byte("body before trailers"), 5, [2]string{"X-Checksum", "abc123"})),
		tcase("body form urlencoded", "POST", "/post", hdr("Content-Type", form), body([]byte("a=1&a=2&b=%20x&c=%E2%9C%93"))),
		tcase("body multipart with a file", "POST", "/post", hdr("Content-Type", mpType), body(mpBody)),
		tcase("body JSON", "POST", "/post", hdr("Content-Type", jsonCT), body([]byte(json1))),
		tcase("body invalid JSON", "POST", "/post", hdr("Content-Type", jsonCT), body([]byte(`{"open":`))),
		tcase("body gzip-encoded", "POST", "/anything", hdr("Content-Type", textCT), hdr("Content-Encoding", "gzip"), body(gzipped(text1k))),
		tcase("body with Expect 100-continue", "POST", "/anything", hdr("Content-Type", textCT), body(text1k), expect100()),
		tcase("body 1 MiB with Expect 100-continue", "PUT", "/upload", hdr("Content-Type", octet), body(randomBytes(mib, 9)), expect100()),
		tcase("body with Expect 100-continue refused unread", "POST", "/status/401", hdr("Content-Type", textCT), body(text1k), expect100()),
		tcase("chunked with trailers dumped", "POST", "/dump/request", hdr("Content-Type", textCT), hdr("Trailer", "X-Sum"),
			chunked([]byte("dumped in chunks"), 4, [2]string{"X-Sum", "42"})),
		tcase("body PATCH form", "PATCH", "/patch", hdr("Content-Type", form), body([]byte("k=v"))),

		// Answer bodies: fixed, generated, streamed.
		tcase("bytes 0", "GET", "/bytes/0"),
		tcase("bytes 1 KiB", "GET", "/bytes/1024?seed=1"),
		tcase("bytes 1 MiB", "GET", "/bytes/1048576?seed=2"),
		tcase("bytes 10 MiB", "GET", "/bytes/10485760?seed=3"),
		tcase("stream-bytes 1 KiB in 100-byte chunks", "GET", "/stream-bytes/1024?seed=1&chunk_size=100"),
		tcase("stream-bytes 1 MiB", "GET", "/stream-bytes/1048576?seed=2&chunk_size=65536"),
		tcase("stream-bytes 10 MiB", "GET", "/stream-bytes/10485760?seed=3&chunk_size=1048576", streamed()),
		tcase("range 1 KiB whole", "GET", "/range/1024"),
		tcase("range 1 MiB whole", "GET", "/range/1048576"),
		tcase("drip over 1s", "GET", "/drip?duration=1s&numbytes=5&delay=0", streamed()),
		tcase("drip after a delay with 201", "GET", "/drip?duration=800ms&numbytes=4&delay=300ms&code=201", streamed()),
		tcase("stream 5 lines", "GET", "/stream/5"),
		tcase("stream 100 lines", "GET", "/stream/100"),
		tcase("sse 5 events over 1s", "GET", "/sse?count=5&duration=1s", streamed(), varies("Server-Timing"),
			bodyVaries(func(b []byte) []byte { return sseTimestamp.ReplaceAll(b, []byte(`"timestamp":(clock)`)) })),
		tcase("jsonl 3 lines", "GET", "/jsonl?count=3"),
		tcase("delay 300ms", "GET", "/delay/0.3"),
		tcase("delay 0", "POST", "/delay/0", hdr("Content-Type", textCT), body([]byte("after no delay"))),

		// Redirects.
		tcase("redirect 1", "GET", "/redirect/1"),
		tcase("redirect 3", "GET", "/redirect/3"),
		tcase("redirect absolute 2", "GET", "/absolute-redirect/2"),
		tcase("redirect relative 2", "GET", "/relative-redirect/2"),
		tcase("redirect-to a path", "GET", "/redirect-to?url=/get"),
		tcase("redirect-to elsewhere 307", "GET", "/redirect-to?url=http://example.com/x&status_code=307"),
		tcase("redirect-to escaped 308", "POST", "/redirect-to?url=%2Fanything%3Fa%3D1&status_code=308", body([]byte("x"))),
		tcase("redirect links page", "GET", "/links/3/1"),
		tcase("redirect 0 is bad", "GET", "/redirect/0"),

		// Status codes.
		tcase("status 200", "GET", "/status/200"),
		tcase("status 201", "POST", "/status/201"),
		tcase("status 202", "GET", "/status/202"),
		tcase("status 204", "GET", "/status/204"),
		tcase("status 301", "GET", "/status/301"),
		tcase("status 302", "GET", "/status/302"),
		tcase("status 304", "GET", "/status/304"),
		tcase("status 307", "GET", "/status/307"),
		tcase("status 401", "GET", "/status/401"),
		tcase("status 404", "GET", "/status/404"),
		tcase("status 418", "GET", "/status/418"),
		tcase("status 429", "GET", "/status/429"),
		tcase("status 500", "GET", "/status/500"),
		tcase("status 502", "GET", "/status/502"),
		tcase("status 503", "GET", "/status/503"),
		tcase("status 504", "GET", "/status/504"),
		tcase("status 599", "GET", "/status/599"),
		tcase("status not a number", "GET", "/status/abc"),
		tcase("unstable never failing", "GET", "/unstable?failure_rate=0"),
		tcase("unstable always failing", "GET", "/unstable?failure_rate=1"),

		// Compression is left alone: bodies arrive as the handler encoded them.
		tcase("gzip asked for", "GET", "/gzip", hdr("Accept-Encoding", "gzip")),
		tcase("gzip not asked for", "GET", "/gzip"),
		tcase("gzip among several", "GET", "/gzip", hdr("Accept-Encoding", "gzip, deflate, br")),
		tcase("deflate", "GET", "/deflate", hdr("Accept-Encoding", "deflate")),
		tcase("brotli", "GET", "/brotli", hdr("Accept-Encoding", "br")),

		// Ranges.
		tcase("range first 100", "GET", "/range/1024", hdr("Range", "bytes=0-99")),
		tcase("range from 100", "GET", "/range/1024", hdr("Range", "bytes=100-")),
		tcase("range last 100", "GET", "/range/1024", hdr("Range", "bytes=-100")),
		tcase("range two parts", "GET", "/range/1024", hdr("Range", "bytes=0-1,10-20"), varies("Content-Type")),
		tcase("range unsatisfiable 416", "GET", "/range/1024", hdr("Range", "bytes=5000-6000")),
		tcase("range If-Range matching", "GET", "/range/1024", hdr("Range", "bytes=0-9"), hdr("If-Range", `"range1024"`)),
		tcase("range If-Range stale", "GET", "/range/1024", hdr("Range", "bytes=0-9"), hdr("If-Range", `"other"`)),
		tcase("range malformed", "GET", "/range/1024", hdr("Range", "bytes=abc")),
		tcase("range on an answer without ranges", "GET", "/bytes/100?seed=1", hdr("Range", "bytes=0-9")),

		// Conditional requests. /etag's Last-Modified is the handler's clock.
		tcase("etag If-None-Match matching 304", "GET", "/etag/abc", hdr("If-None-Match", `"abc"`), varies("Last-Modified")),
		tcase("etag If-None-Match other 200", "GET", "/etag/abc", hdr("If-None-Match", `"xyz"`), varies("Last-Modified")),
		tcase("etag If-None-Match star 304", "GET", "/etag/abc", hdr("If-None-Match", "*"), varies("Last-Modified")),
		tcase("etag If-Match matching 200", "GET", "/etag/abc", hdr("If-Match", `"abc"`), varies("Last-Modified")),
		tcase("etag If-Match other 412", "GET", "/etag/abc", hdr("If-Match", `"xyz"`), varies("Last-Modified")),
		tcase("cache If-Modified-Since 304", "GET", "/cache", hdr("If-Modified-Since", "Tue, 01 Dec 2026 00:00:00 GMT")),
		tcase("cache If-None-Match 304", "GET", "/cache", hdr("If-None-Match", `"x"`)),
		tcase("cache unconditional", "GET", "/cache", varies("Last-Modified", "Etag")),
		tcase("cache-control 60", "GET", "/cache/60"),

		// Trailers.
		tcase("trailers two", "GET", "/trailers?X-T1=a&X-T2=b"),
		tcase("trailers none", "GET", "/trailers"),
		tcase("trailers after a body", "POST", "/trailers?x-lower=v", hdr("Content-Type", textCT), body([]byte("in"))),
		tcase("trailers forbidden", "GET", "/trailers?Content-Type=x"),

		// Cookies.
		tcase("cookies set redirects", "GET", "/cookies/set?a=1"),                                               // one: httpbin sets them in map order
		tcase("cookies delete redirects", "GET", "/cookies/delete?a", valueVaries("Set-Cookie", expiresVaries)), // Expires: now
		tcase("cookies sent", "GET", "/cookies", hdr("Cookie", "a=1; b=2")),
		tcase("cookies two headers", "GET", "/cookies", hdr("Cookie", "a=1"), hdr("Cookie", "b=2")),
		tcase("cookies none", "GET", "/cookies"),

		// Authentication.
		tcase("basic-auth right", "GET", "/basic-auth/ann/pw", hdr("Authorization", "Basic YW5uOnB3")),
		tcase("basic-auth wrong", "GET", "/basic-auth/ann/pw", hdr("Authorization", "Basic YW5uOm5v")),
		tcase("basic-auth missing", "GET", "/basic-auth/ann/pw"),
		tcase("hidden-basic-auth wrong", "GET", "/hidden-basic-auth/ann/pw"),
		tcase("hidden-basic-auth right", "GET", "/hidden-basic-auth/ann/pw", hdr("Authorization", "Basic YW5uOnB3")),
		tcase("digest-auth challenge", "GET", "/digest-auth/auth/ann/pw", varies("Www-Authenticate")),

		// Answer headers the client asks for.
		tcase("response-headers repeated keys", "GET", "/response-headers?X-A=1&X-A=2&X-B=3"),
		tcase("response-headers content type", "GET", "/response-headers?Content-Type=text/plain;+charset=utf-8"),
		tcase("response-headers unicode value", "GET", "/response-headers?X-U=%C3%A9t%C3%A9"),
		tcase("response-headers 100 of them", "GET", "/response-headers?"+func() string {
			var q []string
			for i := range 100 {
				q = append(q, fmt.Sprintf("X-R-%03d=%d", i, i))
			}
			return strings.Join(q, "&")
		}()),
		tcase("response-headers two cookies", "GET", "/response-headers?Set-Cookie=a%3D1&Set-Cookie=b%3D2"),

		// Content of all kinds.
		tcase("deny", "GET", "/deny"),
		tcase("html", "GET", "/html"),
		tcase("json", "GET", "/json"),
		tcase("xml", "GET", "/xml"),
		tcase("image png", "GET", "/image/png"),
		tcase("image jpeg", "GET", "/image/jpeg"),
		tcase("image svg", "GET", "/image/svg"),
		tcase("image webp", "GET", "/image/webp"),
		tcase("encoding utf8", "GET", "/encoding/utf8"),
		tcase("robots.txt", "GET", "/robots.txt"),
		tcase("base64 decode", "GET", "/base64/SGVsbG8sIHdvcmxk"),
		tcase("base64 encode", "GET", "/base64/encode/hello%20world"),
		tcase("uuid", "GET", "/uuid", bodyVaries(func(b []byte) []byte { return uuidPattern.ReplaceAll(b, []byte("(random uuid)")) })),
		tcase("ip", "GET", "/ip"),
		tcase("get", "GET", "/get?a=1&b=2"),
		tcase("hostname", "GET", "/hostname"),
		tcase("index page", "GET", "/"),
		tcase("forms page", "GET", "/forms/post"),
		tcase("links page", "GET", "/links/5/2"),
		tcase("dump request", "POST", "/dump/request?x=1", hdr("Content-Type", textCT), hdr("X-Dumped", "yes"), body([]byte("dumped body"))),
		tcase("env", "GET", "/env"),

		// Protocol versions.
		tcase("HTTP/1.0 GET", "GET", "/get", httpProto("HTTP/1.0")),
		tcase("HTTP/1.0 streamed answer", "GET", "/stream/3", httpProto("HTTP/1.0")),
		tcase("HTTP/1.0 POST", "POST", "/post", httpProto("HTTP/1.0"), hdr("Content-Type", textCT), body([]byte("old"))),
	}
	return cases
}

// answer is one side's answer with what may differ taken out.
type answer struct {
	interim []int
	status  int
	proto   string
	framing string // "length N", "chunked" or "until close"
	header  http.Header
	body    []byte
	trailer http.Header
}

// hopByHop are the header names a proxy need not forward (RFC 9110,
// 7.6.1), besides those a Connection header lists. Transfer-Encoding is
// not among them here: httpbin echoes r.TransferEncoding, and a handler
// must see a body of unknown length as net/http shows one, chunked and
// without a Content-Length.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Upgrade"}

// forwarding are the headers the edge adds to each request by design.
var forwarding = []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"}

// normalise takes out of r what may differ between the two sides (see
// TestTransparency), checking on the way what each side must hold alone:
// a Content-Length that is the body's.
func normalise(t *testing.T, side string, c transparencyCase, addr string, r *rawResponse) answer {
	t.Helper()
	a := answer{interim: r.interim, status: r.status, proto: r.proto, header: http.Header{}, trailer: http.Header{}}
	switch {
	case r.chunked:
		a.framing = "chunked"
	case r.contentLength >= 0:
		a.framing = fmt.Sprintf("length %d", r.contentLength)
		if c.req.method != "HEAD" && r.contentLength != int64(len(r.body)) {
			t.Errorf("%s: Content-Length %d but %d bytes of body", side, r.contentLength, len(r.body))
		}
	default:
		a.framing = "until close"
	}
	copyHeader := func(dst, src http.Header) {
		for k, vs := range src {
			if k == "Date" || strings.HasPrefix(k, "X-Griddle-") || k == "Connection" || k == "Keep-Alive" || k == "Proxy-Connection" {
				continue
			}
			for _, v := range vs {
				dst[k] = append(dst[k], strings.ReplaceAll(v, addr, "HOST"))
			}
		}
		for _, k := range c.varies {
			if _, ok := dst[k]; ok {
				dst[k] = []string{"(varies)"}
			}
		}
		for k, f := range c.valueVaries {
			for i, v := range dst[k] {
				dst[k][i] = f(v)
			}
		}
	}
	copyHeader(a.header, r.header)
	copyHeader(a.trailer, r.trailer)

	b := r.body
	switch r.header.Get("Content-Encoding") {
	case "gzip":
		if zr, err := gzip.NewReader(bytes.NewReader(b)); err != nil {
			t.Errorf("%s: Content-Encoding gzip but the body is not: %v", side, err)
		} else if d, err := io.ReadAll(zr); err != nil {
			t.Errorf("%s: Content-Encoding gzip but the body is not: %v", side, err)
		} else {
			b = d
		}
	case "deflate": // zlib's format (RFC 9110, 8.4.1.2), as httpbin writes it
		if zr, err := zlib.NewReader(bytes.NewReader(b)); err != nil {
			t.Errorf("%s: Content-Encoding deflate but the body is not: %v", side, err)
		} else if d, err := io.ReadAll(zr); err != nil {
			t.Errorf("%s: Content-Encoding deflate but the body is not: %v", side, err)
		} else {
			b = d
		}
	}
	b = bytes.ReplaceAll(b, []byte(addr), []byte("HOST"))
	if _, params, err := mime.ParseMediaType(r.header.Get("Content-Type")); err == nil && params["boundary"] != "" && slices.Contains(c.varies, "Content-Type") {
		b = bytes.ReplaceAll(b, []byte(params["boundary"]), []byte("(random boundary)"))
	}
	if c.bodyVaries != nil {
		b = c.bodyVaries(b)
	}
	b, echo := withoutEchoedHeaders(b)
	if echo && a.header["Content-Length"] != nil {
		a.header["Content-Length"] = []string{"(the echo's length)"}
		if strings.HasPrefix(a.framing, "length") {
			a.framing = "length (the echo's)"
		}
	}
	a.body = b
	return a
}

// withoutEchoedHeaders is b with the forwarding and hop-by-hop request
// headers taken out of what the handler echoed: from the "headers" object
// of a JSON answer (or of each line of a JSON-lines one), which is then
// encoded again the way httpbin does, on both sides alike; and from the
// header lines of a dumped request.
func withoutEchoedHeaders(b []byte) (out []byte, echo bool) {
	drop := func(h map[string]any) {
		names := append(slices.Clone(forwarding), hopByHop...)
		if conn, ok := h["Connection"].([]any); ok {
			for _, v := range conn {
				if s, ok := v.(string); ok {
					for n := range strings.SplitSeq(s, ",") {
						names = append(names, http.CanonicalHeaderKey(strings.TrimSpace(n)))
					}
				}
			}
		}
		for _, n := range names {
			delete(h, n)
		}
	}
	rewrite := func(doc []byte, indent bool) ([]byte, bool) {
		var v map[string]any
		d := json.NewDecoder(bytes.NewReader(doc))
		d.UseNumber()
		if d.Decode(&v) != nil {
			return doc, false
		}
		h, ok := v["headers"].(map[string]any)
		if !ok {
			return doc, false
		}
		drop(h)
		var out bytes.Buffer
		e := json.NewEncoder(&out)
		e.SetEscapeHTML(false)
		if indent {
			e.SetIndent("", "  ")
		}
		e.Encode(v)
		return bytes.TrimSuffix(out.Bytes(), []byte("\n")), true
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		if out, ok := rewrite(b, true); ok {
			return append(out, '\n'), true
		}
		// JSON lines: one document a line.
		lines := bytes.Split(b, []byte("\n"))
		changed := false
		for i, l := range lines {
			if out, ok := rewrite(l, false); ok {
				lines[i], changed = out, true
			}
		}
		if changed {
			return bytes.Join(lines, []byte("\n")), true
		}
		return b, false
	}
	// A dumped request: "Name: value\r\n" lines up to the blank line.
	head, rest, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok || !bytes.Contains(head, []byte(" HTTP/1.")) {
		return b, false
	}
	var kept [][]byte
	for i, l := range bytes.Split(head, []byte("\r\n")) {
		name, _, _ := bytes.Cut(l, []byte(":"))
		n := http.CanonicalHeaderKey(string(name))
		if i > 0 && (slices.Contains(forwarding, n) || slices.Contains(hopByHop, n)) {
			continue
		}
		kept = append(kept, l)
	}
	return append(append(bytes.Join(kept, []byte("\r\n")), "\r\n\r\n"...), rest...), true
}

// compareAnswers reports every way the mesh's answer differs from the
// direct one, and for streamed cases whether its first byte came well
// before its last.
func compareAnswers(t *testing.T, c transparencyCase, directAddr string, direct *rawResponse, meshAddr string, through *rawResponse) {
	t.Helper()
	d := normalise(t, "direct", c, directAddr, direct)
	m := normalise(t, "through the mesh", c, meshAddr, through)
	if !slices.Equal(m.interim, d.interim) {
		t.Errorf("1xx answers: got %v, want %v", m.interim, d.interim)
	}
	if m.status != d.status {
		t.Errorf("status: got %d, want %d", m.status, d.status)
	}
	if m.proto != d.proto {
		t.Errorf("protocol: got %s, want %s", m.proto, d.proto)
	}
	if d.framing == "chunked" || d.framing == "until close" {
		// Transfer-Encoding is hop-by-hop (RFC 9112, 6.1): a whole answer
		// of unannounced length may reach the client with its length.
		// Whether it was held back is what the streamed cases measure.
		if strings.HasPrefix(m.framing, "length") {
			m.framing = d.framing
			delete(m.header, "Content-Length")
		}
	}
	if m.framing != d.framing {
		t.Errorf("framing: got %s, want %s", m.framing, d.framing)
	}
	diffHeaders(t, "header", m.header, d.header)
	diffHeaders(t, "trailer", m.trailer, d.trailer)
	if !bytes.Equal(m.body, d.body) {
		i := 0
		for i < len(m.body) && i < len(d.body) && m.body[i] == d.body[i] {
			i++
		}
		t.Errorf("body: got %d bytes, want %d; first difference at byte %d: got %q, want %q",
			len(m.body), len(d.body), i, excerpt(m.body, i), excerpt(d.body, i))
	}
	if c.stream {
		if direct.firstByte*2 > direct.lastByte {
			t.Fatalf("the case does not stream: direct, the first byte came at %v and the last at %v", direct.firstByte, direct.lastByte)
		}
		t.Logf("first and last byte: through the mesh %v and %v, direct %v and %v", through.firstByte, through.lastByte, direct.firstByte, direct.lastByte)
		if through.firstByte*2 > through.lastByte {
			t.Errorf("through the mesh the first byte came at %v and the last at %v: not streamed (direct: %v and %v)",
				through.firstByte, through.lastByte, direct.firstByte, direct.lastByte)
		}
	}
}

func diffHeaders(t *testing.T, what string, got, want http.Header) {
	t.Helper()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range got {
			if !yield(k) {
				return
			}
		}
		for k := range want {
			if _, ok := got[k]; !ok && !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		if !slices.Equal(got[k], want[k]) {
			t.Errorf("%s %s: got %q, want %q", what, k, got[k], want[k])
		}
	}
}

// excerpt is up to 60 bytes of b around i.
func excerpt(b []byte, i int) string {
	lo, hi := max(0, i-20), min(len(b), i+40)
	if lo >= hi {
		return ""
	}
	return string(b[lo:hi])
}

// transparencyWebSocket: httpbin's WebSocket echo alone and through the
// mesh: the same handshake answer and the same echoes of the same
// messages. Sec-WebSocket-Accept answers each side's own random key (the
// client checks it); the rest of the 101's head is compared.
func transparencyWebSocket(t *testing.T, h *httpbinMesh) {
	type msg struct {
		kind int
		data []byte
	}
	for _, c := range []struct {
		name  string
		query string
		msgs  []msg
	}{
		{"websocket text", "", []msg{{websocket.TextMessage, []byte("hello")}, {websocket.TextMessage, []byte("héllo ✓")}}},
		{"websocket binary", "", []msg{{websocket.BinaryMessage, randomBytes(1000, 11)}, {websocket.BinaryMessage, []byte{0, 255, 0}}}},
		{"websocket empty", "", []msg{{websocket.TextMessage, []byte{}}, {websocket.BinaryMessage, []byte{}}}},
		{"websocket 1 MiB", "", []msg{{websocket.BinaryMessage, randomBytes(1<<20, 12)}}},
		{"websocket over its message limit", "?max_fragment_size=10&max_message_size=100", []msg{{websocket.TextMessage, bytes.Repeat([]byte("y"), 500)}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := func(addr string) (status int, head http.Header, echoes []msg, end string) {
				d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
				conn, resp, err := d.Dial("ws://"+addr+"/websocket/echo"+c.query, nil)
				if resp != nil {
					status, head = resp.StatusCode, resp.Header.Clone()
				}
				if err != nil {
					return status, head, nil, "handshake: " + err.Error()
				}
				defer conn.Close()
				conn.SetReadDeadline(time.Now().Add(30 * time.Second))
				conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
				for _, m := range c.msgs {
					if err := conn.WriteMessage(m.kind, m.data); err != nil {
						return status, head, echoes, "write: " + err.Error()
					}
					kind, data, err := conn.ReadMessage()
					if err != nil {
						var ce *websocket.CloseError
						if errors.As(err, &ce) {
							return status, head, echoes, fmt.Sprintf("close frame %d %q", ce.Code, ce.Text)
						}
						return status, head, echoes, "read: " + err.Error()
					}
					echoes = append(echoes, msg{kind, data})
				}
				conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "done"))
				_, _, err = conn.ReadMessage()
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					return status, head, echoes, fmt.Sprintf("close frame %d %q", ce.Code, ce.Text)
				}
				return status, head, echoes, fmt.Sprint("after the close: ", err)
			}
			ds, dh, de, dend := run(h.direct)
			ms, mh, me, mend := run(h.through)
			if ms != ds {
				t.Errorf("handshake status: got %d, want %d", ms, ds)
			}
			for _, hd := range []http.Header{dh, mh} {
				if hd != nil {
					for k := range hd {
						if k == "Date" || k == "Sec-Websocket-Accept" || strings.HasPrefix(k, "X-Griddle-") {
							delete(hd, k)
						}
					}
				}
			}
			diffHeaders(t, "handshake header", mh, dh)
			if len(me) != len(de) {
				t.Errorf("got %d echoes, want %d", len(me), len(de))
			}
			for i := range min(len(me), len(de)) {
				if me[i].kind != de[i].kind || !bytes.Equal(me[i].data, de[i].data) {
					t.Errorf("echo %d: got type %d and %d bytes, want type %d and %d bytes (equal: %v)",
						i, me[i].kind, len(me[i].data), de[i].kind, len(de[i].data), bytes.Equal(me[i].data, de[i].data))
				}
			}
			if mend != dend {
				t.Errorf("end: got %s, want %s", mend, dend)
			}
		})
	}
}
