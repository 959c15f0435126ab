package wire

import (
	"encoding/base64"
	"fmt"

	"google.golang.org/protobuf/proto"
)

// EncodeRouting writes rc as an opaque header value (base64url of its
// protobuf form) for the X-Griddle-Routing header that carries it through a
// handler to its outbound calls. Empty for a nil or empty rc.
func EncodeRouting(rc *Routing) string {
	if rc == nil || (rc.StickyKey == "" && len(rc.Pins) == 0 && len(rc.Experiments) == 0) {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
	if err != nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeRouting reads a value written by EncodeRouting; "" gives an empty
// context.
func DecodeRouting(s string) (*Routing, error) {
	rc := &Routing{}
	if s == "" {
		return rc, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return rc, fmt.Errorf("wire: routing header: %w", err)
	}
	if err := proto.Unmarshal(b, rc); err != nil {
		return &Routing{}, fmt.Errorf("wire: routing header: %w", err)
	}
	return rc, nil
}
