package wire

import (
	"errors"
	"net/http"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of Header (see envelope.proto); those of Request and
// Reply are in shared.go.
const (
	fieldHeaderName      = 1
	fieldHeaderValues    = 2
	fieldHeaderRawValues = 3
)

// DefaultIdle is how long a long-lived exchange may go with nothing moving
// when its envelope does not say.
const DefaultIdle = 60 * time.Second

// IdleTimeout is the idle timeout of a long-lived exchange with this Head.
func (h Head) IdleTimeout() time.Duration {
	if h.Idle > 0 {
		return time.Duration(h.Idle)
	}
	return DefaultIdle
}

// ErrMalformed reports bytes that are not a marshalled envelope.
var ErrMalformed = errors.New("wire: malformed envelope")

// Head is what a relay reads of a marshalled Request without decoding the
// rest: its id (aliasing the message), deadline (Unix nanoseconds, 0:
// none), budget (nanoseconds, 0: none), whether it is a cancel, and how it
// stands in an exchange in parts.
type Head struct {
	ID                []byte
	Deadline, Timeout int64
	Cancel            bool
	Part              Part
	BodyFollows       bool
	AcceptParts       bool
	Upgrade           bool
	Idle              int64 // nanoseconds; 0: DefaultIdle
	LongLived         bool
	Seq               uint32
}

// PeekRequest reads the Head of the marshalled Request b.
func PeekRequest(b []byte) (Head, error) {
	var h Head
	err := fields(b, requestVarints, func(num protowire.Number, v []byte, u uint64) error {
		switch num {
		case reqID:
			h.ID = v
		case reqDeadline:
			h.Deadline = int64(u)
		case reqTimeout:
			h.Timeout = int64(u)
		case reqCancel:
			h.Cancel = u != 0
		case reqPart:
			h.Part = Part(int32(u))
		case reqBodyFollows:
			h.BodyFollows = u != 0
		case reqAcceptParts:
			h.AcceptParts = u != 0
		case reqUpgrade:
			h.Upgrade = u != 0
		case reqIdle:
			h.Idle = int64(u)
		case reqLongLived:
			h.LongLived = u != 0
		case reqSeq:
			h.Seq = uint32(u)
		}
		return nil
	})
	if err != nil {
		return Head{}, err
	}
	return h, nil
}

// AppendDeadline sets the deadline of the marshalled Request b, both as a
// clock time and as the budget left from now: a field appended to a
// message overrides an earlier one.
func AppendDeadline(b []byte, deadline, now time.Time) []byte {
	b = protowire.AppendTag(b, reqDeadline, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(deadline.UnixNano()))
	b = protowire.AppendTag(b, reqTimeout, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(max(deadline.Sub(now), 1)))
}

// PeekReply reads the status and code of a marshalled Reply without
// decoding the rest. The status is the one the answer stands for in the
// mesh's figures (Reply.FigureStatus): for a gRPC answer whose status came
// with it, its gRPC status's.
func PeekReply(b []byte) (status int32, code Code, err error) {
	trailers := false
	err = fields(b, replyVarints, func(num protowire.Number, _ []byte, u uint64) error {
		switch num {
		case repStatus:
			status = int32(u)
		case repCode:
			code = Code(int32(u))
		case repTrailers:
			trailers = true
		}
		return nil
	})
	if err == nil && trailers && code == Code_CODE_OK { // rare: decoded whole
		var r Reply
		if err := r.UnmarshalShared(b); err == nil {
			status = int32(r.FigureStatus())
		}
	}
	return status, code, err
}

// AppendReplyFields adds to the marshalled Reply b its id, the instance
// that served it and one header: what a sidecar adds to its handler's
// answer without decoding it. Appended scalar fields override earlier
// ones; the header joins the others.
func AppendReplyFields(b, id []byte, servedBy, header, value string) []byte {
	b = protowire.AppendTag(b, repID, protowire.BytesType)
	b = protowire.AppendBytes(b, id)
	b = protowire.AppendTag(b, repServedBy, protowire.BytesType)
	b = protowire.AppendString(b, servedBy)
	if header != "" {
		n := protowire.SizeTag(fieldHeaderName) + protowire.SizeBytes(len(header)) +
			protowire.SizeTag(fieldHeaderValues) + protowire.SizeBytes(len(value))
		b = protowire.AppendTag(b, repHeaders, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = protowire.AppendTag(b, fieldHeaderName, protowire.BytesType)
		b = protowire.AppendString(b, header)
		b = protowire.AppendTag(b, fieldHeaderValues, protowire.BytesType)
		b = protowire.AppendString(b, value)
	}
	return b
}

// AppendReply appends to b the marshalled Reply of an HTTP answer: status,
// h without its hop-by-hop fields but Content-Length (and, with stripMesh,
// without X-Griddle-* fields), body. It is proto.Marshal of the Reply EncodeHeader would give,
// without building one.
func AppendReply(b []byte, status int, h http.Header, body []byte, stripMesh bool) []byte {
	if status != 0 {
		b = protowire.AppendTag(b, repStatus, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(status)))
	}
	conn := h["Connection"]
	for name, values := range h {
		// Content-Length stays: an answer to HEAD has no body to tell it.
		if name != "Content-Length" && hopByHop(name, conn) || stripMesh && meshHeader(name) {
			continue
		}
		n := protowire.SizeTag(fieldHeaderName) + protowire.SizeBytes(len(name))
		for _, v := range values {
			n += protowire.SizeTag(fieldHeaderValues) + protowire.SizeBytes(len(v))
		}
		b = protowire.AppendTag(b, repHeaders, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = protowire.AppendTag(b, fieldHeaderName, protowire.BytesType)
		b = protowire.AppendString(b, name)
		for _, v := range values {
			b = protowire.AppendTag(b, fieldHeaderValues, protowire.BytesType)
			b = protowire.AppendString(b, v)
		}
	}
	if len(body) > 0 {
		b = protowire.AppendTag(b, repBody, protowire.BytesType)
		b = protowire.AppendBytes(b, body)
	}
	return b
}

// AppendBody sets the body of the marshalled Reply b: a field appended to
// a message overrides an earlier one.
func AppendBody(b, body []byte) []byte {
	b = protowire.AppendTag(b, repBody, protowire.BytesType)
	return protowire.AppendBytes(b, body)
}

// AppendUnhealthy marks the marshalled Reply b as the answer of an
// instance that cannot serve now (Reply.Unhealthy).
func AppendUnhealthy(b []byte) []byte {
	b = protowire.AppendTag(b, repUnhealthy, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}
