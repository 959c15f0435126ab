package routing_test

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/routing"
)

func TestSignedPins(t *testing.T) {
	key := []byte("0123456789abcdef0123")
	other := []byte("fedcba9876543210fedc")
	now := time.Unix(1_800_000_000, 0)
	tok, err := routing.SignPins(key, " profiles=v3, feed=v2 ", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "feed=v2,profiles=v3|1800003600|") || !routing.IsPinToken(tok) {
		t.Fatalf("token %q: want the normalised pins, the expiry and a signature", tok)
	}
	got, err := routing.VerifyPins([][]byte{other, key}, tok, now)
	if want := map[string]string{"feed": "v2", "profiles": "v3"}; err != nil || !maps.Equal(got, want) {
		t.Fatalf("VerifyPins = %v, %v; want %v", got, err, want)
	}
	body, sig := tok[:strings.LastIndexByte(tok, '|')], tok[strings.LastIndexByte(tok, '|')+1:]
	for name, tt := range map[string]struct {
		keys  [][]byte
		token string
		want  error
	}{
		"other key":            {[][]byte{other}, tok, routing.ErrPinToken},
		"no key":               {nil, tok, routing.ErrPinToken},
		"short key":            {[][]byte{key[:8]}, tok, routing.ErrPinToken},
		"pins changed":         {[][]byte{key}, strings.Replace(tok, "feed=v2", "feed=v9", 1), routing.ErrPinToken},
		"expiry moved":         {[][]byte{key}, strings.Replace(tok, "1800003600", "1900003600", 1), routing.ErrPinToken},
		"no signature":         {[][]byte{key}, body, routing.ErrPinToken},
		"empty signature":      {[][]byte{key}, body + "|", routing.ErrPinToken},
		"signature truncated":  {[][]byte{key}, body + "|" + sig[:10], routing.ErrPinToken},
		"expiry not a number":  {[][]byte{key}, "feed=v2|soon|" + sig, routing.ErrPinToken},
		"plain pins":           {[][]byte{key}, "feed=v2", routing.ErrPinToken},
		"expired":              {[][]byte{key}, mustSign(t, key, "feed=v2", now.Add(-time.Second)), routing.ErrPinExpired},
		"expires this instant": {[][]byte{key}, mustSign(t, key, "feed=v2", now), routing.ErrPinExpired},
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := routing.VerifyPins(tt.keys, tt.token, now); !errors.Is(err, tt.want) || got != nil {
				t.Errorf("VerifyPins(%q) = %v, %v; want nil, %v", tt.token, got, err, tt.want)
			}
		})
	}
	if _, err := routing.SignPins(key[:15], "feed=v2", now); err == nil {
		t.Error("SignPins accepted a 15-byte key")
	}
	if _, err := routing.SignPins(key, "garbage", now); err == nil {
		t.Error("SignPins accepted pins without service=version")
	}
}

func mustSign(t *testing.T, key []byte, pins string, exp time.Time) string {
	t.Helper()
	tok, err := routing.SignPins(key, pins, exp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// FuzzVerifyPins: no input panics; a token verifies with pins or fails
// without any.
func FuzzVerifyPins(f *testing.F) {
	key := []byte("0123456789abcdef")
	tok, _ := routing.SignPins(key, "feed=v2", time.Unix(2_000_000_000, 0))
	f.Add(tok)
	f.Add("feed=v2|1|")
	f.Add("||")
	f.Fuzz(func(t *testing.T, s string) {
		pins, err := routing.VerifyPins([][]byte{key}, s, time.Unix(1_000_000_000, 0))
		if (err == nil) != (len(pins) > 0) {
			t.Fatalf("VerifyPins(%q) = %v, %v", s, pins, err)
		}
	})
}
