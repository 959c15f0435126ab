// Command httpbin serves github.com/mccutchen/go-httpbin, a well-known
// third-party HTTP test handler, as a Griddle service. It is the handler
// of the transparency suite (e2e/transparency_test.go), which sends the
// same requests to it served alone and through the mesh and compares the
// answers; run alone with GRIDDLE_STANDALONE=127.0.0.1:8000 it is the
// suite's baseline.
//
// The handler serves at the root of the paths it gets (/get, /anything,
// /status/418, …); expose it with `griddle sidecar --http-prefix /`.
//
//	-max-body-bytes N   largest request body and generated answer (/bytes, /range, …)
//	-max-duration D     longest answer a client may ask for (/delay, /drip, /sse, WebSockets)
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/mccutchen/go-httpbin/v2/httpbin"

	"github.com/griddle-mesh/griddle/plugins"
)

// Defaults large enough for the suite's 200 MiB transfers and its 30 s
// event stream.
const (
	defaultMaxBody     = 256 << 20
	defaultMaxDuration = 2 * time.Minute
)

func main() {
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	maxBody := fs.Int64("max-body-bytes", defaultMaxBody, "largest request body and generated answer, in bytes")
	maxDuration := fs.Duration("max-duration", defaultMaxDuration, "longest answer a client may ask for")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	h, err := newHandler(*maxBody, *maxDuration)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	plugins.Serve(h)
}

// newHandler is go-httpbin with the given limits, which must be positive.
func newHandler(maxBody int64, maxDuration time.Duration) (http.Handler, error) {
	if maxBody <= 0 {
		return nil, fmt.Errorf("httpbin: -max-body-bytes: %d must be positive", maxBody)
	}
	if maxDuration <= 0 {
		return nil, fmt.Errorf("httpbin: -max-duration: %v must be positive", maxDuration)
	}
	return httpbin.New(
		httpbin.WithMaxBodySize(maxBody),
		httpbin.WithMaxDuration(maxDuration),
	), nil
}
