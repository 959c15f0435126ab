package storehttp

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp/storepb"
)

// Operations a Server answers without HTTP, as opaque unary calls on the
// connection between a sidecar and its handler (package hop): the first
// byte names the operation, the rest is its request message.
const (
	// OpGet is a one-key read (GetRequest → GetResponse), as POST
	// /v1/spaces/own/get answers it.
	OpGet byte = 1
)

// Answers of an operation start with one of these bytes.
const (
	opOK    byte = 0 // the response message follows
	opError byte = 1 // an Error follows
)

// Op answers one operation in the Server's own space (WithSpace): op is
// its first byte and request message. The answer is for DecodeGet.
func (s *Server) Op(ctx context.Context, op []byte) []byte {
	if len(op) == 0 || op[0] != OpGet {
		return s.opError(fmt.Errorf("%w: unknown operation", errBadRequest))
	}
	st, err := s.b.Space(s.space)
	if err != nil {
		return s.opError(err)
	}
	var req storepb.GetRequest
	if err := proto.Unmarshal(op[1:], &req); err != nil {
		return s.opError(fmt.Errorf("%w: %w", errBadRequest, err))
	}
	v, err := store.Get(ctx, st, req.Key)
	if err != nil {
		return s.opError(err)
	}
	b, _ := proto.MarshalOptions{}.MarshalAppend([]byte{opOK}, &storepb.GetResponse{Found: v != nil, Value: v})
	return b
}

func (s *Server) opError(err error) []byte {
	b, _ := proto.MarshalOptions{}.MarshalAppend([]byte{opError}, s.wireError(err))
	return b
}

// AppendGet appends the OpGet operation for key to b.
func AppendGet(b, key []byte) []byte {
	b = append(b, OpGet)
	b, _ = proto.MarshalOptions{}.MarshalAppend(b, &storepb.GetRequest{Key: key})
	return b
}

// DecodeGet reads the answer to an OpGet: the value (nil: no such key) or
// the store's error.
func DecodeGet(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("storehttp: empty answer")
	}
	switch b[0] {
	case opOK:
		var resp storepb.GetResponse
		if err := proto.Unmarshal(b[1:], &resp); err != nil {
			return nil, fmt.Errorf("storehttp: decoding the answer: %w", err)
		}
		if !resp.Found {
			return nil, nil
		}
		if resp.Value == nil {
			return []byte{}, nil
		}
		return resp.Value, nil
	case opError:
		var e storepb.Error
		if err := proto.Unmarshal(b[1:], &e); err != nil {
			return nil, fmt.Errorf("storehttp: decoding the answer: %w", err)
		}
		return nil, errorOf(&e)
	default:
		return nil, fmt.Errorf("storehttp: unknown answer %d", b[0])
	}
}
