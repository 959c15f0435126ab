package wire

import (
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
	repID, repStatus, repHeaders, repBody, repCode, repMessage           = 1, 2, 3, 4, 5, 6
	repErrorID, repServedBy                                              = 7, 8
	traceParent, traceState                                              = 1, 2
)

// UnmarshalShared decodes the marshalled Request b into x as proto.Unmarshal
// does, but without copying: x's strings and body alias b, which must
// therefore never change afterwards. Headers take three allocations
// whatever their number. Strings are not checked for valid UTF-8.
func (x *Request) UnmarshalShared(b []byte) error {
	x.Reset()
	var hs headerSlab
	if err := hs.count(b, reqHeaders); err != nil {
		return err
	}
	x.Headers = hs.pointers()
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
		switch {
		case typ == protowire.BytesType && num == reqID:
			x.Id = shared(v)
		case typ == protowire.BytesType && num == reqService:
			x.Service = shared(v)
		case typ == protowire.BytesType && num == reqVersion:
			x.Version = shared(v)
		case typ == protowire.BytesType && num == reqMethod:
			x.Method = shared(v)
		case typ == protowire.BytesType && num == reqPath:
			x.Path = shared(v)
		case typ == protowire.BytesType && num == reqQuery:
			x.RawQuery = shared(v)
		case typ == protowire.BytesType && num == reqHost:
			x.Host = shared(v)
		case typ == protowire.BytesType && num == reqRemoteAddr:
			x.RemoteAddr = shared(v)
		case typ == protowire.BytesType && num == reqBody:
			x.Body = v
		case typ == protowire.BytesType && num == reqHeaders:
			h, err := hs.add(v)
			if err != nil {
				return err
			}
			x.Headers = append(x.Headers, h)
		case typ == protowire.BytesType && num == reqTrace:
			if x.Trace == nil {
				x.Trace = &Trace{}
			}
			if err := x.Trace.unmarshalShared(v); err != nil {
				return err
			}
		case typ == protowire.BytesType && num == reqRouting:
			if x.Routing == nil {
				x.Routing = &Routing{}
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, x.Routing); err != nil {
				return ErrMalformed
			}
		case typ == protowire.VarintType && num == reqDeadline:
			x.DeadlineUnixNano = int64(u)
		case typ == protowire.VarintType && num == reqAttempt:
			x.Attempt = uint32(u)
		case typ == protowire.VarintType && num == reqTimeout:
			x.TimeoutNanos = int64(u)
		case typ == protowire.VarintType && num == reqCancel:
			x.Cancel = u != 0
		case typ == protowire.VarintType && num == reqForceQuery:
			x.ForceQuery = u != 0
		}
	}
	return nil
}

// UnmarshalShared decodes the marshalled Reply b into x as proto.Unmarshal
// does, but without copying: x's strings and body alias b, which must
// therefore never change afterwards. Headers take three allocations
// whatever their number. Strings are not checked for valid UTF-8.
func (x *Reply) UnmarshalShared(b []byte) error {
	x.Reset()
	var hs headerSlab
	if err := hs.count(b, repHeaders); err != nil {
		return err
	}
	x.Headers = hs.pointers()
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
		switch {
		case typ == protowire.BytesType && num == repID:
			x.Id = shared(v)
		case typ == protowire.BytesType && num == repBody:
			x.Body = v
		case typ == protowire.BytesType && num == repMessage:
			x.Message = shared(v)
		case typ == protowire.BytesType && num == repErrorID:
			x.ErrorId = shared(v)
		case typ == protowire.BytesType && num == repServedBy:
			x.ServedBy = shared(v)
		case typ == protowire.BytesType && num == repHeaders:
			h, err := hs.add(v)
			if err != nil {
				return err
			}
			x.Headers = append(x.Headers, h)
		case typ == protowire.VarintType && num == repStatus:
			x.Status = int32(u)
		case typ == protowire.VarintType && num == repCode:
			x.Code = Code(int32(u))
		}
	}
	return nil
}

func (x *Trace) unmarshalShared(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return ErrMalformed
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ErrMalformed
		}
		b = b[n:]
		switch num {
		case traceParent:
			x.Traceparent = shared(v)
		case traceState:
			x.Tracestate = shared(v)
		}
	}
	return nil
}

// headerSlab hands out the Headers of one message from three allocations:
// the structs, the pointers to them (the message's Headers, pre-sized) and
// every value.
type headerSlab struct {
	structs []Header
	values  []string
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
	if headers > 0 {
		s.structs = make([]Header, 0, headers)
		s.values = make([]string, 0, values)
	}
	return nil
}

// pointers is an empty slice with room for the slab's headers, nil for none.
func (s *headerSlab) pointers() []*Header {
	if cap(s.structs) == 0 {
		return nil
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
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, ErrMalformed
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, ErrMalformed
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, ErrMalformed
		}
		b = b[n:]
		switch num {
		case fieldHeaderName:
			h.Name = shared(v)
		case fieldHeaderValues:
			s.values = append(s.values, shared(v))
		}
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
