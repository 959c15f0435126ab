package wire

import (
	"slices"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Field numbers of Request, Reply, Header and Trace (see envelope.proto)
// that the shared decoders read.
const (
	reqID, reqService, reqVersion, reqMethod, reqPath, reqQuery, reqHost = 1, 2, 3, 4, 5, 6, 7
	reqHeaders, reqBody, reqDeadline, reqAttempt, reqRouting, reqTrace   = 8, 9, 10, 11, 12, 13
	reqRemoteAddr, reqTimeout, reqCancel, reqForceQuery                  = 14, 15, 16, 17
	reqPart, reqBodyFollows, reqAcceptParts, reqEnd, reqSeq, reqTrailers = 18, 19, 20, 21, 22, 23
	reqProtoMajor, reqProtoMinor, reqIdle, reqUpgrade, reqLongLived      = 24, 25, 26, 27, 28
	reqUnsized                                                           = 29
	repMore, repTrailers, repHijacked, repHead, repUnhealthy             = 9, 10, 11, 12, 13
	repID, repStatus, repHeaders, repBody, repCode, repMessage           = 1, 2, 3, 4, 5, 6
	repErrorID, repServedBy                                              = 7, 8
	traceParent, traceState                                              = 1, 2
)

// The varint fields of Request and Reply; the others are length-delimited.
var (
	requestVarints = []protowire.Number{reqDeadline, reqAttempt, reqTimeout, reqCancel, reqForceQuery,
		reqPart, reqBodyFollows, reqAcceptParts, reqEnd, reqSeq, reqProtoMajor, reqProtoMinor, reqIdle, reqUpgrade, reqLongLived, reqUnsized}
	replyVarints = []protowire.Number{repStatus, repCode, repMore, repHijacked, repHead, repUnhealthy}
)

// UnmarshalShared decodes the marshalled Request b into x as proto.Unmarshal
// does, but without copying: x's strings and body alias b, which must
// therefore never change afterwards. Headers take three allocations
// whatever their number. Strings are not checked for valid UTF-8.
func (x *Request) UnmarshalShared(b []byte) error { return x.UnmarshalSharedIn(b, nil) }

// UnmarshalSharedIn is UnmarshalShared with the headers in room (nil:
// none) when they fit, which then takes no allocation for them; room
// must live as long as x.
func (x *Request) UnmarshalSharedIn(b []byte, room *HeaderRoom) error {
	x.Reset()
	hs := headerSlab{room: room}
	if err := hs.count(b, reqHeaders); err != nil {
		return err
	}
	x.Headers = hs.pointers()
	return fields(b, requestVarints, func(num protowire.Number, v []byte, u uint64) error {
		switch num {
		case reqID:
			x.Id = shared(v)
		case reqService:
			x.Service = shared(v)
		case reqVersion:
			x.Version = shared(v)
		case reqMethod:
			x.Method = shared(v)
		case reqPath:
			x.Path = shared(v)
		case reqQuery:
			x.RawQuery = shared(v)
		case reqHost:
			x.Host = shared(v)
		case reqRemoteAddr:
			x.RemoteAddr = shared(v)
		case reqBody:
			x.Body = v
		case reqHeaders:
			h, err := hs.add(v)
			if err != nil {
				return err
			}
			x.Headers = append(x.Headers, h)
		case reqTrace:
			if x.Trace == nil {
				x.Trace = &Trace{}
			}
			return x.Trace.unmarshalShared(v)
		case reqRouting:
			if x.Routing == nil {
				x.Routing = &Routing{}
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, x.Routing); err != nil {
				return ErrMalformed
			}
		case reqDeadline:
			x.DeadlineUnixNano = int64(u)
		case reqAttempt:
			x.Attempt = uint32(u)
		case reqTimeout:
			x.TimeoutNanos = int64(u)
		case reqCancel:
			x.Cancel = u != 0
		case reqForceQuery:
			x.ForceQuery = u != 0
		case reqPart:
			x.Part = Part(int32(u))
		case reqBodyFollows:
			x.BodyFollows = u != 0
		case reqAcceptParts:
			x.AcceptParts = u != 0
		case reqEnd:
			x.End = u != 0
		case reqSeq:
			x.Seq = uint32(u)
		case reqProtoMajor:
			x.ProtoMajor = int32(u)
		case reqProtoMinor:
			x.ProtoMinor = int32(u)
		case reqIdle:
			x.IdleNanos = int64(u)
		case reqUpgrade:
			x.Upgrade = u != 0
		case reqLongLived:
			x.LongLived = u != 0
		case reqUnsized:
			x.Unsized = u != 0
		case reqTrailers:
			return appendHeader(&x.Trailers, v)
		}
		return nil
	})
}

// UnmarshalShared decodes the marshalled Reply b into x as proto.Unmarshal
// does, but without copying: x's strings and body alias b, which must
// therefore never change afterwards. Headers take three allocations
// whatever their number. Strings are not checked for valid UTF-8.
func (x *Reply) UnmarshalShared(b []byte) error { return x.UnmarshalSharedIn(b, nil) }

// UnmarshalSharedIn is UnmarshalShared with the headers in room (nil:
// none) when they fit, which then takes no allocation for them; room
// must live as long as x.
func (x *Reply) UnmarshalSharedIn(b []byte, room *HeaderRoom) error {
	x.Reset()
	hs := headerSlab{room: room}
	if err := hs.count(b, repHeaders); err != nil {
		return err
	}
	x.Headers = hs.pointers()
	return fields(b, replyVarints, func(num protowire.Number, v []byte, u uint64) error {
		switch num {
		case repID:
			x.Id = shared(v)
		case repBody:
			x.Body = v
		case repMessage:
			x.Message = shared(v)
		case repErrorID:
			x.ErrorId = shared(v)
		case repServedBy:
			x.ServedBy = shared(v)
		case repHeaders:
			h, err := hs.add(v)
			if err != nil {
				return err
			}
			x.Headers = append(x.Headers, h)
		case repStatus:
			x.Status = int32(u)
		case repCode:
			x.Code = Code(int32(u))
		case repMore:
			x.More = u != 0
		case repHijacked:
			x.Hijacked = u != 0
		case repHead:
			x.Head = u != 0
		case repUnhealthy:
			x.Unhealthy = u != 0
		case repTrailers:
			return appendHeader(&x.Trailers, v)
		}
		return nil
	})
}

// appendHeader decodes the marshalled Header b onto hs (trailers: rare,
// so not from a slab).
func appendHeader(hs *[]*Header, b []byte) error {
	h := &Header{}
	if err := proto.Unmarshal(b, h); err != nil {
		return ErrMalformed
	}
	*hs = append(*hs, h)
	return nil
}

func (x *Trace) unmarshalShared(b []byte) error {
	return fields(b, nil, func(num protowire.Number, v []byte, _ uint64) error {
		switch num {
		case traceParent:
			x.Traceparent = shared(v)
		case traceState:
			x.Tracestate = shared(v)
		}
		return nil
	})
}

// fields calls fn for each field of the marshalled message b with its
// number and either its bytes or, for the numbers in varints, its value;
// a field of another wire type than its number's is skipped, as
// proto.Unmarshal keeps it aside as unknown. It stops at fn's first error
// and fails with ErrMalformed on a broken message.
func fields(b []byte, varints []protowire.Number, fn func(num protowire.Number, v []byte, u uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
		var v []byte
		var u uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			u, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
		if want := protowire.BytesType; slices.Contains(varints, num) {
			want = protowire.VarintType
			if typ != want {
				continue
			}
		} else if typ != want {
			continue
		}
		if err := fn(num, v, u); err != nil {
			return err
		}
	}
	return nil
}

// headerSlab hands out the Headers of one message from three allocations:
// the structs, the pointers to them (the message's Headers, pre-sized) and
// every value; or from room, where they fit, and none.
type headerSlab struct {
	structs []Header
	values  []string
	room    *HeaderRoom // nil: none
	inRoom  bool        // the headers fit in room
}

// Bounds of a HeaderRoom.
const (
	roomHeaders = 8
	roomValues  = 12
)

// HeaderRoom is room for the headers of one envelope, to be allocated with
// the envelope itself (a field of the same struct): a request or reply
// with up to 8 headers and 12 values in all then takes no allocation of
// its own for them.
type HeaderRoom struct {
	structs [roomHeaders]Header
	ptrs    [roomHeaders + headerRoom]*Header
	values  [roomValues]string
}

// count sizes the slab for the headers (field num) of message b.
func (s *headerSlab) count(b []byte, num protowire.Number) error {
	headers, values := 0, 0
	for len(b) > 0 {
		n0, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
		if n0 == num && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return ErrMalformed
			}
			headers++
			values += countValues(v)
			b = b[m:]
			continue
		}
		if n = protowire.ConsumeFieldValue(n0, typ, b); n < 0 {
			return ErrMalformed
		}
		b = b[n:]
	}
	switch {
	case headers == 0:
	case s.room != nil && headers <= roomHeaders && values <= roomValues:
		s.inRoom = true
		s.structs = s.room.structs[:0:headers]
		s.values = s.room.values[:0:values]
	default:
		s.structs = make([]Header, 0, headers)
		s.values = make([]string, 0, values)
	}
	return nil
}

