package routing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// CookiePin is the cookie that may carry a signed pin token (see
// SignPins), for browsers that cannot set HeaderPin.
const CookiePin = "griddle-pin"

// Errors of VerifyPins.
var (
	// ErrPinToken means a pin token is malformed or its signature is not
	// one of the keys'.
	ErrPinToken = errors.New("routing: pin token not signed by a known key")
	// ErrPinExpired means a pin token's signature holds but its expiry has passed.
	ErrPinExpired = errors.New("routing: pin token expired")
)

// MinPinKeyBytes is the shortest HMAC key SignPins and VerifyPins accept.
const MinPinKeyBytes = 16

// SignPins returns a pin token for pins ("feed=v2,profiles=v3", as in
// HeaderPin) valid until expires, signed with key:
//
//	feed=v2,profiles=v3|1767225600|<base64url HMAC-SHA256(key, "feed=v2,profiles=v3|1767225600")>
//
// (pins, expiry in Unix seconds, signature: bytes valid in a header and
// in a cookie value).
//
// A token goes in HeaderPin or in the CookiePin cookie; an edge given the
// key honours it from any client until it expires. Pins are normalised
// (ParsePins, sorted by service) so that the signed text is what is honoured.
func SignPins(key []byte, pins string, expires time.Time) (string, error) {
	if len(key) < MinPinKeyBytes {
		return "", fmt.Errorf("routing: pin key: %d bytes, want at least %d", len(key), MinPinKeyBytes)
	}
	p := ParsePins(pins)
	if len(p) == 0 {
		return "", fmt.Errorf("routing: pins %q: want service=version[,service=version...]", pins)
	}
	body := formatPins(p) + "|" + strconv.FormatInt(expires.Unix(), 10)
	return body + "|" + pinMAC(key, body), nil
}

// VerifyPins checks a token made by SignPins against keys (any one may
// have signed it, so keys can be rotated) and returns its pins. The
// signature is compared in constant time; an expired token is refused
// with ErrPinExpired, any other failure with ErrPinToken.
func VerifyPins(keys [][]byte, token string, now time.Time) (map[string]string, error) {
	i := strings.LastIndexByte(token, '|')
	if i < 0 || i == len(token)-1 {
		return nil, ErrPinToken
	}
	body, sig := token[:i], token[i+1:]
	if sig == "" {
		return nil, ErrPinToken
	}
	valid := false
	for _, k := range keys {
		if len(k) >= MinPinKeyBytes && hmac.Equal([]byte(pinMAC(k, body)), []byte(sig)) {
			valid = true
		}
	}
	if !valid {
		return nil, ErrPinToken
	}
	pins, exp, ok := strings.Cut(body, "|")
	if !ok {
		return nil, ErrPinToken
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return nil, ErrPinToken
	}
	if !now.Before(time.Unix(sec, 0)) {
		return nil, ErrPinExpired
	}
	p := ParsePins(pins)
	if len(p) == 0 {
		return nil, ErrPinToken
	}
	return p, nil
}

// IsPinToken reports whether a HeaderPin value is a signed token rather
// than plain pins.
func IsPinToken(v string) bool { return strings.Contains(v, "|") }

func pinMAC(key []byte, body string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// formatPins writes pins as "a=v1,b=v2", sorted by service.
func formatPins(p map[string]string) string {
	var sb strings.Builder
	for i, svc := range sortedKeys(p) {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(svc)
		sb.WriteByte('=')
		sb.WriteString(p[svc])
	}
	return sb.String()
}
