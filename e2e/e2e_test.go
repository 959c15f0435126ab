package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/launch"
	"github.com/griddle-mesh/griddle/internal/meshtest"
)

var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 512},
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestEndToEnd(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	// A burst of 1,000 is more than 100 ms of this machine's capacity:
	// admission control would rightly shed part of it. This test is about
	// many requests in flight at once, so it runs without.
	e := m.Edge("--no-admission")
	base := "http://" + e.Addr

	t.Run("1000 concurrent requests", func(t *testing.T) {
		const n = 1000
		var wg sync.WaitGroup
		var bad atomic.Int32
		pids := sync.Map{}
		for i := range n {
			wg.Go(func() {
				body := fmt.Sprintf("request %d", i)
				resp, err := client.Post(base+"/hello/echo?i="+strconv.Itoa(i), "text/plain", strings.NewReader(body))
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					bad.Add(1)
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != body || resp.Header.Get("X-Echo-Query") != "i="+strconv.Itoa(i) {
					bad.Add(1)
					t.Errorf("request %d: got %d %q query %q, want 200 %q", i, resp.StatusCode, got, resp.Header.Get("X-Echo-Query"), body)
				}
			})
		}
		wg.Wait()
		if bad.Load() > 0 {
			t.Fatalf("%d of %d requests failed", bad.Load(), n)
		}
		for range 50 {
			_, pid, _ := get(t, base+"/hello/pid")
			pids.Store(pid, true)
		}
		count := 0
		pids.Range(func(any, any) bool { count++; return true })
		if count != 2 {
			t.Errorf("requests reached %d handler processes, want both instances' 2", count)
		}
	})

	t.Run("1 MiB body byte for byte", func(t *testing.T) {
		body := make([]byte, 1<<20)
		rand.Read(body)
		resp, err := client.Post(base+"/hello/echo", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !bytes.Equal(got, body) {
			t.Fatalf("got status %d and %d bytes (equal: %v), want 200 and the same %d bytes", resp.StatusCode, len(got), bytes.Equal(got, body), len(body))
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("Content-Type = %q, want application/octet-stream", ct)
		}
	})

	t.Run("repeated headers and query", func(t *testing.T) {
		req, _ := http.NewRequest("PUT", base+"/hello/echo?a=1&a=2&b=x%20y&c", strings.NewReader("x"))
		req.Header.Add("X-Test-Multi", "one")
		req.Header.Add("X-Test-Multi", "two")
		req.Header.Add("X-Test-Multi", "three")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Values("X-Test-Multi"); !slices.Equal(got, []string{"one", "two", "three"}) {
			t.Errorf("X-Test-Multi = %q, want [one two three]", got)
		}
		if got := resp.Header.Get("X-Echo-Query"); got != "a=1&a=2&b=x%20y&c" {
			t.Errorf("query = %q, want a=1&a=2&b=x%%20y&c", got)
		}
		if got := resp.Header.Get("X-Echo-Method"); got != "PUT" {
			t.Errorf("method = %q, want PUT", got)
		}
	})
}

func TestErrors(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	e := m.Edge("--timeout", "1s", "--max-body-bytes", "65536")
	base := "http://" + e.Addr
	if err := discovery.PutExposure(context.Background(), m.Cli, discovery.DefaultPrefix, discovery.Exposure{Service: "ghost", PathPrefixes: []string{"/ghost/"}}); err != nil {
		t.Fatal(err)
	}

	t.Run("oversized body gets 413", func(t *testing.T) {
		resp, err := client.Post(base+"/hello/echo", "text/plain", bytes.NewReader(make([]byte, 65537)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("status = %d, want 413", resp.StatusCode)
		}
	})
	t.Run("oversized chunked body gets 413", func(t *testing.T) {
		resp, err := client.Post(base+"/hello/echo", "text/plain", io.MultiReader(bytes.NewReader(make([]byte, 70000))))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("status = %d, want 413", resp.StatusCode)
		}
	})
	t.Run("oversized headers get 431", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/hello/greet", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 100<<10))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 431 {
			t.Errorf("status = %d, want 431", resp.StatusCode)
		}
	})
	t.Run("malformed request gets 400", func(t *testing.T) {
		conn, err := net.Dial("tcp", e.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, "GET /hello/greet HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n")
		line, _ := io.ReadAll(io.LimitReader(conn, 12))
		if !strings.HasPrefix(string(line), "HTTP/1.1 400") {
			t.Errorf("got %q, want HTTP/1.1 400", line)
		}
	})
	t.Run("no instance gets 502 with an error id", func(t *testing.T) {
		var status int
		var h http.Header
		var body string
		deadline := time.Now().Add(5 * time.Second)
		for { // the edge learns the exposure through its watch
			status, body, h = get(t, base+"/ghost/x")
			if status != 404 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if status != 502 {
			t.Fatalf("status = %d, want 502", status)
		}
		id := h.Get("X-Griddle-Error-Id")
		if id == "" || !strings.Contains(body, id) {
			t.Errorf("error id header %q, body %q: want the id in both", id, body)
		}
		if strings.Contains(body, "dispatch:") {
			t.Errorf("body %q leaks Go error text", body)
		}
		time.Sleep(100 * time.Millisecond)
		if !strings.Contains(e.Log(), id) {
			t.Errorf("error id %s is not in the edge's log", id)
		}
	})
	t.Run("unknown path gets 404", func(t *testing.T) {
		if status, _, _ := get(t, base+"/nowhere"); status != 404 {
			t.Errorf("status = %d, want 404", status)
		}
	})
	t.Run("past the deadline gets 504", func(t *testing.T) {
		start := time.Now()
		status, _, h := get(t, base+"/hello/sleep?ms=3000")
		if status != 504 || h.Get("X-Griddle-Error-Id") == "" {
			t.Errorf("status = %d, error id %q; want 504 with an id", status, h.Get("X-Griddle-Error-Id"))
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Errorf("504 took %v, want about the 1s deadline", d)
		}
	})
	t.Run("handler's own status passes through", func(t *testing.T) {
		if status, _, _ := get(t, base+"/hello/status?code=418"); status != 418 {
			t.Errorf("status = %d, want 418", status)
		}
	})
}

