package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with serial
// into certFile and keyFile (through a rename, as a certificate manager
// would) and returns it.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "edge"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		tmp := file + ".new"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestEdgeHTTPS: the edge serves end users over TLS with HTTP/2 by ALPN,
// loads a renewed certificate without a restart and without failing a
// request, and speaks HTTP/2 with prior knowledge (h2c) and HTTP/1.1 on
// its plain port.
func TestEdgeHTTPS(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
	first := writeCert(t, certFile, keyFile, 1)
	httpsAddr := meshtest.FreeAddr(t)
	e := m.Edge("--https-listen", httpsAddr, "--https-cert", certFile, "--https-key", keyFile)
	waitRoute(t, "http://"+e.Addr+"/hello/greet")

	pool := x509.NewCertPool()
	pool.AddCert(first)
	var mu sync.Mutex
	trust := func(c *x509.Certificate) { mu.Lock(); pool.AddCert(c); mu.Unlock() }
	newTLSClient := func() *http.Client {
		mu.Lock()
		defer mu.Unlock()
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool.Clone()},
			ForceAttemptHTTP2: true,
		}}
	}
	getTLS := func(c *http.Client) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get("https://" + httpsAddr + "/hello/greet?name=tls")
		if err != nil {
			t.Fatalf("GET over TLS: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := getTLS(newTLSClient())
	if resp.StatusCode != 200 || body != "hello, tls" || resp.ProtoMajor != 2 {
		t.Fatalf("over TLS: %d %s %q, want 200 over HTTP/2 with the greeting", resp.StatusCode, resp.Proto, body)
	}

	// Renew the certificate under load: every request keeps an answer.
	var failed, served atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c := newTLSClient() // new connections: each handshake sees the certificate in use
				resp, err := c.Get("https://" + httpsAddr + "/hello/greet?name=r")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				} else {
					served.Add(1)
				}
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				c.CloseIdleConnections()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	second := writeCert(t, certFile+".next", keyFile+".next", 2)
	trust(second) // clients trust both, as during a real renewal
	time.Sleep(100 * time.Millisecond)
	for _, f := range [][2]string{{certFile + ".next", certFile}, {keyFile + ".next", keyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1]+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f[1]+".tmp", f[1]); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := getTLS(newTLSClient())
		if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 && resp.TLS.PeerCertificates[0].SerialNumber.Int64() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the edge kept serving the old certificate 10s after the files changed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("certificate renewal under load: %d served, %d failed", served.Load(), failed.Load())
	if failed.Load() != 0 || served.Load() == 0 {
		t.Errorf("%d requests failed across the renewal (%d served), want none", failed.Load(), served.Load())
	}

	// The plain port: h2c with prior knowledge and HTTP/1.1 side by side.
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	c2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &h2c}}
	resp, err := c2.Get("http://" + e.Addr + "/hello/greet?name=h2c")
	if err != nil {
		t.Fatalf("h2c: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "hello, h2c" {
		t.Errorf("h2c: %d %s %q, want 200 over HTTP/2", resp.StatusCode, resp.Proto, b)
	}
	status, body, _ := get(t, "http://"+e.Addr+"/hello/greet?name=h1")
	if status != 200 || body != "hello, h1" {
		t.Errorf("HTTP/1.1 on the same port: %d %q", status, body)
	}
}

// TestFairAdmission: 64 slow calls to one service while another is read
// at 500/s: the second loses no request. Its p99 is logged, not asserted
// (this machine is shared).
func TestFairAdmission(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/")
	// A longer wait for a slot than the default 25ms: the queue rides out
	// the stalls of a shared machine. It is per service, as the limit is.
	e := m.Edge("--admission-wait", "100ms")
	base := "http://" + e.Addr
	waitRoute(t, base+"/hello/greet")
	seed(t, e.Addr, 50)

	slowClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 128, MaxIdleConnsPerHost: 128}}
	var slow sync.WaitGroup
	var slowMu sync.Mutex
	slowStatus := map[int]int{}
	stopSlow := make(chan struct{})
	for range 64 {
		slow.Go(func() {
			for {
				select {
				case <-stopSlow:
					return
				default:
				}
				resp, err := slowClient.Get(base + "/hello/sleep?ms=1000")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					slowMu.Lock()
					slowStatus[resp.StatusCode]++
					slowMu.Unlock()
					if resp.StatusCode == http.StatusServiceUnavailable {
						time.Sleep(100 * time.Millisecond) // shed: the caller backs off, as Retry-After asks
					}
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // the slow service is full

	const rate, seconds = 500, 4
	var mu sync.Mutex
	var lat []time.Duration
	statuses := map[int]int{}
	tick := time.NewTicker(time.Second / rate)
	begin := time.Now()
	var reads sync.WaitGroup
	for i := range rate * seconds {
		<-tick.C
		reads.Go(func() {
			due := time.Now()
			status := 0
			resp, err := client.Get(base + "/profiles/" + itoa(int64(i%50+1)))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
				if status != 200 {
					t.Logf("read %d at %v: %d %s", i, time.Since(begin).Round(time.Millisecond), status, b)
				}
			} else {
				t.Logf("read %d at %v: %v", i, time.Since(begin).Round(time.Millisecond), err)
			}
			mu.Lock()
			lat = append(lat, time.Since(due))
			statuses[status]++
			mu.Unlock()
		})
	}
	tick.Stop()
	reads.Wait()
	close(stopSlow)
	slow.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[len(lat)*99/100]
	t.Logf("profiles at %d/s beside 64 slow calls to hello: %v, p50 %v, p99 %v (hello answered %v)",
		rate, statuses, lat[len(lat)/2].Round(10*time.Microsecond), p99.Round(10*time.Microsecond), slowStatus)
	if statuses[200] != rate*seconds {
		t.Errorf("profiles: %v of %d reads, want every one 200", statuses, rate*seconds)
	}
}
