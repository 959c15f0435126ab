package wire

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestRequestRoundTrip(t *testing.T) {
	r := httptest.NewRequest("POST", "http://edge/api/a%2Fb?x=1&x=2&y=", bytes.NewReader(nil))
	r.Header["X-Multi"] = []string{"one", "two", "three"}
	r.Header.Set("Connection", "keep-alive, X-Private")
	r.Header.Set("X-Private", "secret")
	r.Header.Set("Transfer-Encoding", "chunked")
	body := []byte("hello")

	req := NewRequest(r, "svc", body)
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var got Request
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.RequestURI() != "/api/a%2Fb?x=1&x=2&y=" {
		t.Errorf("RequestURI = %q, want %q", got.RequestURI(), "/api/a%2Fb?x=1&x=2&y=")
	}
	h := http.Header{}
	DecodeHeader(h, got.GetHeaders())
	if !slices.Equal(h["X-Multi"], []string{"one", "two", "three"}) {
		t.Errorf("X-Multi = %q, want one, two, three in order", h["X-Multi"])
	}
	for _, name := range []string{"Connection", "X-Private", "Transfer-Encoding"} {
		if _, ok := h[name]; ok {
			t.Errorf("hop-by-hop header %s was forwarded", name)
		}
	}
	if !bytes.Equal(got.GetBody(), body) || got.GetService() != "svc" || got.GetMethod() != "POST" {
		t.Errorf("got %v, want body %q service svc method POST", &got, body)
	}
}

func TestReplyWriteHTTP(t *testing.T) {
	tests := []struct {
		name       string
		reply      *Reply
		wantStatus int
	}{
		{"ok", &Reply{Status: 201, Body: []byte("x"), Headers: []*Header{{Name: "Set-Cookie", Values: []string{"a=1", "b=2"}}}}, 201},
		{"no status", &Reply{}, http.StatusBadGateway},
		{"absurd status", &Reply{Status: 42}, http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if err := tt.reply.WriteHTTP(rec); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if !bytes.Equal(rec.Body.Bytes(), tt.reply.GetBody()) {
				t.Errorf("body = %q, want %q", rec.Body.Bytes(), tt.reply.GetBody())
			}
			if len(tt.reply.GetHeaders()) > 0 && !slices.Equal(rec.Header()["Set-Cookie"], []string{"a=1", "b=2"}) {
				t.Errorf("Set-Cookie = %q, want both values in order", rec.Header()["Set-Cookie"])
			}
		})
	}
}

// FuzzDecode feeds arbitrary bytes to the decoders a sidecar and an edge run
// on what arrives from the network: they must never panic.
func FuzzDecode(f *testing.F) {
	seed, _ := proto.Marshal(&Request{Service: "s", Method: "GET", Path: "/", Headers: []*Header{{Name: "a", Values: []string{"b"}}}})
	f.Add(seed)
	rep, _ := proto.Marshal(&Reply{Status: 200, Body: []byte("x")})
	f.Add(rep)
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req Request
		if proto.Unmarshal(b, &req) == nil {
			_ = req.RequestURI()
			DecodeHeader(http.Header{}, req.GetHeaders())
		}
		var reply Reply
		if proto.Unmarshal(b, &reply) == nil {
			_ = reply.WriteHTTP(httptest.NewRecorder())
		}
	})
}

func TestRoutingHeaderRoundTrip(t *testing.T) {
	rc := &Routing{StickyKey: "u1", Pins: map[string]string{"feed": "v2"}, Experiments: map[string]string{"ranking": "v1"}}
	got, err := DecodeRouting(EncodeRouting(rc))
	if err != nil || !proto.Equal(got, rc) {
		t.Fatalf("DecodeRouting(EncodeRouting(%v)) = %v, %v", rc, got, err)
	}
	if EncodeRouting(&Routing{}) != "" {
		t.Error("an empty context must encode to nothing")
	}
	if _, err := DecodeRouting("!!!"); err == nil {
		t.Error("DecodeRouting accepted garbage")
	}
}

func TestHopHeadersLeftOut(t *testing.T) {
	h := http.Header{"Connection": {"close, X-Private"}, "X-Private": {"1"}, "Keep-Alive": {"5"}, "X-Kept": {"2"}}
	out := http.Header{}
	DecodeHeader(out, EncodeHeader(h))
	if len(out) != 1 || out.Get("X-Kept") != "2" {
		t.Errorf("after EncodeHeader: %v, want only X-Kept", out)
	}
}
