package e2e

import (
	"crypto/tls"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/meshtls"
)

// pacedCount sends GET requests to url at perSecond until finish and
// counts the answers by body (200) or status.
type pacedCount struct {
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	ok      map[string]int // body of each 200 → count
	failed  map[int]int    // status (0: transport error) → count
	lastErr string
}

func startPacedCount(url string, perSecond int) *pacedCount {
	p := &pacedCount{stop: make(chan struct{}), ok: map[string]int{}, failed: map[int]int{}}
	p.wg.Go(func() {
		t := time.NewTicker(time.Second / time.Duration(perSecond))
		defer t.Stop()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			inflight.Go(func() {
				resp, err := client.Get(url)
				status, body := 0, ""
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					status, body = resp.StatusCode, string(b)
				}
				p.mu.Lock()
				defer p.mu.Unlock()
				if status == 200 {
					p.ok[body]++
				} else {
					p.failed[status]++
					p.lastErr = body
					if err != nil {
						p.lastErr = err.Error()
					}
				}
			})
		}
	})
	return p
}

func (p *pacedCount) counts() (ok map[string]int, failed map[int]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ok, failed = map[string]int{}, map[int]int{}
	for k, v := range p.ok {
		ok[k] = v
	}
	for k, v := range p.failed {
		failed[k] = v
	}
	return ok, failed
}

func (p *pacedCount) finish() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// servedSerial is the serial of the certificate a fresh TLS connection to
// the mangos address addr is served with.
func servedSerial(t *testing.T, f meshtls.Files, addr string) string {
	t.Helper()
	src, err := meshtls.Open(f, meshtls.Options{Reload: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	u, _ := url.Parse(addr)
	c, err := tls.Dial("tcp", u.Host, src.ClientFor("", addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestCertificateRotationUnderLoad: at 200 requests/s through an edge to
// hello over mutual TLS, both the edge's and the sidecar's certificates
// are reissued in place; new handshakes use the new ones, then a new
// instance with a fresh certificate takes over from the first, which
// drains: no request fails.
func TestCertificateRotationUnderLoad(t *testing.T) {
	hello := meshtls.Identity{Service: "hello", Version: "v1"}
	authority, dir, certs := workloadCerts(t, 10*time.Minute, hello)
	m := meshtest.Start(t, bin)
	listen := []string{"--listen", "tls+tcp://127.0.0.1:0", "--http-prefix", "/hello/"}
	first := m.Sidecar("hello", "v1", append(listen, certs[hello]...)...)
	e := m.Edge(append([]string{"--timeout", "3s"}, certs[meshtls.Edge]...)...)
	waitRoute(t, "http://"+e.Addr+"/hello/greet")
	firstAddr := instanceAddress(t, m, "hello")
	before := servedSerial(t, filesOf(certs[meshtls.Edge]), firstAddr)

	load := startPacedCount("http://"+e.Addr+"/hello/pid", 200)
	defer load.finish()
	time.Sleep(time.Second)

	// Reissue both certificates into the files in use.
	issueInto(t, authority, filepath.Join(dir, "hello-v1"), hello, 10*time.Minute)
	issueInto(t, authority, filepath.Join(dir, "edge-"), meshtls.Edge, 10*time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for servedSerial(t, filesOf(certs[meshtls.Edge]), firstAddr) == before {
		if time.Now().After(deadline) {
			t.Fatal("the sidecar still serves its old certificate 10s after the rotation")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for !strings.Contains(e.Log(), "TLS certificate rotated") {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not take its new certificate within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A new instance, dialled by the edge with its new certificate, takes
	// over; the first drains.
	second := m.Sidecar("hello", "v1", append(listen, issueInto(t, authority, filepath.Join(dir, "hello-second"), hello, 10*time.Minute)...)...)
	secondPID := ""
	deadline = time.Now().Add(10 * time.Second)
	for secondPID == "" {
		var st sidecarStatus
		if err := second.Status(&st); err == nil && st.HandlerPID != 0 {
			secondPID = itoa(int64(st.HandlerPID))
		}
		time.Sleep(20 * time.Millisecond)
		if time.Now().After(deadline) {
			t.Fatal("no status from the second instance")
		}
	}
	for ok, _ := load.counts(); ok[secondPID] == 0; ok, _ = load.counts() {
		if time.Now().After(deadline) {
			t.Fatal("the second instance served nothing within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := first.Stop(15 * time.Second); err != nil {
		t.Errorf("stopping the first instance: %v", err)
	}
	time.Sleep(time.Second)
	load.finish()

	ok, failed := load.counts()
	total := 0
	for _, n := range ok {
		total += n
	}
	t.Logf("answered 200: %d (by handler pid: %v); failed: %v", total, ok, failed)
	if len(failed) > 0 {
		t.Errorf("requests failed during the rotation: %v (last: %s)", failed, load.lastErr)
	}
	if total < 400 {
		t.Errorf("only %d requests answered; the load did not run", total)
	}
}
