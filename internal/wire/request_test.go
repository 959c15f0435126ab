package wire_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// FuzzHTTPRequest checks that HTTPRequest builds the request that
// http.NewRequestWithContext builds from http://<host><path>?<query>, as a
// server sees it (no scheme or host in the URL), whether it takes its fast
// path or not.
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
	f.Add("GET", "/x", "", "Hello")
	f.Add("GET", "/x", "", "hello:")
	f.Add("GET", "/x", "", "a@b")
	f.Fuzz(func(t *testing.T, method, path, query, service string) {
		if service == "" {
			return
		}
		req := &wire.Request{Method: method, Path: path, RawQuery: query}
		got, gotErr := req.HTTPRequest(context.Background(), service, nil)
		want, wantErr := http.NewRequestWithContext(context.Background(), method, "http://"+service+req.RequestURI(), nil)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("%q %q ? %q on %q: got error %v, want %v", method, path, query, service, gotErr, wantErr)
		}
		if gotErr != nil {
			return
		}
		if got.RequestURI != req.RequestURI() {
			t.Fatalf("RequestURI: got %q, want %q", got.RequestURI, req.RequestURI())
		}
		want.URL.Scheme, want.URL.Host = "", ""
		gotURL, wantURL := *got.URL, *want.URL
		gotURL.User, wantURL.User = nil, nil // compared by their text below
		if gotURL != wantURL || got.URL.User.String() != want.URL.User.String() || got.Host != want.Host || got.Method != want.Method {
			t.Fatalf("%q %q ? %q on %q:\ngot  %s %#v host %q\nwant %s %#v host %q",
				method, path, query, service, got.Method, *got.URL, got.Host, want.Method, *want.URL, want.Host)
		}
		if got.Body != http.NoBody || got.ContentLength != 0 {
			t.Fatalf("got body %v, length %d; want NoBody, 0", got.Body, got.ContentLength)
		}
	})
}
