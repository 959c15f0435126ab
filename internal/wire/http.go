package wire

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// hopHeaders are meaningful only for a single connection and never cross a
// hop (RFC 9110, section 7.6.1), and the proxy authentication fields meant
// for the edge itself. Content-Length is derived from the body. Trailer,
// which announces trailers, travels with them. TE is put back where it
// asks for trailers only ("TE: trailers", which gRPC requires).
var hopHeaders = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Content-Length":      true,
}

// hopByHop reports whether the canonical header name must not be forwarded,
// either because it is always hop-by-hop or because the Connection header
// names it.
func hopByHop(name string, connection []string) bool {
	if hopHeaders[name] {
		return true
	}
	for _, v := range connection {
		for f := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == name {
				return true
			}
		}
	}
	return false
}

// teTrailers reports a TE field that asks for trailers and nothing else:
// it is kept across hops, as HTTP/2 allows and gRPC requires.
func teTrailers(name string, values []string) bool {
	return name == "Te" && len(values) == 1 && strings.EqualFold(strings.TrimSpace(values[0]), "trailers")
}

// headerRoom is the spare capacity of EncodeHeader's slice: room for the
// forwarding headers an edge adds (X-Forwarded-For, -Proto, -Host and
// Forwarded) without growing it.
const headerRoom = 4

// EncodeHeader converts h to envelope headers, leaving out hop-by-hop fields.
// Values are kept in order; names keep their canonical form. The envelope
// headers share h's value slices, so h must not be modified while they are
// in use.
func EncodeHeader(h http.Header) []*Header { return encodeHeaderIn(h, nil) }

// encodeHeaderIn is EncodeHeader with the headers in room (nil: none) when
// they fit.
func encodeHeaderIn(h http.Header, room *HeaderRoom) []*Header {
	conn := h["Connection"]
	// One allocation for all the headers and one for the pointers to them,
	// rather than one per header; none where they fit in room.
	var hs []Header
	var out []*Header
	if room != nil && len(h) <= roomHeaders {
		hs, out = room.structs[:len(h)], room.ptrs[:0]
	} else {
		hs = make([]Header, len(h))
		out = make([]*Header, 0, len(h)+headerRoom)
	}
	for name, values := range h {
		if hopByHop(name, conn) && !teTrailers(name, values) {
			continue
		}
		x := &hs[len(out)]
		x.Name, x.Values = name, values
		if !validUTF8(values) {
			x.Values, x.RawValues = nil, rawValues(values)
		}
		out = append(out, x)
	}
	return out
}

// EncodeTrailers converts trailers to envelope headers, every one kept.
func EncodeTrailers(h http.Header) []*Header {
	out := make([]*Header, 0, len(h))
	for name, values := range h {
		x := &Header{Name: name, Values: values}
		if !validUTF8(values) {
			x.Values, x.RawValues = nil, rawValues(values)
		}
		out = append(out, x)
	}
	return out
}

// Strings is h's values, wherever they are held (Values, or RawValues
// for values that are not all UTF-8).
func (h *Header) Strings() []string {
	if h == nil || len(h.RawValues) == 0 {
		return h.GetValues()
	}
	out := make([]string, len(h.RawValues))
	for i, v := range h.RawValues {
		out[i] = string(v)
	}
	return out
}

