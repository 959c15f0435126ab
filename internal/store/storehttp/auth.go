package storehttp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/griddle-mesh/griddle/internal/meshtls"
	"github.com/griddle-mesh/griddle/internal/store"
)

// ErrUnauthenticated is a request to a Server with WithAuth that carries
// no credentials it knows (401).
var ErrUnauthenticated = errors.New("storehttp: no valid credentials: send \"Authorization: Bearer TOKEN\" with the service's token (griddle store --tokens, griddle sidecar --store-token-file) or a client certificate with the service's identity (griddle ca issue)")

// Authenticator names the service a request speaks for; ok is false for a
// request without valid credentials.
type Authenticator func(r *http.Request) (service string, ok bool)

// WithAuth makes the Server answer only requests auth names a service for,
// and confines each to that service: its own key space (the one its URL
// names, or OwnSpace) to read and write; another service's only to read
// keys under shared (the event logs subscribers read, events.KeyPrefix;
// nil: nothing); a transaction only on the requests of the service that
// began it.
func WithAuth(auth Authenticator, shared []byte) Option {
	return func(s *Server) { s.auth, s.shared = auth, bytes.Clone(shared) }
}

// WithMarks lets a caller of a Server with WithAuth set (to an empty
// value) and clear, in another service's key space, the keys under prefix
// whose last "/"-separated part is its own name: a subscriber's
// registration on the event log it follows (eventlog.RegistrationsPrefix),
// which the log's trims respect. Nothing else of that space can be
// written.
func WithMarks(prefix []byte) Option {
	return func(s *Server) { s.marks = bytes.Clone(prefix) }
}

type callerKey struct{}

// authenticate returns r with its caller, or answers 401 and returns nil.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) *http.Request {
	svc, ok := s.auth(r)
	if !ok || store.ValidSpace(svc) != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="griddle store"`)
		s.fail(w, ErrUnauthenticated)
		return nil
	}
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, svc))
}

// callerOf is the service a request was authenticated as ("": the Server
// has no WithAuth).
func callerOf(r *http.Request) string {
	svc, _ := r.Context().Value(callerKey{}).(string)
	return svc
}

// confined is the key space name as caller may use it.
func (s *Server) confined(caller, name string) (store.Store, error) {
	if name == OwnSpace || name == caller {
		return s.b.Space(caller)
	}
	st, err := s.b.Space(name)
	if err != nil {
		return nil, err
	}
	return sharedReads{st: st, prefix: s.shared, marks: s.marks, caller: caller}, nil
}

// errForeign is an operation on another service's key space that its
// caller may not make.
var errForeign = fmt.Errorf("%w: another service's key space; only its event log can be read", store.ErrSpace)

// sharedReads is another service's key space as a caller sees it: reads of
// keys under prefix, nothing else.
type sharedReads struct {
	st     store.Store
	prefix []byte
	marks  []byte // WithMarks
	caller string
}

func (v sharedReads) Transact(ctx context.Context, fn func(tx store.Tx) error) error {
	return v.st.Transact(ctx, func(tx store.Tx) error {
		return fn(sharedTx{sharedReadTx: sharedReadTx{tx, v.prefix}, tx: tx, marks: v.marks, caller: v.caller})
	})
}

func (v sharedReads) ReadTransact(ctx context.Context, fn func(tx store.ReadTx) error) error {
	return v.st.ReadTransact(ctx, func(tx store.ReadTx) error { return fn(sharedReadTx{tx, v.prefix}) })
}

type sharedReadTx struct {
	tx     store.ReadTx
	prefix []byte
}

func (t sharedReadTx) Get(key []byte) ([]byte, error) {
	if len(t.prefix) == 0 || !bytes.HasPrefix(key, t.prefix) {
		return nil, errForeign
	}
	return t.tx.Get(key)
}

func (t sharedReadTx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	if len(t.prefix) == 0 || !bytes.HasPrefix(begin, t.prefix) || len(end) == 0 || bytes.Compare(end, prefixEnd(t.prefix)) > 0 {
		return nil, errForeign
	}
	return t.tx.Range(begin, end, opts)
}

// sharedTx refuses every write but those of the caller's own marks.
type sharedTx struct {
	sharedReadTx
	tx     store.Tx
	marks  []byte
	caller string
}

// own reports whether key is one of the caller's marks.
func (t sharedTx) own(key []byte) bool {
	return len(t.marks) > 0 && t.caller != "" && bytes.HasPrefix(key, t.marks) &&
		bytes.HasSuffix(key, []byte("/"+t.caller)) && len(key) > len(t.marks)+len(t.caller)+1
}

func (t sharedTx) Set(key, value []byte) error {
	if len(value) != 0 || !t.own(key) {
		return errForeign
	}
	return t.tx.Set(key, nil)
}

func (t sharedTx) Clear(key []byte) error {
	if !t.own(key) {
		return errForeign
	}
	return t.tx.Clear(key)
}

func (sharedTx) ClearRange(_, _ []byte) error { return errForeign }
func (sharedTx) SetStamped(_, _ []byte) error { return errForeign }

// prefixEnd is the first key after every key that starts with p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Tokens are per-service bearer tokens: each opens one service's key
// space. They are compared by their SHA-256 digests, so a lookup takes
// the same time whatever a guess shares with a real token.
type Tokens struct {
	services map[[sha256.Size]byte]string
}

// ParseTokens reads a token file: one "SERVICE TOKEN" per line; empty
// lines and lines starting with # are skipped. Errors name the line.
func ParseTokens(text string) (*Tokens, error) {
	t := &Tokens{services: map[[sha256.Size]byte]string{}}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want SERVICE TOKEN", n)
		}
		if err := store.ValidSpace(f[0]); err != nil || f[0] == OwnSpace {
			return nil, fmt.Errorf("line %d: %q is not a service name", n, f[0])
		}
		if len(f[1]) < 16 {
			return nil, fmt.Errorf("line %d: the token of %s is shorter than 16 characters", n, f[0])
		}
		d := sha256.Sum256([]byte(f[1]))
		if _, dup := t.services[d]; dup {
			return nil, fmt.Errorf("line %d: a token given twice", n)
		}
		t.services[d] = f[0]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.services) == 0 {
		return nil, errors.New("no tokens")
	}
	return t, nil
}

// Authenticate is an Authenticator: the service of the request's
// "Authorization: Bearer TOKEN" (the scheme in any case).
func (t *Tokens) Authenticate(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	svc, ok := t.services[sha256.Sum256([]byte(strings.TrimSpace(tok)))]
	return svc, ok
}

// ClientCertificate is an Authenticator: the service of the workload
// identity in the request's verified TLS client certificate (a sidecar's,
// from `griddle ca issue`); an edge's does not count.
func ClientCertificate(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", false
	}
	id, ok := meshtls.IdentityOf(r.TLS.VerifiedChains[0][0])
	if !ok || id.IsEdge() {
		return "", false
	}
	return id.Service, true
}

// AnyOf tries each Authenticator in turn.
func AnyOf(auths ...Authenticator) Authenticator {
	return func(r *http.Request) (string, bool) {
		for _, a := range auths {
			if svc, ok := a(r); ok {
				return svc, true
			}
		}
		return "", false
	}
}
