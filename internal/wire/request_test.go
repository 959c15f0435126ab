package wire_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// FuzzHTTPRequest checks that HTTPRequest builds the request a server
// builds from the request line <method> <path>?<query>: the URL
// url.ParseRequestURI gives, the method http.NewRequest accepts, the host
// given, whether it takes its fast path or not.
func FuzzHTTPRequest(f *testing.F) {
	for _, seed := range []struct{ method, path, query string }{
		{"GET", "/hello/greet", "name=x"},
		{"POST", "/a/b", ""},
		{"GET", "", ""},
		{"GET", "/a%2Fb", "x=1&x=2&y="},
		{"GET", "/a b", "q=a b"},
		{"GET", "/a#b", ""},
		{"GET", "/a", "b#c"},
		{"GET", "/a?b", ""},
		{"GET", "/a\x7f", ""},
		{"GET", "/a", "b\x00"},
		{"GET", "*", ""},
		{"GET", "x", ""},
		{"G ET", "/", ""},
		{"", "/", ""},
		{"GET", "/%zz", ""},
		{"GET", "//evil/x", ""},
		{"GET", "/é", "é"},
	} {
		f.Add(seed.method, seed.path, seed.query, "hello")
	}
	f.Add("GET", "/x", "", "127.0.0.1:8080")
	f.Fuzz(func(t *testing.T, method, path, query, host string) {
		req := &wire.Request{Method: method, Path: path, RawQuery: query}
		got, gotErr := req.HTTPRequest(context.Background(), host, nil)
		wantURL, urlErr := url.ParseRequestURI(req.RequestURI())
		_, methodErr := http.NewRequest(method, "/", nil)
		if (gotErr != nil) != (urlErr != nil || methodErr != nil) {
			t.Fatalf("%q %q ? %q: got error %v, want %v / %v", method, path, query, gotErr, urlErr, methodErr)
		}
		if gotErr != nil {
			return
		}
		wantMethod := method
		if method == "" {
			wantMethod = http.MethodGet // as http.NewRequest takes it
		}
		if *got.URL != *wantURL || got.Host != host || got.Method != wantMethod || got.RequestURI != req.RequestURI() {
			t.Fatalf("%q %q ? %q:\ngot  %s %#v host %q uri %q\nwant %s %#v host %q uri %q",
				method, path, query, got.Method, *got.URL, got.Host, got.RequestURI, method, *wantURL, host, req.RequestURI())
		}
		if got.Body != http.NoBody || got.ContentLength != 0 {
			t.Fatalf("got body %v, length %d; want NoBody, 0", got.Body, got.ContentLength)
		}
	})
}

// A bare '?' survives the hop, and the answer's length is its body's, or
// the handler's own for an answer without one (HEAD).
func TestForceQueryAndContentLength(t *testing.T) {
	in := httptest.NewRequest("GET", "/p?", nil)
	env := wire.NewRequest(in, "svc", nil)
	r, err := env.HTTPRequest(context.Background(), "svc", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.RequestURI != "/p?" || !r.URL.ForceQuery {
		t.Errorf("got %q (ForceQuery %v), want /p? kept", r.RequestURI, r.URL.ForceQuery)
	}
	big := bytes.Repeat([]byte("x"), 5000)
	for _, c := range []struct {
		name   string
		method string
		reply  *wire.Reply
		wantCL string
	}{
		{"body", "GET", &wire.Reply{Status: 200, Body: []byte("12345")}, "5"}, // from net/http, which held it whole
		{"body beyond the server's buffer", "GET", &wire.Reply{Status: 200, Body: big}, "5000"},
		{"head", "HEAD", &wire.Reply{Status: 200, Headers: []*wire.Header{{Name: "Content-Length", Values: []string{"1048576"}}}}, "1048576"},
		{"empty", "GET", &wire.Reply{Status: 204}, ""},
	} {
		// Through a real net/http server, as the edge writes answers.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if err := c.reply.WriteHTTP(w); err != nil {
				t.Error(err)
			}
		}))
		req, _ := http.NewRequest(c.method, srv.URL, nil)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if len(body) != len(c.reply.Body) || len(resp.TransferEncoding) > 0 {
			t.Errorf("%s: got %d bytes, transfer encoding %v; want %d, none", c.name, len(body), resp.TransferEncoding, len(c.reply.Body))
		}
		if got := resp.Header.Get("Content-Length"); got != c.wantCL {
			t.Errorf("%s: Content-Length %q, want %q", c.name, got, c.wantCL)
		}
	}
}
