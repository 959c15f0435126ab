package plugins_test

import (
	"io"
	"net/http"

	"github.com/griddle-mesh/griddle/plugins"
)

// A handler's whole main: routes on a ServeMux, then Serve.
func Example() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /profiles/{id}/greeting", func(w http.ResponseWriter, r *http.Request) {
		// Build outbound requests from r.Context(): the deadline, trace
		// and routing context travel with it.
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://hello/hello/greet?name=ada", nil)
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		resp, err := plugins.Mesh(r.Context()).Client().Do(req)
		if err != nil {
			http.Error(w, "hello unavailable", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(w, resp.Body)
	})
	if false { // Serve does not return; a real main calls it unconditionally.
		plugins.Serve(mux)
	}
}
