package wire

import "strings"

// Every X-Griddle-* header name, and the other header names the mesh reads
// or writes, in canonical form (http.CanonicalHeaderKey) so that they index
// http.Header directly. This is their one definition: the SDK, the edge,
// the sidecar and the tests refer to these.
const (
	// HeaderDeadline carries the absolute deadline of the whole request as
	// Unix nanoseconds in decimal, on a handler's outbound calls to its
	// sidecar.
	HeaderDeadline = "X-Griddle-Deadline"
	// HeaderRequestID identifies a request; the edge sets it on every
	// answer and it names the request in the logs.
	HeaderRequestID = "X-Griddle-Request-Id"
	// HeaderParentID carries, on an outbound call, the request id of the
	// incoming request that caused it.
	HeaderParentID = "X-Griddle-Parent-Id"
	// HeaderRouting is the routing context (sticky key, pins, experiment
	// assignments) of an outbound call, opaque to handlers (EncodeRouting).
	HeaderRouting = "X-Griddle-Routing"
	// HeaderVersion is set by the sidecar on every answer: the version of
	// the service that gave it.
	HeaderVersion = "X-Griddle-Version"
	// HeaderErrorID is set on every answer that is a Griddle error rather
	// than a handler's: it names the log line that says why.
	HeaderErrorID = "X-Griddle-Error-Id"
	// HeaderPin asks for versions per service ("feed=v2,profiles=v1"),
	// honoured only where the rules allow it.
	HeaderPin = "X-Griddle-Pin"
	// Headers of an event delivered to a handler.
	HeaderEventID        = "X-Griddle-Event-Id"
	HeaderEventSeq       = "X-Griddle-Event-Seq"
	HeaderEventTopic     = "X-Griddle-Event-Topic"
	HeaderEventPublisher = "X-Griddle-Event-Publisher"
	// HeaderEventSkipped is set on the first event delivered after events
	// the subscriber had not received were trimmed away (a hard
	// retention): the Seq they were trimmed up to.
	HeaderEventSkipped = "X-Griddle-Event-Skipped"
	// HeaderAuthor names who made a change through the control plane.
	HeaderAuthor = "X-Griddle-Author"
	// HeaderTraceparent and HeaderTracestate are the W3C trace context.
	HeaderTraceparent = "Traceparent"
	HeaderTracestate  = "Tracestate"
)

// UpgradeTunnel is the Upgrade protocol of a handler's tunnel to its
// sidecar: a connection over which the handler speaks HTTP/2 with prior
// knowledge to the mesh (a gRPC client's calls to other services).
const UpgradeTunnel = "griddle-h2c"

// meshHeader reports whether the canonical header name is one only the
// mesh may set: X-Griddle-*.
func meshHeader(name string) bool { return strings.HasPrefix(name, "X-Griddle-") }
