package plugins

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// BenchmarkContextHandler measures what the SDK adds to each request in the
// handler process before the team's handler runs: the context with the
// mesh, the deadline and the inbound request's ids.
func BenchmarkContextHandler(b *testing.B) {
	h := &contextHandler{mesh: newMesh(false), h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Mesh(r.Context()) == nil || RequestID(r.Context()) == "" {
			b.Fatal("no mesh or request id")
		}
	})}
	r := httptest.NewRequest(http.MethodGet, "http://hello/hello/greet?name=x", http.NoBody)
	r.Header.Set(HeaderDeadline, strconv.FormatInt(time.Now().Add(time.Hour).UnixNano(), 10))
	r.Header.Set(HeaderRequestID, "0af7651916cd43dd")
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
