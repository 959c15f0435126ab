package wire_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/griddle-mesh/griddle/internal/wire"
)

func sampleRequest() *wire.Request {
	return &wire.Request{
		Id: "0af7", Service: "profiles", Version: "v2", Method: "POST", Path: "/a%2Fb", RawQuery: "x=1&x=2",
		Host: "api.example", Body: []byte("body"), DeadlineUnixNano: 1700000000123456789, Attempt: 2,
		RemoteAddr: "10.0.0.1:5000",
		Headers: []*wire.Header{
			{Name: "Accept", Values: []string{"*/*"}},
			{Name: "X-Multi", Values: []string{"1", "2", ""}},
			{Name: "Empty"},
			{Name: "X-Latin1", RawValues: [][]byte{{'c', 0xe9}}},
		},
		Routing:      &wire.Routing{StickyKey: "u1", Pins: map[string]string{"feed": "v2"}, Experiments: map[string]string{"e": "b"}},
		Trace:        &wire.Trace{Traceparent: "00-ab-cd-01", Tracestate: "a=1"},
		TimeoutNanos: 5e8, Cancel: true, ForceQuery: true, Part: wire.Part_PART_DATA, BodyFollows: true,
		AcceptParts: true, End: true, Seq: 7, Trailers: []*wire.Header{{Name: "Grpc-Status", Values: []string{"0"}}},
		ProtoMajor: 2, ProtoMinor: 0, IdleNanos: 3e10, Upgrade: true, LongLived: true, Unsized: true,
	}
}

func sampleReply() *wire.Reply {
	return &wire.Reply{
		Id: "0af7", Status: 201, Body: []byte("hello"), Code: wire.Code_CODE_INTERNAL, Message: "m", ErrorId: "e", ServedBy: "s-1",
		More: true, Hijacked: true, Head: true, Unhealthy: true, Trailers: []*wire.Header{{Name: "X-T", Values: []string{"1", "2"}}},
		Headers: []*wire.Header{{Name: "Content-Type", Values: []string{"text/plain"}}, {Name: "Set-Cookie", Values: []string{"a=1", "b=2"}}},
	}
}

// The samples set every field, so that the shared decoders are checked on
// each (a field added to envelope.proto and not to them fails here).
func TestSamplesSetEveryField(t *testing.T) {
	for _, m := range []proto.Message{sampleRequest(), sampleReply()} {
		r := m.ProtoReflect()
		fs := r.Descriptor().Fields()
		for i := range fs.Len() {
			if f := fs.Get(i); !r.Has(f) && f.Name() != "proto_minor" { // proto_minor 0 is HTTP/2.0's
				t.Errorf("%s: sample leaves %s unset", r.Descriptor().Name(), f.Name())
			}
		}
	}
}

// The shared decoders give what proto.Unmarshal gives, with their headers
// in a HeaderRoom or not, and with more headers than one holds.
func TestUnmarshalShared(t *testing.T) {
	many := sampleReply()
	for i := range 10 {
		many.Headers = append(many.Headers, &wire.Header{Name: "X-" + strings.Repeat("n", i+1), Values: []string{"a", "b"}})
	}
	for _, m := range []proto.Message{sampleRequest(), &wire.Request{}, sampleReply(), &wire.Reply{}, many} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, want); err != nil {
			t.Fatal(err)
		}
		for _, room := range []*wire.HeaderRoom{nil, new(wire.HeaderRoom)} {
			got, err := unmarshalShared(m, b, room)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("room %t: got %v\nwant %v", room != nil, got, want)
			}
		}
	}
}

func unmarshalShared(kind proto.Message, b []byte, room *wire.HeaderRoom) (proto.Message, error) {
	switch kind.(type) {
	case *wire.Request:
		var x wire.Request
		return &x, x.UnmarshalSharedIn(b, room)
	default:
		var x wire.Reply
		return &x, x.UnmarshalSharedIn(b, room)
	}
}

