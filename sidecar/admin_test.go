package sidecar

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHandlerProfile: the admin address serves a CPU profile of the handler
// process (gzipped pprof), and refuses a length out of bounds.
func TestHandlerProfile(t *testing.T) {
	_, s := startPathOn(t, "inproc://admin-profile")
	admin := s.adminHandler()
	for _, c := range []struct {
		query  string
		status int
	}{{"?seconds=0", http.StatusBadRequest}, {"?seconds=x", http.StatusBadRequest}, {"?seconds=1", http.StatusOK}} {
		rec := httptest.NewRecorder()
		admin.ServeHTTP(rec, httptest.NewRequest("GET", "/debug/handler/profile"+c.query, nil))
		if rec.Code != c.status {
			t.Fatalf("%s: status %d, want %d: %s", c.query, rec.Code, c.status, rec.Body)
		}
		if c.status == http.StatusOK && !bytes.HasPrefix(rec.Body.Bytes(), []byte{0x1f, 0x8b}) {
			t.Fatalf("%s: %d bytes, not a gzipped profile", c.query, rec.Body.Len())
		}
	}
}
