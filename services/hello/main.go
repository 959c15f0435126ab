// Command hello is an example Griddle handler used by the SDK's tests and
// as a target for other services' outbound calls.
//
//	GET  /hello/greet?name=X   200 "hello, X" ("<greeting>, X" with -greeting); X-Seen-Deadline: ctx
//	                           deadline (Unix ns) or "none"; 500 for a share of requests with -fail-rate
//	*    /hello/echo           echoes body, Content-Type, X-Test-* headers, method, query, path
//	GET  /hello/sleep?ms=N     returns after N ms or when the request is cancelled
//	GET  /hello/pid            the process id
//	GET  /hello/status?code=N  replies with status N
//
// and the streaming endpoints of stream.go.
package main

import (
	"flag"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/griddle-mesh/griddle/plugins"
)

func main() {
	failRate := flag.Float64("fail-rate", 0, "share of greetings answered with 500, to rehearse a bad release (0 to 1)")
	greeting := flag.String("greeting", "hello", "the word greetings start with (griddle up --demo's v2 says hi)")
	flag.Parse()
	plugins.Serve(newMux(*failRate, *greeting))
}

func newMux(failRate float64, greeting string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/greet", func(w http.ResponseWriter, r *http.Request) {
		if failRate > 0 && rand.Float64() < failRate {
			http.Error(w, "failing on purpose (-fail-rate)", http.StatusInternalServerError)
			return
		}
		greet(w, r, greeting)
	})
	mux.HandleFunc("/hello/echo", echo)
	mux.HandleFunc("GET /hello/sleep", sleep)
	mux.HandleFunc("GET /hello/pid", pid)
	mux.HandleFunc("GET /hello/status", status)
	streamRoutes(mux)
	return mux
}

func greet(w http.ResponseWriter, r *http.Request, greeting string) {
	seen := "none"
	if d, ok := r.Context().Deadline(); ok {
		seen = strconv.FormatInt(d.UnixNano(), 10)
	}
	w.Header().Set("X-Seen-Deadline", seen)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, greeting+", "+r.URL.Query().Get("name"))
}

func echo(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	for k, vs := range r.Header {
		if strings.HasPrefix(k, "X-Test-") {
			h[k] = append([]string(nil), vs...)
		}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	} else {
		h["Content-Type"] = nil // no sniffing
	}
	h.Set("X-Echo-Method", r.Method)
	h.Set("X-Echo-Query", r.URL.RawQuery)
	h.Set("X-Echo-Path", r.URL.EscapedPath())
	// HTTP/1.x: read the whole body before answering; once the answer's
	// headers are flushed, net/http may close the request body.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEcho))
	if err != nil {
		http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// maxEcho bounds the bodies /hello/echo sends back.
const maxEcho = 16 << 20

func sleep(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 {
		http.Error(w, "ms: want a non-negative integer", http.StatusBadRequest)
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func pid(w http.ResponseWriter, _ *http.Request) {
	io.WriteString(w, strconv.Itoa(os.Getpid()))
}

func status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.URL.Query().Get("code"))
	if err != nil || code < 200 || code > 999 {
		http.Error(w, "code: want an HTTP status", http.StatusBadRequest)
		return
	}
	w.WriteHeader(code)
}
