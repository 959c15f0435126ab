package wire

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HTTPRequest builds the *http.Request a handler serves for the envelope x,
// as a net/http server would have parsed it: method, URL (path and query,
// host), headers (without hop-by-hop fields), Host, RemoteAddr, and body.
// Host defaults to host when the envelope names none. body is the request
// body (nil: the envelope's own). The request shares x's header values.
//
// It fails for an invalid method, path or query, as http.NewRequest of
// that target does; it parses nothing in the common case.
func (x *Request) HTTPRequest(ctx context.Context, host string, body io.Reader) (*http.Request, error) {
	if x.GetHost() != "" {
		host = x.GetHost()
	}
	path, query := x.GetPath(), x.GetRawQuery()
	if path == "" {
		path = "/"
	}
	n := int64(len(x.GetBody()))
	if body == nil && n > 0 {
		body = &bodyReader{b: x.GetBody()}
	} else if body != nil {
		n = -1
	}
	var r *http.Request
	var err error
	if plainHost(host) && plainTarget(path, query) {
		// An empty URL, filled in below, is what NewRequestWithContext
		// would parse out of http://<host><path>?<query> for such a target.
		r, err = http.NewRequestWithContext(ctx, x.GetMethod(), "", nil)
		if err != nil {
			return nil, err
		}
		r.URL.Scheme, r.URL.Host, r.URL.Path, r.URL.RawQuery = "http", host, path, query
		if r.URL.EscapedPath() != path { // as url.URL.setPath keeps it
			r.URL.RawPath = path
		}
		r.Host = host
	} else {
		r, err = http.NewRequestWithContext(ctx, x.GetMethod(), "http://"+host+x.RequestURI(), nil)
		if err != nil {
			return nil, err
		}
	}
	// As a server sees it: the target as on the request line, no URL
	// scheme or host.
	r.RequestURI = x.RequestURI()
	r.URL.Scheme, r.URL.Host = "", ""
	r.Body, r.ContentLength = http.NoBody, 0
	if body != nil {
		r.Body, r.ContentLength = io.NopCloser(body), n
		if rc, ok := body.(io.ReadCloser); ok {
			r.Body = rc
		}
	}
	DecodeHeader(r.Header, x.GetHeaders())
	if n > 0 { // as a server keeps it
		r.Header["Content-Length"] = []string{strconv.FormatInt(n, 10)}
	}
	r.RemoteAddr = x.GetRemoteAddr()
	return r, nil
}

// Deadline is the envelope's deadline; ok is false when it has none.
func (x *Request) Deadline() (d time.Time, ok bool) {
	if n := x.GetDeadlineUnixNano(); n > 0 {
		return time.Unix(0, n), true
	}
	return time.Time{}, false
}

// bodyReader reads a body held in memory; it is an io.ReadCloser so that
// HTTPRequest needs no second wrapper.
type bodyReader struct {
	b []byte
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func (r *bodyReader) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(r.b)
	r.b = r.b[n:]
	return int64(n), err
}

func (r *bodyReader) Close() error { return nil }

// plainHost reports whether http.NewRequest takes host over unchanged as
// the host of http://<host>/: a name of letters, digits, '-' and '.' (a
// port or anything else takes the slow path).
func plainHost(host string) bool {
	if host == "" {
		return false
	}
	for i := range len(host) {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// plainTarget reports whether url.Parse would take the path and query of
// http://host<path>?<query> over as they are: path starts with / and
// neither holds a control byte, a '#' (a fragment) or, in the path, a '?'
// or a '%' (an escape, which Parse decodes).
func plainTarget(path, query string) bool {
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?%") {
		return false
	}
	for _, p := range [...]string{path, query} {
		for i := range len(p) {
			if c := p[i]; c < 0x20 || c == 0x7f || c == '#' {
				return false
			}
		}
	}
	return true
}
