package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// The streaming endpoints: what a team's handler does with plain net/http,
// carried through the mesh as it is.
//
//	GET  /hello/drip?n=N&ms=M&size=S  N chunks of S bytes, one flushed every M ms
//	GET  /hello/events?n=N&ms=M       N server-sent events, one every M ms
//	GET  /hello/bytes?size=S          S bytes with their Content-Length
//	POST /hello/upload                reads the body as it streams: size, SHA-256, trailers seen
//	GET  /hello/trailers              a body, then the trailers X-Count and X-Sum
//	GET  /hello/ws                    a WebSocket echo: every message back as it came
func streamRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /hello/drip", drip)
	mux.HandleFunc("GET /hello/events", events)
	mux.HandleFunc("GET /hello/bytes", sized)
	mux.HandleFunc("POST /hello/upload", upload)
	mux.HandleFunc("GET /hello/trailers", trailers)
	mux.HandleFunc("GET /hello/ws", wsEcho)
}

func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func drip(w http.ResponseWriter, r *http.Request) {
	n, ms, size := intParam(r, "n", 10), intParam(r, "ms", 100), intParam(r, "size", 16)
	w.Header().Set("Content-Type", "application/octet-stream")
	chunk := make([]byte, size)
	for i := range n {
		for j := range chunk {
			chunk[j] = byte('a' + i%26)
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		if i < n-1 && !pause(r, ms) {
			return
		}
	}
}

func events(w http.ResponseWriter, r *http.Request) {
	n, ms := intParam(r, "n", 10), intParam(r, "ms", 100)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	for i := range n {
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %d\n\n", i, time.Now().UnixNano()); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		if i < n-1 && !pause(r, ms) {
			return
		}
	}
}

// pause waits ms milliseconds, or until the request is cancelled (false).
func pause(r *http.Request, ms int) bool {
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func sized(w http.ResponseWriter, r *http.Request) {
	size := intParam(r, "size", 1<<20)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(size))
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	for size > 0 {
		n := min(size, len(buf))
		if _, err := w.Write(buf[:n]); err != nil {
			return
		}
		size -= n
	}
}

func upload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
	fmt.Fprintf(w, "%d %s trailer=%q\n", n, hex.EncodeToString(h.Sum(nil)), r.Trailer.Get("X-Checksum"))
}

func trailers(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Trailer", "X-Count, X-Sum")
	w.Header().Set("Content-Type", "text/plain")
	sum := 0
	for i := range 5 {
		fmt.Fprintf(w, "%d\n", i)
		sum += i
	}
	w.Header().Set("X-Count", "5")
	w.Header().Set("X-Sum", strconv.Itoa(sum))
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func wsEcho(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered
	}
	defer c.Close()
	for {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}
