package plugins

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/griddle-mesh/griddle/internal/pluginproto"
	"github.com/griddle-mesh/griddle/plugins/store"
)

// Errors returned by the Mesh client. Calls fail with an error wrapping one
// of them; check with errors.Is.
var (
	// ErrNoMesh reports an outbound call from a process that has no sidecar
	// to send it through: not started by a sidecar, or GRIDDLE_MESH_SOCKET
	// unset.
	ErrNoMesh = errors.New("plugins: no mesh: outbound calls need a sidecar (GRIDDLE_MESH_SOCKET is unset)")
	// ErrMeshURL reports an outbound URL that is not http://<service>/<path>.
	ErrMeshURL = errors.New("plugins: mesh URL must be http://<service>/<path>")
)

// meshMaxConnsPerService bounds idle connections to the sidecar per target
// service.
const meshMaxConnsPerService = 64

// MeshAPI is a handler's access to the mesh: calls to other services now;
// the state store and event publishing belong here too. It is safe for
// concurrent use and lives as long as the process.
type MeshAPI struct {
	client  *http.Client
	store   store.Store
	service string // the service this handler serves, as events name their publisher
}

// Mesh returns the mesh of the process serving the request that ctx belongs
// to. ctx must come from a request served by Serve (r.Context() or a context
// derived from it); otherwise the returned MeshAPI is disconnected and every
// call fails with ErrNoMesh.
func Mesh(ctx context.Context) *MeshAPI {
	if in, ok := ctx.Value(inboundKey{}).(*inbound); ok {
		return in.mesh
	}
	return newMesh("")
}

// Client returns the *http.Client for calls to other services. A request to
// http://<service>/<path> goes to the sidecar, which routes it to an
// instance of <service>. The client adds, from the request's own context:
// HeaderDeadline from ctx.Deadline(), and from the incoming request that ctx
// belongs to, the trace context, the routing context and HeaderParentID.
// Build requests with http.NewRequestWithContext(r.Context(), ...) so that
// all of this is carried along. Callers own the response body as usual.
func (m *MeshAPI) Client() *http.Client { return m.client }

// newMesh returns the mesh of a process whose sidecar serves outbound calls
// on the unix socket at path; "" means no sidecar.
func newMesh(path string) *MeshAPI {
	t := &meshTransport{}
	if path != "" {
		d := net.Dialer{Timeout: 5 * time.Second}
		t.base = &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: meshMaxConnsPerService,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}
	}
	c := &http.Client{Transport: t}
	return &MeshAPI{client: c, store: store.New(c), service: os.Getenv(pluginproto.EnvService)}
}

// Store returns the state store of this handler's service: serializable
// transactions over its own key space, held by the sidecar. See package
// plugins/store.
func (m *MeshAPI) Store() store.Store { return m.store }

// meshTransport sends requests to the sidecar's mesh socket, adding the
// propagated headers. A nil base means no sidecar.
type meshTransport struct {
	base *http.Transport
}

func (t *meshTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.base == nil {
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
	if in, ok := ctx.Value(inboundKey{}).(*inbound); ok {
		setIf(out.Header, HeaderParentID, in.requestID)
		setIf(out.Header, HeaderTraceparent, in.traceparent)
		setIf(out.Header, HeaderTracestate, in.tracestate)
		setIf(out.Header, HeaderRouting, in.routing)
	}
	return t.base.RoundTrip(out)
}

func setIf(h http.Header, key, value string) {
	if value != "" {
		h[key] = []string{value}
	}
}

// closeBody honours the http.RoundTripper contract of closing the request
// body even when the request is not sent.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
