package wire_test

import (
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/wire"
)

func TestGRPCTimeout(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true}, {"250m", 250 * time.Millisecond, true}, {"99999999u", 99999999 * time.Microsecond, true},
		{"2H", 2 * time.Hour, true}, {"5n", 5, true}, {"S", 0, false}, {"123456789S", 0, false}, {"10x", 0, false}, {"-1S", 0, false},
	} {
		got, ok := wire.ParseGRPCTimeout(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseGRPCTimeout(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	for _, d := range []time.Duration{time.Nanosecond, 1500 * time.Microsecond, 3 * time.Second, 2 * time.Hour, 1000 * time.Hour} {
		s := wire.FormatGRPCTimeout(d)
		got, ok := wire.ParseGRPCTimeout(s)
		if !ok || got > d || d-got > d/1e6+time.Nanosecond && d < time.Minute {
			t.Errorf("FormatGRPCTimeout(%v) = %q, read back as %v", d, s, got)
		}
	}
}

func TestGRPCStatus(t *testing.T) {
	h := []*wire.Header{{Name: "Content-Type", Values: []string{"application/grpc"}}}
	tr := []*wire.Header{{Name: "Grpc-Status", Values: []string{"14"}}}
	r := &wire.Reply{Status: 200, Headers: h, Trailers: tr}
	if got := r.FigureStatus(); got != 503 {
		t.Errorf("UNAVAILABLE in a 200: figure %d, want 503", got)
	}
	r.Trailers = nil
	r.Headers = append(h, &wire.Header{Name: "Grpc-Status", Values: []string{"0"}})
	if got := r.FigureStatus(); got != 200 {
		t.Errorf("trailers-only OK: figure %d, want 200", got)
	}
	if got := (&wire.Reply{Status: 404}).FigureStatus(); got != 404 {
		t.Errorf("plain HTTP: figure %d, want 404", got)
	}
}
