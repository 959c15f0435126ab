package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// longStreams runs the event stream of TestLongLived for 31 s past a 1 s
// timeout, as issue 10 asks; CI streams 5 s past it.
var longStreams = flag.Bool("griddle.long-streams", false, "stream events for 31 s (CI: 5 s) in TestLongLived")

// httpbinRules are the rules of the httpbin service with a 1 s timeout,
// plus extra YAML lines.
func httpbinRules(extra string) string {
	return "service: httpbin\nhttp:\n  - pathPrefix: /\ntimeout: 1s\nversions:\n  - to: {v1: 100}\n" + extra
}

// TestLongLived: answers that outlive their route's timeout.
func TestLongLived(t *testing.T) {
	h := startHTTPBin(t)
	t.Run("events past the timeout", func(t *testing.T) { longLivedEvents(t, h) })
	t.Run("long-lived route", func(t *testing.T) { longLivedRoute(t, h) })
}

// longLivedEvents: a text/event-stream answer outlives the route's
// timeout while it keeps streaming, and each event reaches the client as
// it is flushed. httpbin's /sse flushes an event every duration/count
// and stamps each with the time (ms) it wrote it; the client, on the same
// clock, measures how late each one arrives.
func longLivedEvents(t *testing.T, h *httpbinMesh) {
	applyRules(t, h.m, httpbinRules(""))

	// The route's timeout holds for an ordinary answer.
	resp, err := send(context.Background(), h.through, &rawRequest{method: "GET", target: "/delay/2"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.status != http.StatusGatewayTimeout {
		t.Fatalf("GET /delay/2 under a 1s timeout: got %d, want 504", resp.status)
	}

	streamFor := 5 * time.Second
	if *longStreams {
		streamFor = 31 * time.Second
	}
	const every = 100 * time.Millisecond
	count := int(streamFor / every)
	start := time.Now()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/sse?count=%d&duration=%s", h.through, count, streamFor), nil)
	r, err := (&http.Client{Timeout: streamFor + 30*time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 512))
		t.Fatalf("got %d %s %q, want 200 text/event-stream", r.StatusCode, r.Header.Get("Content-Type"), b)
	}
	var (
		late     []time.Duration // how long after its flush each event arrived
		arrived  []time.Duration // since the request
		ids      []int
		scanner  = bufio.NewScanner(r.Body)
		lastRead time.Time
	)
	for scanner.Scan() {
		data, ok := strings.CutPrefix(scanner.Text(), "data: ")
		if !ok {
			continue
		}
		now := time.Now()
		var ev struct {
			ID        int   `json:"id"`
			Timestamp int64 `json:"timestamp"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		ids = append(ids, ev.ID)
		late = append(late, now.Sub(time.UnixMilli(ev.Timestamp)))
		arrived = append(arrived, now.Sub(start))
		lastRead = now
	}
	if err := scanner.Err(); err != nil {
		t.Errorf("reading the stream after %d events (%v): %v", len(ids), time.Since(start), err)
	}
	if len(ids) != count || !slices.IsSorted(ids) {
		t.Fatalf("got %d events (ids %v…), want %d in order", len(ids), ids[:min(len(ids), 5)], count)
	}
	// Milliseconds in the stamp: an event can seem up to 1 ms early.
	sorted := slices.Sorted(slices.Values(late))
	over := len(sorted) - sort.Search(len(sorted), func(i int) bool { return sorted[i] > 50*time.Millisecond })
	t.Logf("%d events over %v (route timeout 1s); arrival after its flush: first %v, median %v, p99 %v, worst %v; %d later than 50 ms",
		len(late), lastRead.Sub(start).Round(time.Millisecond), late[0], sorted[len(sorted)/2], sorted[len(sorted)*99/100], sorted[len(sorted)-1], over)
	if half := streamFor / 2; arrived[0] > half {
		t.Errorf("the first event arrived %v after the request, after half the stream (%v): held back", arrived[0], half)
	}
	if spread := arrived[len(arrived)-1] - arrived[0]; spread < streamFor*8/10 {
		t.Errorf("the events arrived within %v of each other over a %v stream: held back and sent in bursts", spread, streamFor)
	}
	if late[0] > time.Second {
		t.Errorf("the first event arrived %v after it was flushed, want well under 1s", late[0])
	}
	if lastRead.Sub(start) < streamFor-time.Second {
		t.Errorf("the stream ended after %v, want about %v", lastRead.Sub(start), streamFor)
	}
}

// longLivedRoute: a route whose rules say streams are long-lived keeps a
// streamed answer of any type past its timeout, and cuts one that stays
// idle longer than its idle timeout.
func longLivedRoute(t *testing.T, h *httpbinMesh) {
	applyRules(t, h.m, httpbinRules("streams: {longLived: true, idleTimeout: 2s}\n"))

	t.Run("streams past the timeout", func(t *testing.T) {
		// 30 bytes over 3 s: one every 100 ms, never idle for long.
		resp, err := send(context.Background(), h.through, &rawRequest{method: "GET", target: "/drip?duration=3s&numbytes=30&delay=0"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.status != 200 || len(resp.body) != 30 {
			t.Fatalf("got %d and %d bytes, want 200 and 30", resp.status, len(resp.body))
		}
		t.Logf("first byte %v, last %v", resp.firstByte, resp.lastByte)
		if resp.firstByte > time.Second || resp.lastByte < 2*time.Second {
			t.Errorf("first byte at %v and last at %v: want the first early and the last after 2s", resp.firstByte, resp.lastByte)
		}
	})
	t.Run("idle longer than the idle timeout is cut", func(t *testing.T) {
		// 2 bytes over 8 s: the second comes 4 s after the first.
		start := time.Now()
		resp, err := send(context.Background(), h.through, &rawRequest{method: "GET", target: "/drip?duration=8s&numbytes=2&delay=0"})
		took := time.Since(start)
		t.Logf("after %v: %v", took, err)
		if err == nil && len(resp.body) == 2 {
			t.Fatalf("got the whole answer after %v, want it cut after 2s of idleness", took)
		}
		if took > 3500*time.Millisecond {
			t.Errorf("cut after %v, want about 2s after the first byte", took)
		}
	})
}

// TestLargeBodiesBoundedMemory: 200 MiB down and 200 MiB up through the
// mesh, with the resident memory of the edge and of the sidecar sampled
// every 5 ms: neither may grow by 64 MiB.
func TestLargeBodiesBoundedMemory(t *testing.T) {
	const (
		size  = 200 << 20
		bound = 64 << 20
	)
	h := startHTTPBin(t)
	procs := map[string]int{"edge": h.edge.PID(), "sidecar": h.sidecar.PID()}

	// measure runs f while sampling the processes' RSS, and reports how far
	// each grew over what it held before.
	measure := func(t *testing.T, f func() error) {
		t.Helper()
		base := map[string]int64{}
		for name, pid := range procs {
			cur, _, err := rss(pid)
			if err != nil {
				t.Fatal(err)
			}
			base[name] = cur
		}
		var mu sync.Mutex
		peak := maps.Clone(base)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for name, pid := range procs {
					if cur, _, err := rss(pid); err == nil {
						mu.Lock()
						peak[name] = max(peak[name], cur)
						mu.Unlock()
					}
				}
			}
		})
		start := time.Now()
		err := f()
		took := time.Since(start)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range slices.Sorted(maps.Keys(procs)) {
			pid := procs[name]
			_, hwm, _ := rss(pid)
			grew := peak[name] - base[name]
			t.Logf("%s: RSS %d MiB before, peak %d MiB (+%d MiB), VmHWM %d MiB; %d MiB in %v (%.0f MiB/s)",
				name, base[name]>>20, peak[name]>>20, grew>>20, hwm>>20, size>>20, took.Round(time.Millisecond), float64(size>>20)/took.Seconds())
			if grew >= bound {
				t.Errorf("%s grew by %d MiB moving %d MiB, want under %d MiB", name, grew>>20, size>>20, bound>>20)
			}
		}
	}
	c := &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{DisableCompression: true}}

	t.Run("200 MiB download", func(t *testing.T) {
		measure(t, func() error {
			resp, err := c.Get(fmt.Sprintf("http://%s/range/%d", h.through, size))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				return fmt.Errorf("got %d %q, want 200", resp.StatusCode, b)
			}
			// /range/N is a..z over and over.
			var n int64
			buf := make([]byte, 256<<10)
			for {
				k, err := resp.Body.Read(buf)
				for i, b := range buf[:k] {
					if want := byte('a' + (n+int64(i))%26); b != want {
						return fmt.Errorf("byte %d: got %q, want %q", n+int64(i), b, want)
					}
				}
				n += int64(k)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return fmt.Errorf("after %d bytes: %w", n, err)
				}
			}
			if n != size || resp.ContentLength != size {
				return fmt.Errorf("got %d bytes with Content-Length %d, want %d", n, resp.ContentLength, size)
			}
			return nil
		})
	})
	for _, up := range []struct {
		name   string
		length int64
	}{
		{"200 MiB upload of unknown length", -1}, // chunked: the mesh cannot know the length up front
		{"200 MiB upload with its length", size},
	} {
		t.Run(up.name, func(t *testing.T) { upload(t, measure, c, h.through, up.length) })
	}
}

// upload PUTs size bytes to httpbin's /upload at addr, with Content-Length
// length (-1: chunked), inside measure.
func upload(t *testing.T, measure func(*testing.T, func() error), c *http.Client, addr string, length int64) {
	const size = 200 << 20
	measure(t, func() error {
		req, _ := http.NewRequest("PUT", "http://"+addr+"/upload", io.NopCloser(&patternReader{left: size}))
		req.ContentLength = length
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var got struct {
			BytesReceived int64 `json:"bytes_received"`
		}
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &got); resp.StatusCode != 200 || err != nil || got.BytesReceived != size {
			return fmt.Errorf("got %d %.300q, want 200 and bytes_received %d", resp.StatusCode, b, size)
		}
		return nil
	})
}

// patternReader yields left bytes of a..z over and over without holding
// them.
type patternReader struct{ left, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.left))
	for i := range b[:n] {
		b[i] = byte('a' + (p.off+int64(i))%26)
	}
	p.off += int64(n)
	p.left -= int64(n)
	return n, nil
}

// TestWebSocketThroughMesh: a WebSocket echo through the edge and the
// sidecar to httpbin's /websocket/echo: 1,000 messages each way byte for
// byte, the connection kept across a rules change, and closed with a close
// frame when the sidecar is stopped with SIGTERM.
func TestWebSocketThroughMesh(t *testing.T) {
	h := startHTTPBin(t)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial("ws://"+h.through+"/websocket/echo", nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial through the mesh: %v (status %d)", err, status)
	}
	defer conn.Close()

	// echo sends n messages from one goroutine while this one reads their
	// echoes, and compares them in order.
	echo := func(t *testing.T, n int, seed uint64) {
		t.Helper()
		msgs := make([][]byte, n)
		for i := range msgs {
			msgs[i] = randomBytes(int(seed+uint64(i))*37%(16<<10), seed+uint64(i))
			if i%2 == 0 {
				// Text: ASCII, since httpbin checks UTF-8 per fragment
				// and the client may split a long message anywhere.
				for j, b := range msgs[i] {
					msgs[i][j] = 'a' + b%26
				}
			}
		}
		errc := make(chan error, 1)
		go func() {
			for i, m := range msgs {
				kind := websocket.BinaryMessage
				if i%2 == 0 {
					kind = websocket.TextMessage
				}
				if err := conn.WriteMessage(kind, m); err != nil {
					errc <- fmt.Errorf("writing message %d: %w", i, err)
					return
				}
			}
			errc <- nil
		}()
		conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		for i, want := range msgs {
			kind, got, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("reading echo %d of %d: %v", i, n, err)
			}
			wantKind := websocket.BinaryMessage
			if i%2 == 0 {
				wantKind = websocket.TextMessage
			}
			if kind != wantKind || !bytes.Equal(got, want) {
				t.Fatalf("echo %d: got type %d and %d bytes, want type %d and the %d sent (equal: %v)", i, kind, len(got), wantKind, len(want), bytes.Equal(got, want))
			}
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	echo(t, 1000, 1)
	t.Logf("1,000 messages each way in %v", time.Since(start).Round(time.Millisecond))

	took := applyRules(t, h.m, httpbinRules("retries: {attempts: 2}\n"))
	t.Logf("a new rule revision reached the edge and the sidecar in %v", took)
	echo(t, 100, 5000)

	// SIGTERM: the sidecar drains, and the client gets a close frame, not
	// a connection cut.
	readErr := make(chan error, 1)
	go func() {
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	stopped := make(chan error, 1)
	go func() { stopped <- h.sidecar.Stop(20 * time.Second) }()
	err = <-readErr
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Errorf("after SIGTERM of the sidecar: %v, want a close frame", err)
	} else {
		t.Logf("close frame: %d %q", ce.Code, ce.Text)
	}
	if err := <-stopped; err != nil {
		t.Errorf("sidecar after SIGTERM: %v", err)
	}
}
