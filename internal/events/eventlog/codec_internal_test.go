package eventlog

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestEventRoundTrip(t *testing.T) {
	for _, ev := range []Event{
		{Seq: 1},
		{Publisher: "messages", Topic: "message.sent", Seq: 1 << 40, ID: "abc", Time: time.Unix(0, 1_700_000_000_123_456_789),
			ContentType: "application/json", Body: []byte(`{"to":"ann"}`)},
		{Seq: 2, Time: time.Unix(-5, 0), Body: []byte{0, 0xff}},
	} {
		got, err := decodeEvent(encodeEvent(ev))
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", ev, err)
		}
		if got.Publisher != ev.Publisher || got.Topic != ev.Topic || got.Seq != ev.Seq || got.ID != ev.ID ||
			!got.Time.Equal(ev.Time) || got.ContentType != ev.ContentType || !bytes.Equal(got.Body, ev.Body) {
			t.Errorf("got %+v, want %+v", got, ev)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(encodeEvent(Event{Publisher: "p", Topic: "t", Seq: 3, ID: "i", Time: time.Unix(1, 2), ContentType: "c", Body: []byte("b")}))
	f.Add([]byte{})
	f.Add([]byte{0x18, 0x01, 0x40, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeEvent(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := decodeEvent(encodeEvent(ev))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.Seq != ev.Seq || again.ID != ev.ID || !again.Time.Equal(ev.Time) || !bytes.Equal(again.Body, ev.Body) {
			t.Fatalf("round trip changed %+v into %+v", ev, again)
		}
	})
}