// FuzzUnmarshalShared: on any input the shared decoders fail where
// proto.Unmarshal fails for structure (not for UTF-8), never panic, and
// agree with it where it succeeds.
func FuzzUnmarshalShared(f *testing.F) {
	for _, m := range []proto.Message{sampleRequest(), sampleReply()} {
		b, _ := proto.Marshal(m)
		f.Add(b, m == proto.Message(nil))
		f.Add(b[:len(b)/2], false)
	}
	f.Add([]byte{0xff, 0x01}, true)
	f.Fuzz(func(t *testing.T, b []byte, reply bool) {
		var kind proto.Message = &wire.Request{}
		if reply {
			kind = &wire.Reply{}
		}
		want := kind.ProtoReflect().New().Interface()
		wantErr := proto.Unmarshal(b, want)
		got, err := unmarshalShared(kind, b, nil)
		inRoom, errInRoom := unmarshalShared(kind, b, new(wire.HeaderRoom))
		if (err == nil) != (errInRoom == nil) || err == nil && !proto.Equal(got, inRoom) {
			t.Fatalf("%x: with a HeaderRoom %v, %v; without %v, %v", b, inRoom, errInRoom, got, err)
		}
		if req, ok := got.(*wire.Request); ok && err == nil {
			h, err := wire.PeekRequest(b)
			if err != nil || string(h.ID) != req.Id || h.Deadline != req.DeadlineUnixNano || h.Timeout != req.TimeoutNanos || h.Cancel != req.Cancel {
				t.Fatalf("%x: PeekRequest %+v %v disagrees with %v", b, h, err, req)
			}
		}
		if rep, ok := got.(*wire.Reply); ok && err == nil {
			status, code, err := wire.PeekReply(b)
			if err != nil || status != rep.Status || code != rep.Code {
				t.Fatalf("%x: PeekReply %d %v %v disagrees with %v", b, status, code, err, rep)
			}
		}
		if wantErr == nil {
			dropUnknown(want.ProtoReflect()) // fields of the wrong wire type, which the shared decoders skip
			if got != nil {
				dropUnknown(got.ProtoReflect())
			}
			if err != nil {
				t.Fatalf("proto.Unmarshal accepts %x, UnmarshalShared: %v", b, err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("%x:\ngot  %v\nwant %v", b, got, want)
			}
		}
	})
}

func BenchmarkUnmarshal(b *testing.B) {
	req := sampleRequest()
	req.Routing = nil // rare: most requests carry none
	data, _ := proto.Marshal(req)
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var x wire.Request
			if err := proto.Unmarshal(data, &x); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("shared", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var x wire.Request
			if err := x.UnmarshalShared(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// dropUnknown clears the unknown fields of m and of the messages in it.
func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				dropUnknown(v.List().Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			dropUnknown(v.Message())
		}
		return true
	})
}

// AppendReply marshals what proto.Marshal of the equivalent Reply does.
func TestAppendReply(t *testing.T) {
	h := http.Header{"Content-Type": {"text/plain"}, "Set-Cookie": {"a=1", "b=2"}, "Connection": {"close"},
		"X-Griddle-Version": {"forged"}, "Empty": {}}
	for _, strip := range []bool{false, true} {
		var got wire.Reply
		if err := proto.Unmarshal(wire.AppendReply(nil, 201, h, []byte("body"), strip), &got); err != nil {
			t.Fatal(err)
		}
		hs := wire.EncodeHeader(h)
		if strip {
			hs = wire.StripMeshHeaders(hs)
		}
		want := &wire.Reply{Status: 201, Headers: hs, Body: []byte("body")}
		sortHeaders(got.Headers)
		sortHeaders(want.Headers)
		if !proto.Equal(&got, want) {
			t.Errorf("strip %v:\ngot  %v\nwant %v", strip, &got, want)
		}
	}
}

func sortHeaders(hs []*wire.Header) {
	slices.SortFunc(hs, func(a, b *wire.Header) int { return strings.Compare(a.Name, b.Name) })
}
