package wire

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HTTPRequest builds the *http.Request a handler serves for the envelope x,
// as a net/http server would have parsed it: method, URL (path and query,
// parsed as a request line is), Host, headers (without hop-by-hop fields), Host, RemoteAddr, and body.
// Host defaults to host when the envelope names none. body is the request
// body (nil: the envelope's own). The request shares x's header values.
//
// It fails for an invalid method or request target, as a server refuses
// them; it parses nothing in the common case.
func (x *Request) HTTPRequest(ctx context.Context, host string, body io.Reader) (*http.Request, error) {
	return x.HTTPRequestIn(ctx, host, body, nil)
}

// HTTPRequestIn is HTTPRequest with the request's URL made in u (nil: a new
// one) where it needs no parsing; u must live as long as the request.
func (x *Request) HTTPRequestIn(ctx context.Context, host string, body io.Reader, u *url.URL) (*http.Request, error) {
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
	// The URL as a server parses the request line (url.ParseRequestURI),
	// without parsing where there is nothing to decode.
	uri := x.RequestURI()
	if plainTarget(path, query) && !x.GetForceQuery() {
		if u == nil {
			u = new(url.URL)
		}
		*u = url.URL{Path: path, RawQuery: query}
		if u.EscapedPath() != path { // as url.URL.setPath keeps it
			u.RawPath = path
		}
	} else {
		var err error
		if u, err = url.ParseRequestURI(uri); err != nil {
			return nil, err
		}
	}
	r, err := http.NewRequestWithContext(ctx, x.GetMethod(), "", nil)
	if err != nil {
		return nil, err
	}
	r.URL, r.Host = u, host
	r.RequestURI = uri
	r.Body, r.ContentLength = http.NoBody, 0
	if body != nil {
		r.Body, r.ContentLength = io.NopCloser(body), n
		if rc, ok := body.(io.ReadCloser); ok {
			r.Body = rc
		}
	}
	DecodeHeader(r.Header, x.GetHeaders())
	if body != nil && x.GetBodyFollows() {
		// A body that streams has the length the client gave, if any.
		if cl, err := strconv.ParseInt(x.contentLength(), 10, 64); err == nil && cl >= 0 {
			r.ContentLength = cl
		}
	}
	if x.GetUnsized() {
		r.ContentLength = -1 // whole here, but the client gave no length
	}
	switch {
	case r.ContentLength > 0 || r.ContentLength == 0 && x.contentLength() == "0": // as a server keeps it
		r.Header["Content-Length"] = []string{strconv.FormatInt(r.ContentLength, 10)}
	case r.ContentLength < 0 && x.GetProtoMajor() < 2:
		r.TransferEncoding = []string{"chunked"}
	}
	if x.GetProtoMajor() >= 2 {
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/"+strconv.Itoa(int(x.GetProtoMajor()))+".0", int(x.GetProtoMajor()), 0
	}
	if v := r.Header["Grpc-Timeout"]; len(v) == 1 {
		// gRPC servers time their calls from this header: it says what
		// is left of the mesh's deadline, not what the client first gave.
		if d, ok := x.Deadline(time.Now()); ok && !x.GetLongLived() {
			r.Header["Grpc-Timeout"] = []string{FormatGRPCTimeout(time.Until(d))}
		}
	}
	if x.GetUpgrade() {
		// The fields of an upgrade, which are hop-by-hop and left out
		// otherwise, as the client sent them.
		for _, h := range x.GetHeaders() {
			if name := http.CanonicalHeaderKey(h.GetName()); name == "Upgrade" || name == "Connection" {
				r.Header[name] = h.GetValues()
			}
		}
	}
	if len(x.GetTrailers()) > 0 { // they came with the whole body
		r.Trailer = make(http.Header, len(x.GetTrailers()))
		DecodeHeader(r.Trailer, x.GetTrailers())
	} else if tr := r.Header["Trailer"]; len(tr) > 0 && body != nil {
		r.Trailer = make(http.Header)
		for _, v := range tr {
			for f := range strings.SplitSeq(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					r.Trailer[http.CanonicalHeaderKey(f)] = nil
				}
			}
		}
	}
	r.RemoteAddr = x.GetRemoteAddr()
	return r, nil
}

// contentLength is the Content-Length the envelope's sender put among its
// headers for a body that follows or is empty ("" for none).
func (x *Request) contentLength() string {
	for _, h := range x.GetHeaders() {
		if h.GetName() == "Content-Length" && len(h.GetValues()) == 1 {
			return h.GetValues()[0]
		}
	}
	return ""
}

// Deadline is the envelope's deadline for one received at now (see
// ReceivedDeadline); ok is false when it has none.
func (x *Request) Deadline(now time.Time) (d time.Time, ok bool) {
	return ReceivedDeadline(x.GetDeadlineUnixNano(), x.GetTimeoutNanos(), now)
}

// clockTolerance is how far a sender's clock time of a deadline may be
// before the receiver's reckoning of it (now plus the budget) and still be
// taken as exact: the two clocks agree, and the gap is the time in transit.
const clockTolerance = 100 * time.Millisecond

// ReceivedDeadline is the deadline of a request received at now with the
// sender's clock time abs (Unix nanoseconds, 0: none) and budget (what
// remained when it was sent, nanoseconds, 0: none). The budget decides, so
// that a sender whose clock is off cannot expire or stretch the request;
// where the clock time is slightly earlier than now plus the budget, the
// clocks agree and it is the exact deadline, in transit time.
func ReceivedDeadline(abs, budget int64, now time.Time) (time.Time, bool) {
	if budget <= 0 {
		return time.Unix(0, abs), abs > 0
	}
	d := now.Add(time.Duration(budget))
	if a := time.Unix(0, abs); abs > 0 && !a.After(d) && d.Sub(a) < clockTolerance {
		return a, true
	}
	return d, true
}

// SetDeadline sets both forms of the deadline of x, as sent now.
func (x *Request) SetDeadline(d, now time.Time) {
	x.DeadlineUnixNano = d.UnixNano()
	x.TimeoutNanos = max(int64(d.Sub(now)), 1)
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

// plainTarget reports whether url.ParseRequestURI would take the path and
// query of <path>?<query> over as they are: path starts with / and neither
// holds a control byte, a space, a byte beyond ASCII, a '#' or, in the
// path, a '?' or a '%' (an escape, which it decodes).
func plainTarget(path, query string) bool {
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?%") {
		return false
	}
	for _, p := range [...]string{path, query} {
		for i := range len(p) {
			if c := p[i]; c <= 0x20 || c >= 0x7f || c == '#' {
				return false
			}
		}
	}
	return true
}
