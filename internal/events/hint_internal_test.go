package events

import "testing"

func TestHintRoundTrip(t *testing.T) {
	prefix, seq, ok := parseHint(hint("messages", "message.sent", 42))
	if !ok || prefix != string(hintPrefix("messages", "message.sent")) || seq != 42 {
		t.Errorf("got %q %d %v, want the prefix, 42, true", prefix, seq, ok)
	}
	for _, bad := range []string{"", "x", "a\x00b\x00", "a\x00b\x00-1", "a\x00b\x00zz"} {
		if _, _, ok := parseHint([]byte(bad)); ok {
			t.Errorf("parseHint(%q): got ok, want not ok", bad)
		}
	}
}

// FuzzDecodeEvent: the decoder never panics, errors wrap ErrCorrupt, and what
// it accepts re-encodes to something it decodes the same way.
