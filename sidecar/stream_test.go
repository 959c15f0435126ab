package sidecar

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/griddle-mesh/griddle/edge"
)

// The streaming tests run the whole path (edge → mangos → sidecar → hop →
// the hello handler process) with its streaming endpoints.

// TestStreamedAnswerArrivesAsItIsWritten: chunks flushed 200 ms apart
// reach the client one by one, not all at the end.
func TestStreamedAnswerArrivesAsItIsWritten(t *testing.T) {
	addr, _ := startPath(t)
	start := time.Now()
	resp, err := http.Get("http://" + addr + "/hello/drip?n=5&ms=200&size=8")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var arrivals []time.Duration
	buf := make([]byte, 8)
	for {
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			break
		}
		arrivals = append(arrivals, time.Since(start))
	}
	if len(arrivals) != 5 {
		t.Fatalf("got %d chunks, want 5", len(arrivals))
	}
	t.Logf("chunk arrivals: %v", arrivals)
	if total := arrivals[4]; arrivals[0] > total/2 {
		t.Errorf("first chunk after %v of %v: the answer was held back", arrivals[0], total)
	}
}

// TestLargeAnswerKeepsItsLength: an answer far over the 8 MiB a whole
// reply may hold streams through, with its Content-Length.
func TestLargeAnswerKeepsItsLength(t *testing.T) {
	addr, _ := startPath(t)
	const size = 40 << 20
	resp, err := http.Get("http://" + addr + "/hello/bytes?size=" + strconv.Itoa(size))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size || resp.StatusCode != 200 {
		t.Fatalf("status %d, %d bytes, %v; want 200 and %d bytes", resp.StatusCode, n, err, size)
	}
	if resp.ContentLength != size {
		t.Errorf("Content-Length %d, want %d", resp.ContentLength, size)
	}
}

// TestStreamedUploads: a chunked upload of unknown length reaches the
// handler as one (no Content-Length), with its trailer; one of known
// length keeps it; both are whole.
func TestStreamedUploads(t *testing.T) {
	addr, _ := startPath(t)
	body := make([]byte, 24<<20+3)
	for i := range body {
		body[i] = byte(i * 31)
	}
	sum := sha256.Sum256(body)
	for _, c := range []struct {
		name   string
		length int64
	}{{"chunked", -1}, {"known length", int64(len(body))}} {
		t.Run(c.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			go func() {
				for b := body; len(b) > 0; {
					n := min(len(b), 100_000)
					if _, err := pw.Write(b[:n]); err != nil {
						return
					}
					b = b[n:]
				}
				pw.Close()
			}()
			req, _ := http.NewRequest("POST", "http://"+addr+"/hello/upload", pr)
			req.ContentLength = c.length
			want := `trailer=""`
			if c.length < 0 {
				// net/http sends the trailer's value once the body is sent.
				req.Trailer = http.Header{"X-Checksum": {"abc"}}
				want = `trailer="abc"`
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			wantLine := fmt.Sprintf("%d %s %s\n", len(body), hex.EncodeToString(sum[:]), want)
			if resp.StatusCode != 200 || string(got) != wantLine {
				t.Fatalf("status %d, %q; want 200, %q", resp.StatusCode, got, wantLine)
			}
			if cl := resp.Header.Get("X-Content-Length"); cl != strconv.FormatInt(c.length, 10) {
				t.Errorf("the handler saw Content-Length %s, want %d", cl, c.length)
			}
		})
	}
}

// TestTrailers: the handler's trailers reach the client after the body.
func TestTrailers(t *testing.T) {
	addr, _ := startPath(t)
	resp, err := http.Get("http://" + addr + "/hello/trailers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "0\n1\n2\n3\n4\n" {
		t.Errorf("body %q", body)
	}
	if resp.Trailer.Get("X-Count") != "5" || resp.Trailer.Get("X-Sum") != "10" {
		t.Errorf("trailers %v, want X-Count: 5 and X-Sum: 10", resp.Trailer)
	}
}

// TestEventStreamOutlivesTimeout: server-sent events go on past the
// edge's request timeout, each as it is sent.
func TestEventStreamOutlivesTimeout(t *testing.T) {
	addr, _ := startPathOn(t, "tcp://127.0.0.1:0", func(c *edge.Config) { c.Timeout = 300 * time.Millisecond })
	resp, err := http.Get("http://" + addr + "/hello/events?n=10&ms=100")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var lags []time.Duration
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			sent, _ := strconv.ParseInt(v, 10, 64)
			lags = append(lags, time.Since(time.Unix(0, sent)))
		}
	}
	if len(lags) != 10 {
		t.Fatalf("got %d events, want 10 over ~900 ms with a 300 ms timeout", len(lags))
	}
	t.Logf("event lags (sent → received): %v", lags)
}

// TestWebSocketEcho: a WebSocket through the mesh, messages both ways
// byte for byte.
func TestWebSocketEcho(t *testing.T) {
	addr, _ := startPath(t)
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/hello/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer c.Close()
	for i := range 200 {
		msg := bytes.Repeat([]byte{byte(i)}, 1+i*97)
		typ := websocket.BinaryMessage
		if i%2 == 0 {
			typ, msg = websocket.TextMessage, []byte(fmt.Sprintf("message %d %s", i, strings.Repeat("x", i)))
		}
		if err := c.WriteMessage(typ, msg); err != nil {
			t.Fatal(err)
		}
		gt, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if gt != typ || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: got type %d, %d bytes; want type %d, %d bytes", i, gt, len(got), typ, len(msg))
		}
	}
	if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after closing: %v, want the handler's close frame", err)
	}
}
