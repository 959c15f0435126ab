// Command profiles is an example Griddle handler: the users of a small
// dating site, kept in the mesh's store, and a greeting that calls the
// hello service through the mesh.
//
//	GET  /profiles/{id}            the profile as JSON (one uncached store read), or 404
//	PUT  /profiles/{id}            create (201) or replace (200) it from a JSON body
//	POST /profiles/                bulk import: a JSON array of 1 to 1,000 profiles with
//	                               their ids, in one transaction → {"imported": N}
//	GET  /profiles/{id}/greeting   asks hello to greet the profile's name
//
// Keys in the service's key space:
//
//	profile/<id, decimal>  → the profile as served: JSON and a newline
//
// Errors are answered as {"error": "..."} with a fixed message; the cause
// goes to the log.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/griddle-mesh/griddle/plugins"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// Limits of a request and of a profile's fields (in bytes).
const (
	maxBody     = 64 << 10 // PUT body
	maxBulkBody = 4 << 20  // POST /profiles/ body
	maxBulk     = 1000     // profiles in one bulk import
	maxNameLen  = 200
	maxBioLen   = 2000
	maxCityLen  = 100
)

func main() {
	plugins.Serve(routes())
}

func routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /profiles/{id}", get)
	mux.HandleFunc("PUT /profiles/{id}", put)
	mux.HandleFunc("POST /profiles/{$}", bulkImport)
	mux.HandleFunc("GET /profiles/{id}/greeting", greet)
	return mux
}

// Profile is the stored and served representation of a user.
type Profile struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Bio  string `json:"bio,omitempty"`
	City string `json:"city,omitempty"`
}

// fields is what a client may set on a profile.
type fields struct {
	Name string `json:"name"`
	Bio  string `json:"bio"`
	City string `json:"city"`
}

// validate returns the message for the first invalid field, or "".
func (f fields) validate() string {
	switch {
	case f.Name == "" || len(f.Name) > maxNameLen || !utf8.ValidString(f.Name):
		return fmt.Sprintf("name: want 1 to %d bytes", maxNameLen)
	case len(f.Bio) > maxBioLen || !utf8.ValidString(f.Bio):
		return fmt.Sprintf("bio: want at most %d bytes", maxBioLen)
	case len(f.City) > maxCityLen || !utf8.ValidString(f.City):
		return fmt.Sprintf("city: want at most %d bytes", maxCityLen)
	}
	return ""
}

// key is the store key of profile id.
func key(id int64) []byte { return strconv.AppendInt([]byte("profile/"), id, 10) }

// encode is the stored and served form of p.
func encode(p Profile) ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// parseID reads the {id} path value; it answers 400 and returns false when
// it is not a positive integer.
func parseID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "id: want a positive integer")
		return 0, false
	}
	return id, true
}

// load reads the stored profile {id}: its JSON, or nil when there is none.
// It answers the error (400, 503) itself and returns false then.
func load(w http.ResponseWriter, r *http.Request) (int64, []byte, bool) {
	id, ok := parseID(w, r)
	if !ok {
		return 0, nil, false
	}
	ctx := r.Context()
	v, err := store.Get(ctx, plugins.Mesh(ctx).Store(), key(id)) // one round trip: the uncached read
	if err != nil {
		slog.ErrorContext(ctx, "profiles: read", "id", id, "error", err, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return 0, nil, false
	}
	return id, v, true
}

func get(w http.ResponseWriter, r *http.Request) {
	_, v, ok := load(w, r)
	switch {
	case !ok:
	case v == nil:
		writeError(w, http.StatusNotFound, "no such profile")
	default:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(v)
	}
}

func put(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(w, r)
	if !ok {
		return
	}
	var in fields
	if !decode(w, r, maxBody, &in, `body: want a JSON object {"name", "bio", "city"}`) {
		return
	}
	if msg := in.validate(); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	p := Profile{ID: id, Name: in.Name, Bio: in.Bio, City: in.City}
	v, err := encode(p)
	if err != nil {
		internalError(w, r, "profiles: encode", err)
		return
	}
	ctx := r.Context()
	var created bool
	err = plugins.Mesh(ctx).Store().Transact(ctx, func(tx store.Tx) error {
		old, err := tx.Get(key(id))
		if err != nil {
			return err
		}
		created = old == nil
		return tx.Set(key(id), v)
	})
	if err != nil {
		slog.ErrorContext(ctx, "profiles: write", "id", id, "error", err, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, p)
}

// bulkImport writes up to maxBulk profiles in one transaction: all or none.
func bulkImport(w http.ResponseWriter, r *http.Request) {
	var in []struct {
		ID int64 `json:"id"`
		fields
	}
	if !decode(w, r, maxBulkBody, &in, `body: want a JSON array of {"id", "name", "bio", "city"}`) {
		return
	}
	if len(in) == 0 || len(in) > maxBulk {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body: want 1 to %d profiles", maxBulk))
		return
	}
	keys := make([][]byte, len(in))
	values := make([][]byte, len(in))
	for i, p := range in {
		if p.ID <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("[%d].id: want a positive integer", i))
			return
		}
		if msg := p.validate(); msg != "" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("[%d].%s", i, msg))
			return
		}
		v, err := encode(Profile{ID: p.ID, Name: p.Name, Bio: p.Bio, City: p.City})
		if err != nil {
			internalError(w, r, "profiles: encode", err)
			return
		}
		keys[i], values[i] = key(p.ID), v
	}
	ctx := r.Context()
	err := plugins.Mesh(ctx).Store().Transact(ctx, func(tx store.Tx) error {
		for i := range keys {
			if err := tx.Set(keys[i], values[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, store.ErrTransactionLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "import too large for one transaction: send fewer profiles")
		return
	}
	if err != nil {
		slog.ErrorContext(ctx, "profiles: bulk import", "profiles", len(in), "error", err, "request_id", plugins.RequestID(ctx))
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"imported": len(in)})
}

// decode reads one JSON value of at most limit bytes from r's body into v,
// rejecting unknown fields. It answers 413 or 400 (with badMsg) itself and
// returns false then.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any, badMsg string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body too large")
			return false
		}
		writeError(w, http.StatusBadRequest, badMsg)
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body too large")
			return false
		}
		writeError(w, http.StatusBadRequest, "body: want a single JSON value")
		return false
	}
	return true
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

func greet(w http.ResponseWriter, r *http.Request) {
	_, v, ok := load(w, r)
	if !ok {
		return
	}
	if v == nil {
		writeError(w, http.StatusNotFound, "no such profile")
		return
	}
	var p Profile
	if err := json.Unmarshal(v, &p); err != nil {
		internalError(w, r, "greeting: stored profile", err)
		return
	}
	ctx := r.Context()
	u := "http://hello/hello/greet?name=" + url.QueryEscape(p.Name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		internalError(w, r, "greeting: build request", err)
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

func internalError(w http.ResponseWriter, r *http.Request, msg string, err error) {
	slog.ErrorContext(r.Context(), msg, "error", err, "request_id", plugins.RequestID(r.Context()))
	writeError(w, http.StatusInternalServerError, "internal error")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
