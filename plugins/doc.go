// Package plugins is the SDK a service team imports to run its handler in
// Griddle. A team writes a plain net/http handler; its whole main is
//
//	func main() {
//		mux := http.NewServeMux()
//		mux.HandleFunc("GET /profiles/{id}", getProfile)
//		plugins.Serve(mux)
//	}
//
// The sidecar starts the binary (through hashicorp/go-plugin, which supplies
// the handshake, health checks and log collection) and forwards requests to
// it as multiplexed frames on a few long-lived connections (shared-memory
// pipes offered on its unix socket), served to the handler as net/http
// serves: repeated headers, streaming bodies, Flush, trailers, cancellation.
//
// # Incoming requests
//
// The sidecar sets the headers named by the Header* constants. Serve gives
// each request a context whose deadline is the one in HeaderDeadline and
// which remembers the request id, trace context and routing context so that
// outbound calls carry them along.
//
// # Outbound calls
//
// Mesh(ctx).Client() is an *http.Client whose requests to
// http://<service>/<path> go through the sidecar (routing rules, retries,
// deadline propagation). Build every outbound request from the incoming
// request's context, otherwise nothing is propagated:
//
//	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://hello/hello/greet?name=ada", nil)
//	resp, err := plugins.Mesh(r.Context()).Client().Do(req)
//
// # Testing
//
// Package plugintest builds a handler's main package and runs it over the
// real plugin protocol inside go test.
package plugins
