package plugins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/pluginproto"
	istore "github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/internal/wire"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// Errors returned by the Mesh client. Calls fail with an error wrapping one
// of them; check with errors.Is.
var (
	// ErrNoMesh reports an outbound call from a process that has no sidecar
	// to send it through: run alone (GRIDDLE_STANDALONE) or outside Serve.
	ErrNoMesh = errors.New("plugins: no mesh: outbound calls need a sidecar")
	// ErrMeshURL reports an outbound URL that is not http://<service>/<path>.
	ErrMeshURL = errors.New("plugins: mesh URL must be http://<service>/<path>")
)

// MeshAPI is a handler's access to the mesh: calls to other services, the
// state store and event publishing, all through its sidecar. It is safe
// for concurrent use and lives as long as the process.
type MeshAPI struct {
	client  *http.Client
	store   store.Store
	service string   // the service this handler serves, as events name their publisher
	conns   *connSet // the connections from the sidecar; nil: no sidecar
}

// Mesh returns the mesh of the process serving the request that ctx belongs
// to. ctx must come from a request served by Serve (r.Context() or a context
// derived from it); otherwise the returned MeshAPI is disconnected and every
// call fails with ErrNoMesh.
func Mesh(ctx context.Context) *MeshAPI {
	if in, ok := ctx.Value(inboundKey{}).(*inbound); ok {
		return in.mesh
	}
	return newMesh(false)
}

// Client returns the *http.Client for calls to other services. A request to
// http://<service>/<path> goes to the sidecar, which routes it to an
// instance of <service>. The client adds, from the request's own context:
// HeaderDeadline from ctx.Deadline(), and from the incoming request that ctx
// belongs to, the trace context, the routing context and HeaderParentID.
// Build requests with http.NewRequestWithContext(r.Context(), ...) so that
// all of this is carried along. Callers own the response body as usual.
func (m *MeshAPI) Client() *http.Client { return m.client }

// newMesh returns the mesh of a process served by a sidecar (connected)
// or of one without (standalone, tests): there every call fails with
// ErrNoMesh.
func newMesh(connected bool) *MeshAPI {
	m := &MeshAPI{service: os.Getenv(pluginproto.EnvService)}
	if connected {
		m.conns = &connSet{}
	}
	m.client = &http.Client{Transport: &meshTransport{m: m}}
	m.store = newMeshStore(m)
	return m
}

// meshStore is the handler's store: one-key reads, range reads and
// commits as unary calls on the connection to the sidecar (one call each
// way; a transaction that only writes is one call, see storehttp.OneTrip),
// the rare transaction that reads a range after writing over HTTP through
// the sidecar, an operation per request.
type meshStore struct {
	*storehttp.OneTrip
	m *MeshAPI
}

var _ istore.Getter = (*meshStore)(nil)

func newMeshStore(m *MeshAPI) *meshStore {
	s := &meshStore{m: m}
	s.OneTrip = storehttp.NewOneTrip(s.call, store.New(m.client))
	return s
}

// call sends one store operation to the sidecar.
func (s *meshStore) call(ctx context.Context, op []byte) ([]byte, error) {
	c, err := s.m.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("plugins: store: %w", err)
	}
	b, err := hop.Unary(c, op, ctx.Done())
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("plugins: store: %w", err)
	}
	return b, nil
}

// conn is the connection a call made under ctx goes on: back on the one
// its request came on, or any open one.
func (m *MeshAPI) conn(ctx context.Context) (*hop.Conn, error) {
	if m.conns == nil {
		return nil, ErrNoMesh
	}
	if in, ok := ctx.Value(inboundKey{}).(*inbound); ok && in.conn != nil && in.conn.Err() == nil {
		return in.conn, nil
	}
	return m.conns.pick()
}

// inbound derives the context of a request the sidecar sent on s: what
// outbound calls inherit from it, and the connection they go back on.
func (m *MeshAPI) inbound(ctx context.Context, s *hop.Stream, env *wire.Request) context.Context {
	return &inbound{
		Context:     ctx,
		mesh:        m,
		conn:        s.Conn(),
		requestID:   env.GetId(),
		traceparent: env.GetTrace().GetTraceparent(),
		tracestate:  env.GetTrace().GetTracestate(),
		routing:     wire.EncodeRouting(env.GetRouting()),
	}
}

// Store returns the state store of this handler's service: serializable
// transactions over its own key space, held by the sidecar. See package
// plugins/store.
func (m *MeshAPI) Store() store.Store { return m.store }

// meshTransport sends requests to the sidecar, adding the propagated
// headers.
type meshTransport struct {
	m *MeshAPI
}

func (t *meshTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.m.conns == nil {
		closeBody(req)
		return nil, fmt.Errorf("plugins: call to %q: %w", req.URL.Host, ErrNoMesh)
	}
	if req.URL.Scheme != "http" || req.URL.Host == "" {
		closeBody(req)
		return nil, fmt.Errorf("plugins: %q: %w", req.URL.Redacted(), ErrMeshURL)
	}
	ctx := req.Context()
	out := req.Clone(ctx)
	if d, ok := ctx.Deadline(); ok {
		out.Header.Set(HeaderDeadline, FormatDeadline(d))
	}
	propagated(ctx, func(k, v string) { out.Header.Set(k, v) })
	conn, err := t.m.conn(ctx)
	if err != nil {
		closeBody(req)
		return nil, fmt.Errorf("plugins: call to %q: %w", req.URL.Host, err)
	}
	return hop.RoundTrip(conn, out, "")
}

// propagated calls set with each header an outbound call inherits from
// the incoming request ctx belongs to: its id, trace and routing context.
func propagated(ctx context.Context, set func(key, value string)) {
	in, ok := ctx.Value(inboundKey{}).(*inbound)
	if !ok {
		return
	}
	for _, kv := range [...][2]string{{HeaderParentID, in.requestID}, {HeaderTraceparent, in.traceparent},
		{HeaderTracestate, in.tracestate}, {HeaderRouting, in.routing}} {
		if kv[1] != "" {
			set(kv[0], kv[1])
		}
	}
}

// connSet is the connections the sidecar opened to this handler.
type connSet struct {
	next  atomic.Uint32
	mu    sync.Mutex
	conns []*hop.Conn
}

// ErrNotConnected reports a call made while the sidecar has no connection
// open to the handler (before the first, or after the last closed).
var ErrNotConnected = errors.New("plugins: the sidecar is not connected")

func (s *connSet) add(c *hop.Conn) {
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
}

// pick returns an open connection, dropping those that have closed.
func (s *connSet) pick() (*hop.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns = slices.DeleteFunc(s.conns, func(c *hop.Conn) bool { return c.Err() != nil })
	if len(s.conns) == 0 {
		return nil, ErrNotConnected
	}
	return s.conns[int(s.next.Add(1))%len(s.conns)], nil
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// closeBody honours the http.RoundTripper contract of closing the request
// body even when the request is not sent.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