// validUTF8 reports whether every value is UTF-8, as a proto3 string
// must be.
func validUTF8(values []string) bool {
	for _, v := range values {
		if !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

func rawValues(values []string) [][]byte {
	out := make([][]byte, len(values))
	for i, v := range values {
		out[i] = []byte(v)
	}
	return out
}

// HeaderValue is the first value of the header name (canonical) among
// hs, "" if none.
func HeaderValue(hs []*Header, name string) string {
	for _, h := range hs {
		if http.CanonicalHeaderKey(h.GetName()) == name && len(h.GetValues()) > 0 {
			return h.GetValues()[0]
		}
	}
	return ""
}

// LongLived reports whether an answer of this Content-Type streams for as
// long as it lasts (server-sent events): the request's deadline gives way
// to an idle timeout once its head is out.
func LongLived(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// DecodeHeader adds the envelope headers hs to dst, leaving out hop-by-hop
// fields. dst must not be nil. A name new to dst takes the envelope's value
// slice (capped at its length, so that appending to it in dst copies), so
// the values in hs must not be modified afterwards.
func DecodeHeader(dst http.Header, hs []*Header) {
	var conn []string
	for _, h := range hs {
		if h.GetName() == "Connection" {
			conn = h.GetValues()
		}
	}
	for _, h := range hs {
		name := http.CanonicalHeaderKey(h.GetName())
		values := h.Strings()
		if name == "" || hopByHop(name, conn) && !teTrailers(name, values) {
			continue
		}
		if prev, ok := dst[name]; ok {
			dst[name] = append(prev, values...)
		} else {
			dst[name] = slices.Clip(values)
		}
	}
}

// NewRequest builds the envelope of an HTTP request whose body has already
// been read into body. The envelope keeps body without copying it; the
// caller must not modify body while the envelope is in use. It is one
// allocation with its headers, where they fit in a HeaderRoom.
func NewRequest(r *http.Request, service string, body []byte) *Request {
	x := new(struct {
		req  Request
		room HeaderRoom
	})
	req := &x.req
	req.Service = service
	req.Method = r.Method
	req.Path = r.URL.EscapedPath()
	req.RawQuery = r.URL.RawQuery
	req.ForceQuery = r.URL.ForceQuery && r.URL.RawQuery == ""
	req.Host = r.Host
	req.Headers = encodeHeaderIn(r.Header, &x.room)
	req.Body = body
	req.RemoteAddr = r.RemoteAddr
	return req
}

// RequestURI is the request target of req: its escaped path and query.
func (x *Request) RequestURI() string {
	p := x.GetPath()
	if p == "" {
		p = "/"
	}
	if q := x.GetRawQuery(); q != "" || x.GetForceQuery() {
		return p + "?" + q
	}
	return p
}

// WriteHTTP writes a reply from a handler to w: headers (without hop-by-hop
// fields), status and body. It must not be used for replies whose Code is
// not CODE_OK: those carry no HTTP answer.
func (x *Reply) WriteHTTP(w http.ResponseWriter) error {
	x.WriteHead(w)
	if len(x.GetBody()) > 0 {
		if _, err := w.Write(x.GetBody()); err != nil {
			return err
		}
	}
	WriteTrailers(w, x.GetTrailers())
	return nil
}

// WriteHead writes the head of a reply from a handler to w: headers
// (without hop-by-hop fields) and status. A reply whose body is whole and
// has no trailers gets its length; otherwise the handler's own, if any
// (an answer to HEAD, a known length streamed), else none: chunked. A
// whole body of up to wholeBuffered bytes gets its length from net/http's
// server, which holds that much before it sends the head and, when the
// handler returns with all of it held, sends its length: w must be such a
// server's, not flushed before the handler returns.
func (x *Reply) WriteHead(w http.ResponseWriter) {
	h := w.Header()
	DecodeHeader(h, x.GetHeaders())
	status := int(x.GetStatus())
	if status < 100 || status > 999 {
		status = http.StatusBadGateway
	}
	delete(h, "Content-Length")
	if n := len(x.GetBody()); n > 0 && !x.GetMore() && len(x.GetTrailers()) == 0 {
		if n > wholeBuffered {
			h["Content-Length"] = []string{strconv.Itoa(n)}
		}
	} else if len(x.GetTrailers()) == 0 {
		for _, hd := range x.GetHeaders() {
			if hd.GetName() == "Content-Length" && len(hd.GetValues()) == 1 {
				h["Content-Length"] = hd.GetValues()
			}
		}
	}
	w.WriteHeader(status)
}

// wholeBuffered is what net/http's servers hold of an answer before they
// send its head: HTTP/1's 2 KiB (bufferBeforeChunkingSize), HTTP/2's 4 KiB.
const wholeBuffered = 2 << 10

// WriteTrailers sets trailers on w after its body (net/http sends them
// at the end of a chunked answer, or in HTTP/2's trailing HEADERS).
func WriteTrailers(w http.ResponseWriter, trailers []*Header) {
	if len(trailers) == 0 {
		return
	}
	h := w.Header()
	for _, t := range trailers {
		if name := http.CanonicalHeaderKey(t.GetName()); name != "" {
			h[http.TrailerPrefix+name] = t.GetValues()
		}
	}
}

// StripMeshHeaders removes from hs every X-Griddle-* header: those only the
// mesh may set, which a client's request must not carry into it. It
// reuses hs's array.
func StripMeshHeaders(hs []*Header) []*Header {
	out := hs[:0]
	for _, h := range hs {
		if !meshHeader(h.GetName()) {
			out = append(out, h)
		}
	}
	clear(hs[len(out):])
	return out
}
