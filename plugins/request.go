package plugins

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Headers of the request contract between the sidecar and the handler. Names
// are in canonical form (http.CanonicalHeaderKey), so they index http.Header
// directly.
const (
	// HeaderDeadline carries the absolute deadline of the whole request as
	// Unix nanoseconds in decimal. Set by the sidecar on incoming requests and
	// by the Mesh client on outbound ones.
	HeaderDeadline = "X-Griddle-Deadline"
	// HeaderRequestID identifies the incoming request; it also names the
	// request in the sidecar's logs.
	HeaderRequestID = "X-Griddle-Request-Id"
	// HeaderParentID carries, on an outbound call, the HeaderRequestID of the
	// incoming request that caused it.
	HeaderParentID = "X-Griddle-Parent-Id"
	// HeaderRouting is the routing context (sticky key, pins, experiment
	// assignments). It is opaque to handlers and passed through unchanged.
	HeaderRouting = "X-Griddle-Routing"
	// HeaderVersion is set by the sidecar on every answer: the version of
	// the service that gave it. A handler reads it on the answers of its
	// outbound calls.
	HeaderVersion = "X-Griddle-Version"
	// HeaderTraceparent and HeaderTracestate are the W3C trace context.
	HeaderTraceparent = "Traceparent"
	HeaderTracestate  = "Tracestate"
)

// inbound is what an outbound call inherits from the incoming request, and
// the mesh it is served by: one context value for both.
type inbound struct {
	mesh        *MeshAPI
	requestID   string
	traceparent string
	tracestate  string
	routing     string
}

type inboundKey struct{}

// contextHandler prepares each request's context before h sees it.
type contextHandler struct {
	h    http.Handler
	mesh *MeshAPI
}

func (c *contextHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if d, ok := parseDeadline(r.Header.Get(HeaderDeadline)); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	in := &inbound{
		mesh:        c.mesh,
		requestID:   r.Header.Get(HeaderRequestID),
		traceparent: r.Header.Get(HeaderTraceparent),
		tracestate:  r.Header.Get(HeaderTracestate),
		routing:     r.Header.Get(HeaderRouting),
	}
	ctx = context.WithValue(ctx, inboundKey{}, in)
	c.h.ServeHTTP(w, r.WithContext(ctx))
}

// parseDeadline decodes a HeaderDeadline value. ok is false for an empty or
// malformed value, which leaves the request without a deadline.
func parseDeadline(v string) (d time.Time, ok bool) {
	if v == "" {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// FormatDeadline encodes d as a HeaderDeadline value.
func FormatDeadline(d time.Time) string {
	return strconv.FormatInt(d.UnixNano(), 10)
}

// RequestID returns the Griddle request id of the incoming request that ctx
// belongs to, or "" when ctx does not come from a request served by Serve.
func RequestID(ctx context.Context) string {
	if in, ok := ctx.Value(inboundKey{}).(*inbound); ok {
		return in.requestID
	}
	return ""
}