func TestServiceToService(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	prof := m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/")
	e := m.Edge("--timeout", "3s")
	seed(t, e.Addr, 10)

	status, body, _ := get(t, "http://"+e.Addr+"/profiles/7/greeting")
	if status != 200 {
		t.Fatalf("status = %d (%s), want 200", status, body)
	}
	var got struct {
		Greeting         string `json:"greeting"`
		HelloSawDeadline string `json:"helloSawDeadline"`
		MyDeadline       string `json:"myDeadline"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	if got.Greeting != "hello, user-7" {
		t.Errorf("greeting = %q, want %q", got.Greeting, "hello, user-7")
	}
	if got.MyDeadline == "" || got.MyDeadline == "none" || got.HelloSawDeadline != got.MyDeadline {
		t.Errorf("hello saw deadline %q, profiles had %q: want the same deadline", got.HelloSawDeadline, got.MyDeadline)
	}
	if d, err := strconv.ParseInt(got.MyDeadline, 10, 64); err != nil || time.Until(time.Unix(0, d)) > 3*time.Second {
		t.Errorf("deadline %q is not within the edge's 3s timeout", got.MyDeadline)
	}
	// The call is counted by caller and callee; without rules, the edge
	// labels the latency with the version that served, and the status class.
	if n := scrape(t, prof.Admin, `griddle_outbound_requests_total{caller="profiles",code="200",experiment="",service="hello",variant="",version="v1"}`); n < 1 {
		t.Errorf("profiles' outbound calls to hello v1: %v counted, want at least 1", n)
	}
	if n := scrape(t, e.Admin, `griddle_edge_request_duration_seconds_count{class="2xx",experiment="",service="profiles",variant="",version="v1"}`); n < 1 {
		t.Errorf("the edge's latency of profiles v1, 2xx: %v observed, want at least 1", n)
	}
}

// load sends GET requests from workers until stop is closed and counts the
// answers by status; a transport error counts as status 0.
type load struct {
	mu       sync.Mutex
	statuses map[int]int
	wg       sync.WaitGroup
	stop     chan struct{}
}

func startLoad(url string, workers int) *load {
	l := &load{statuses: map[int]int{}, stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				status := 0
				resp, err := client.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				l.mu.Lock()
				l.statuses[status]++
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *load) finish() map[int]int {
	close(l.stop)
	l.wg.Wait()
	return l.statuses
}

type sidecarStatus struct {
	HandlerPID      int  `json:"handlerPid"`
	HandlerRestarts int  `json:"handlerRestarts"`
	HandlerHealthy  bool `json:"handlerHealthy"`
}

func TestKillSidecarUnderLoad(t *testing.T) {
	m := meshtest.Start(t, bin)
	victim := m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	e := m.Edge("--no-admission") // this test is about failover, not shedding
	var st sidecarStatus
	if err := victim.Status(&st); err != nil || st.HandlerPID == 0 {
		t.Fatalf("sidecar status: %+v, %v", st, err)
	}

	const workers = 16
	l := startLoad("http://"+e.Addr+"/hello/greet?name=load", workers)
	time.Sleep(500 * time.Millisecond)
	killed := time.Now()
	victim.Kill()
	time.Sleep(1500 * time.Millisecond)
	statuses := l.finish()

	total := 0
	for _, n := range statuses {
		total += n
	}
	t.Logf("answers by status: %v", statuses)
	if statuses[0] > 0 {
		t.Errorf("%d requests got no HTTP answer", statuses[0])
	}
	if failed := total - statuses[200]; failed > workers {
		t.Errorf("%d requests failed, want at most the %d that can be inside the killed process", failed, workers)
	}
	if statuses[200] < 100 {
		t.Errorf("only %d requests succeeded", statuses[200])
	}

	key := discovery.InstanceKey(discovery.DefaultPrefix, discovery.Instance{Service: "hello", Version: "v1", ID: victim.Addr})
	for {
		resp, err := m.Cli.Get(context.Background(), key)
		if err == nil && len(resp.Kvs) == 0 {
			break
		}
		if time.Since(killed) > 4*time.Second { // TTL 2s, plus etcd's lease checks
			t.Fatalf("the killed instance is still registered %v after the kill", time.Since(killed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("killed instance left the endpoint set %v after the kill", time.Since(killed).Round(10*time.Millisecond))

	for start := time.Now(); meshtest.ProcessAlive(st.HandlerPID); {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("handler process %d outlived its killed sidecar", st.HandlerPID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSidecarDrainsOnSIGTERM(t *testing.T) {
	m := meshtest.Start(t, bin)
	leaving := m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	e := m.Edge("--no-admission") // this test is about failover, not shedding

	l := startLoad("http://"+e.Addr+"/hello/sleep?ms=20", 16)
	time.Sleep(300 * time.Millisecond)
	if err := leaving.Stop(15 * time.Second); err != nil {
		t.Errorf("sidecar did not stop cleanly: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	statuses := l.finish()
	t.Logf("answers by status: %v", statuses)
	for status, n := range statuses {
		if status != 200 {
			t.Errorf("%d requests got status %d during a drain, want none", n, status)
		}
	}
}

func TestHandlerRestart(t *testing.T) {
	m := meshtest.Start(t, bin)
	sc := m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	e := m.Edge()
	base := "http://" + e.Addr

	status, pid, _ := get(t, base+"/hello/pid")
	if status != 200 {
		t.Fatalf("status = %d, want 200", status)
	}
	p, _ := strconv.Atoi(pid)
	if err := killPID(p); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, newPID, _ := get(t, base+"/hello/pid")
		if status == 200 && newPID != pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handler was not restarted: last answer %d %q", status, newPID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var st sidecarStatus
	if err := sc.Status(&st); err != nil || st.HandlerRestarts < 1 || !st.HandlerHealthy {
		t.Errorf("sidecar status %+v (%v): want at least one restart and a healthy handler", st, err)
	}
}

func TestEtcdStopped(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/")
	e := m.Edge()
	seed(t, e.Addr, 10)
	url := "http://" + e.Addr + "/profiles/3/greeting"
	if status, body, _ := get(t, url); status != 200 {
		t.Fatalf("before: status %d (%s), want 200", status, body)
	}

	m.Etcd.Close()
	deadline := time.Now().Add(8 * time.Second)
	disconnected := false
	for time.Now().Before(deadline) {
		if status, body, _ := get(t, url); status != 200 {
			t.Fatalf("with etcd stopped: status %d (%s), want 200", status, body)
		}
		var st struct {
			Etcd discovery.Status `json:"etcd"`
		}
		if err := e.Status(&st); err == nil && st.Etcd.Synced && !st.Etcd.Connected {
			disconnected = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !disconnected {
		t.Error("the edge's status never said etcd was unreachable")
	}
}

// seed loads profiles 1..n through the edge at addr, once the edge routes
// /profiles/.
func seed(t *testing.T, addr string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := launch.SeedProfiles(context.Background(), "http://"+addr, n, 500, io.Discard)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("seeding profiles: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func killPID(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// TestOverloadSheds: past its concurrency limit and queue, the edge
// answers at once with 503 and Retry-After instead of making everyone
// wait, and the requests it admits are served.
func TestOverloadSheds(t *testing.T) {
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	e := m.Edge("--admission-max", "8", "--admission-queue", "4", "--admission-wait", "5ms")
	url := "http://" + e.Addr + "/hello/sleep?ms=300"
	waitRoute(t, "http://"+e.Addr+"/hello/pid")

	type answer struct {
		status     int
		retryAfter string
		took       time.Duration
	}
	answers := make(chan answer, 40)
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			start := time.Now()
			resp, err := client.Get(url)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start)}
		})
	}
	wg.Wait()
	close(answers)
	served, shed := 0, 0
	for a := range answers {
		switch a.status {
		case 200:
			served++
		case 503:
			shed++
			if a.retryAfter == "" {
				t.Error("a shed answer without Retry-After")
			}
			if a.took > 200*time.Millisecond {
				t.Errorf("a shed answer took %v: it waited for work it was not admitted to", a.took)
			}
		default:
			t.Errorf("status %d", a.status)
		}
	}
	t.Logf("40 requests of 300 ms at once against a limit of 8: %d served, %d shed", served, shed)
	if served < 4 || shed == 0 {
		t.Errorf("served %d, shed %d: want the limit's worth served and the rest shed", served, shed)
	}
}
