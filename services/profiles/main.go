// Command profiles is an example Griddle handler: an in-memory profile store
// that calls the hello service through the mesh.
//
//	GET /profiles/{id}            the profile as JSON, or 404
//	PUT /profiles/{id}            replace it from a JSON body; 400 on a bad body
//	GET /profiles/{id}/greeting   asks hello to greet the profile's name
package main

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/griddle-mesh/griddle/plugins"
)

// seedProfiles is how many profiles (ids 1..seedProfiles, named
// "user-<id>") the store starts with.
const seedProfiles = 1000

// maxBody bounds a PUT body.
const maxBody = 64 << 10

// maxNameLen bounds a profile name in bytes.
const maxNameLen = 200

func main() {
	plugins.Serve(newServer(seedProfiles).routes())
}

// Profile is the stored and served representation of a user.
type Profile struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Bio  string `json:"bio,omitempty"`
}

// server holds the profiles. Safe for concurrent use.
type server struct {
	mu       sync.RWMutex
	profiles map[int64]Profile
}

func newServer(seed int) *server {
	s := &server{profiles: make(map[int64]Profile, seed)}
	for id := int64(1); id <= int64(seed); id++ {
		s.profiles[id] = Profile{ID: id, Name: "user-" + strconv.FormatInt(id, 10)}
	}
	return s
}

func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /profiles/{id}", s.get)
	mux.HandleFunc("PUT /profiles/{id}", s.put)
	mux.HandleFunc("GET /profiles/{id}/greeting", s.greeting)
	return mux
}

func (s *server) lookup(w http.ResponseWriter, r *http.Request) (Profile, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "id: want a positive integer")
		return Profile{}, false
	}
	s.mu.RLock()
	p, ok := s.profiles[id]
	s.mu.RUnlock()
	if !ok {
		writeError(w, http.StatusNotFound, "no such profile")
		return Profile{}, false
	}
	return p, true
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.lookup(w, r); ok {
		writeJSON(w, http.StatusOK, p)
	}
}

func (s *server) put(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "id: want a positive integer")
		return
	}
	var in struct {
		Name string `json:"name"`
		Bio  string `json:"bio"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body too large")
			return
		}
		writeError(w, http.StatusBadRequest, "body: want a JSON object {\"name\", \"bio\"}")
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: want a single JSON object")
		return
	}
	if in.Name == "" || len(in.Name) > maxNameLen {
		writeError(w, http.StatusBadRequest, "name: want 1 to 200 bytes")
		return
	}
	p := Profile{ID: id, Name: in.Name, Bio: in.Bio}
	s.mu.Lock()
	s.profiles[id] = p
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, p)
}

// greeting is the reply of GET /profiles/{id}/greeting.
type greeting struct {
	Greeting         string `json:"greeting"`
	HelloSawDeadline string `json:"helloSawDeadline"`
	MyDeadline       string `json:"myDeadline"`
	// HelloVersion is the version of hello that answered, as its sidecar
	// reports it ("" outside the mesh).
	HelloVersion string `json:"helloVersion,omitempty"`
}

func (s *server) greeting(w http.ResponseWriter, r *http.Request) {
	p, ok := s.lookup(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	u := "http://hello/hello/greet?name=" + url.QueryEscape(p.Name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		slog.ErrorContext(ctx, "greeting: build request", "error", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	resp, err := plugins.Mesh(ctx).Client().Do(req)
	if err != nil {
		slog.ErrorContext(ctx, "greeting: call hello", "error", err, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusBadGateway, "hello service unavailable")
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil || resp.StatusCode != http.StatusOK {
		slog.ErrorContext(ctx, "greeting: hello replied badly", "status", resp.StatusCode, "error", err, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusBadGateway, "hello service failed")
		return
	}
	g := greeting{
		Greeting:         string(body),
		HelloSawDeadline: resp.Header.Get("X-Seen-Deadline"),
		MyDeadline:       "none",
		HelloVersion:     resp.Header.Get(plugins.HeaderVersion),
	}
	if d, ok := ctx.Deadline(); ok {
		g.MyDeadline = plugins.FormatDeadline(d)
	}
	writeJSON(w, http.StatusOK, g)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
