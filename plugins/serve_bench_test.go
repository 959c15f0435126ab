package plugins

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// BenchmarkServe measures what the SDK costs per request in the handler
// process: a request as the sidecar sends it (an envelope with a deadline,
// a request id and the headers a browser sends) served by a handler that
// writes a short answer, over a real hop connection on a unix socket.
// allocs/op count both ends; the sidecar's end alone is hop's
// BenchmarkCall minus its handler side.
func BenchmarkServe(b *testing.B) {
	dir, err := os.MkdirTemp("", "plugins-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "h.sock"))
	if err != nil {
		b.Fatal(err)
	}
	mesh := newMesh(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/greet", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "hello, x")
	})
	hs := &hopServer{mesh: mesh, ln: ln, srv: hop.Server{Handler: (&contextHandler{h: mux, mesh: mesh}).serveEnvelope, Context: mesh.inbound, StripMeshHeaders: true}}
	var wg sync.WaitGroup
	wg.Go(func() { _ = hs.accept() })
	defer func() { hs.shutdown(time.Second); wg.Wait() }()
	nc, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c := hop.New(nc, hop.Config{})
	defer c.Close()
	payload, _ := proto.Marshal(&wire.Request{
		Id: "0af7651916cd43dd", Method: "GET", Path: "/hello/greet", RawQuery: "name=x",
		DeadlineUnixNano: time.Now().Add(time.Hour).UnixNano(),
		Headers: []*wire.Header{
			{Name: "Accept", Values: []string{"*/*"}},
			{Name: "User-Agent", Values: []string{"bench"}},
			{Name: "Accept-Encoding", Values: []string{"gzip"}},
		},
	})
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := hop.Call(c, payload, time.Time{}, 1<<20, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