// pointers is an empty slice with room for the slab's headers, nil for none.
func (s *headerSlab) pointers() []*Header {
	switch {
	case cap(s.structs) == 0:
		return nil
	case s.inRoom:
		return s.room.ptrs[:0:cap(s.structs)]
	}
	return make([]*Header, 0, cap(s.structs))
}

// countValues counts the values fields of a marshalled Header; a
// malformed one counts as it can, add reports it.
func countValues(b []byte) int {
	n := 0
	for len(b) > 0 {
		num, typ, m := protowire.ConsumeTag(b)
		if m < 0 {
			return n
		}
		b = b[m:]
		if m = protowire.ConsumeFieldValue(num, typ, b); m < 0 {
			return n
		}
		b = b[m:]
		if num == fieldHeaderValues && typ == protowire.BytesType {
			n++
		}
	}
	return n
}

// add decodes the marshalled Header b into the slab.
func (s *headerSlab) add(b []byte) (*Header, error) {
	s.structs = append(s.structs, Header{})
	h := &s.structs[len(s.structs)-1]
	first := len(s.values)
	err := fields(b, nil, func(num protowire.Number, v []byte, _ uint64) error {
		switch num {
		case fieldHeaderName:
			h.Name = shared(v)
		case fieldHeaderValues:
			s.values = append(s.values, shared(v))
		case fieldHeaderRawValues:
			h.RawValues = append(h.RawValues, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(s.values) > first {
		h.Values = s.values[first:len(s.values):len(s.values)]
	}
	return h, nil
}

// shared is b as a string without a copy: b must never change.
func shared(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
