package plugins

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// Headers of the contract between the sidecar and the handler, in
// canonical form (http.CanonicalHeaderKey) so that they index http.Header
// directly. Their one definition is package internal/wire's.
const (
	// HeaderDeadline carries the absolute deadline of the whole request as
	// Unix nanoseconds in decimal. The Mesh client sets it on outbound
	// calls; a handler finds the deadline of its own request in
	// r.Context().Deadline().
	HeaderDeadline = wire.HeaderDeadline
	// HeaderRequestID identifies a request; the edge returns it on every
	// answer and it names the request in the sidecar's logs (RequestID
	// gives a handler its own).
	HeaderRequestID = wire.HeaderRequestID
	// HeaderParentID carries, on an outbound call, the request id of the
	// incoming request that caused it.
	HeaderParentID = wire.HeaderParentID
	// HeaderRouting is the routing context (sticky key, pins, experiment
	// assignments). It is opaque to handlers and passed through unchanged.
	HeaderRouting = wire.HeaderRouting
	// HeaderVersion is set by the sidecar on every answer: the version of
	// the service that gave it. A handler reads it on the answers of its
	// outbound calls.
	HeaderVersion = wire.HeaderVersion
	// HeaderTraceparent and HeaderTracestate are the W3C trace context.
	HeaderTraceparent = wire.HeaderTraceparent
	HeaderTracestate  = wire.HeaderTracestate
	// Headers of an event delivered to a subscriber (see Subscribe).
	HeaderEventID        = wire.HeaderEventID
	HeaderEventSeq       = wire.HeaderEventSeq
	HeaderEventTopic     = wire.HeaderEventTopic
	HeaderEventPublisher = wire.HeaderEventPublisher
	// HeaderEventSkipped is set on the first event delivered after events
	// this subscriber had not received were removed by a hard retention
	// limit of the publisher: the Seq they were removed up to. Events
	// after the previous one delivered, up to that Seq, will never come.
	HeaderEventSkipped = wire.HeaderEventSkipped
)

// inbound is what an outbound call inherits from the incoming request, and
// the mesh it is served by. It is the request's context itself (one
// allocation where a context value would take two): its Value answers
// inboundKey.
type inbound struct {
	context.Context
	mesh        *MeshAPI
	conn        *hop.Conn // the connection the request came on; nil: run alone
	requestID   string
	traceparent string
	tracestate  string
	routing     string
}

type inboundKey struct{}

func (in *inbound) Value(key any) any {
	if key == (inboundKey{}) {
		return in
	}
	return in.Context.Value(key)
}

// contextHandler serves h: requests from the sidecar arrive with their
// context prepared (serveEnvelope); requests to a handler run alone carry
// the mesh's headers, which ServeHTTP turns into the same context.
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
		Context:     ctx,
		mesh:        c.mesh,
		requestID:   r.Header.Get(HeaderRequestID),
		traceparent: r.Header.Get(HeaderTraceparent),
		tracestate:  r.Header.Get(HeaderTracestate),
		routing:     r.Header.Get(HeaderRouting),
	}
	c.h.ServeHTTP(w, r.WithContext(in))
}

// serveEnvelope serves a request from the sidecar, whose context already
// carries the deadline and what outbound calls inherit.
func (c *contextHandler) serveEnvelope(w http.ResponseWriter, r *http.Request, _ *wire.Request) {
	c.h.ServeHTTP(w, r)
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
