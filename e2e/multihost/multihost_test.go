package multihost

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/meshtest"
	"github.com/griddle-mesh/griddle/internal/routing"
)

const (
	rate        = 300                   // requests per second during the faults, open loop, split over the two edges
	peakRate    = 1000                  // requests per second of the closing capacity run
	slow        = 50 * time.Millisecond // 20× the steady p99 here
	sidecarTTL  = "2s"
	etcdClient  = 2379
	etcdPeer    = 2380
	edgePort    = 8080
	edgeAdmin   = 9090
	sidecarPort = 7001
	sidecarAdm  = 9101
)

// rules are hello's: every try bounded, retried elsewhere when an instance
// does not answer.
const rules = `
service: hello
http: [{pathPrefix: /hello/}]
timeout: 3s
retries: {attempts: 3, perTry: 250ms, on: [unavailable, deadline], budget: 20%, minPerSecond: 20}
versions:
  - to: {v1: 100}
`

// result is one request of the load.
type result struct {
	at      time.Duration // when it was due, since the load started
	latency time.Duration
	status  int    // 0: no answer
	pid     int    // the handler process that answered
	err     string // why there was no answer
}

// load sends GET /hello/pid at a fixed rate, alternating between edges,
// until stop is called; each request is timed from when it was due.
type load struct {
	client *http.Client
	edges  []string
	rate   int
	start  time.Time

	mu      sync.Mutex
	results []result
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func startLoad(ctx context.Context, client *http.Client, edges []string, rate int) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{client: client, edges: edges, rate: rate, start: time.Now(), cancel: cancel}
	l.wg.Go(func() {
		var reqs sync.WaitGroup
		defer reqs.Wait()
		for i := 0; ; i++ {
			due := l.start.Add(time.Duration(i) * time.Second / time.Duration(l.rate))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(due)):
			}
			edge := l.edges[i%len(l.edges)]
			reqs.Go(func() { l.record(l.one(edge, due)) })
		}
	})
	return l
}

func (l *load) one(edge string, due time.Time) result {
	r := result{at: due.Sub(l.start)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+edge+"/hello/pid", nil)
	resp, err := l.client.Do(req)
	r.latency = time.Since(due)
	if err != nil {
		r.err = err.Error()
		return r
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.status = resp.StatusCode
	r.pid, _ = strconv.Atoi(strings.TrimSpace(string(body)))
	return r
}

func (l *load) record(r result) {
	l.mu.Lock()
	l.results = append(l.results, r)
	l.mu.Unlock()
}

func (l *load) now() time.Duration { return time.Since(l.start) }

// stop ends the load and waits for every request in flight.
func (l *load) stop() []result {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	rs := slices.Clone(l.results)
	slices.SortFunc(rs, func(a, b result) int { return int(a.at - b.at) })
	return rs
}

// phase is one stretch of the run: a fault (or none) from `from` to `to`.
type phase struct {
	Name     string        `json:"name"`
	From     time.Duration `json:"-"`
	To       time.Duration `json:"-"`
	Fault    time.Duration `json:"-"` // when the fault (or repair) happened
	Host     string        `json:"host,omitempty"`
	WaitHost bool          `json:"-"` // measure when Host serves again
	PID      int           `json:"-"` // Host's handler once the fault is done
	Faulty   bool          `json:"-"` // something was done at Fault
	Sent     int           `json:"sent"`
	Answered int           `json:"answered"`
	OK       int           `json:"ok"`
	Failed   int           `json:"failed"` // answered, not 200
	Slow     int           `json:"slow"`   // 200, but slower than `slow`
	Codes    map[int]int   `json:"failed_by_status,omitempty"`
	// Disruption is from the fault to the end of the last request due in the
	// phase that failed or took longer than `slow` (0: none did).
	Disruption time.Duration `json:"disruption_ns"`
	// Back is from the repair to the first request Host answered again
	// (looked for in later phases too).
	Back     time.Duration  `json:"back_ns,omitempty"`
	P50, P99 time.Duration  `json:"-"`
	P50ms    float64        `json:"p50_ms"`
	P99ms    float64        `json:"p99_ms"`
	Share    map[string]int `json:"served_by"`
}

func (p *phase) measure(rs []result, hostOf func(pid int) string) {
	var lat []time.Duration
	p.Share = map[string]int{}
	for _, r := range rs {
		if r.at < p.From || r.at >= p.To {
			continue
		}
		p.Sent++
		if r.status == 0 {
			continue
		}
		p.Answered++
		lat = append(lat, r.latency)
		if r.status != http.StatusOK {
			p.Failed++
			if p.Codes == nil {
				p.Codes = map[int]int{}
			}
			p.Codes[r.status]++
		} else {
			p.OK++
			p.Share[hostOf(r.pid)]++
			if r.latency > slow {
				p.Slow++
			}
		}
		if p.Faulty && (r.status != http.StatusOK || r.latency > slow) {
			if d := r.at + r.latency - p.Fault; d > p.Disruption {
				p.Disruption = d
			}
		}
	}
	for _, r := range rs {
		if p.WaitHost && p.Back == 0 && r.at >= p.Fault && r.status == http.StatusOK && r.pid == p.PID {
			p.Back = r.at + r.latency - p.Fault
		}
		if p.Faulty && r.at >= p.From && r.at < p.To && r.status == 0 {
			if d := r.at + r.latency - p.Fault; d > p.Disruption {
				p.Disruption = d
			}
		}
	}
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		p.P50, p.P99 = lat[n/2], lat[min(n-1, n*99/100)]
		p.P50ms, p.P99ms = ms(p.P50), ms(p.P99)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cluster is what the test runs across the lab.
type cluster struct {
	t        *testing.T
	lab      *lab
	bin      meshtest.Binaries
	etcdBin  string
	etcd     string // --etcd of every process
	http     *http.Client
	sidecars map[string]*proc // by host name
	edges    []*proc
	etcds    []*proc
	mu       sync.Mutex
	pids     map[int]string // handler pid → host name
	latest   map[string]int // host name → its newest handler pid
	retired  time.Duration  // CPU of the sidecars and handlers stopped so far
}

func TestMultihost(t *testing.T) {
	if os.Getenv("GRIDDLE_MULTIHOST") != "1" {
		t.Skip("multi-host test: set GRIDDLE_MULTIHOST=1 to run it (needs root, ip and tc; about two minutes)")
	}
	if os.Geteuid() != 0 {
		t.Skip("multi-host test: needs root to make network namespaces and links")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("multi-host test: %s is not installed (apt-get install iproute2)", tool)
		}
	}
	ctx := t.Context()
	dir := t.TempDir()
	bin, err := meshtest.Build(dir, "hello")
	if err != nil {
		t.Fatal(err)
	}
	root, err := meshtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, bin: bin, etcdBin: filepath.Join(dir, "etcdnode"), sidecars: map[string]*proc{}, pids: map[int]string{}, latest: map[string]int{}}
	build := exec.CommandContext(ctx, "go", "build", "-o", c.etcdBin, "./e2e/multihost/etcdnode")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build etcdnode: %v\n%s", err, out)
	}

	c.lab = newLab(t, "gmh-", "10.77.0")
	var etcdHosts, edgeHosts, svcHosts []*host
	for i := range 3 {
		etcdHosts = append(etcdHosts, c.lab.add(fmt.Sprintf("etcd%d", i+1), 11+i))
	}
	for i := range 2 {
		edgeHosts = append(edgeHosts, c.lab.add(fmt.Sprintf("edge%d", i+1), 21+i))
	}
	for i := range 3 {
		svcHosts = append(svcHosts, c.lab.add(fmt.Sprintf("svc%d", i+1), 31+i))
	}
	client := c.lab.add("client", 100)

	dialer, err := newNSDialer(ctx, client.ns, 4)
	if err != nil {
		t.Fatal(err)
	}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
	}}

	// etcd: three members, one per host.
	var members, endpoints []string
	for _, h := range etcdHosts {
		members = append(members, fmt.Sprintf("%s=http://%s:%d", h.name, h.ip, etcdPeer))
		endpoints = append(endpoints, fmt.Sprintf("%s:%d", h.ip, etcdClient))
	}
	c.etcd = strings.Join(endpoints, ",")
	for _, h := range etcdHosts {
		c.etcds = append(c.etcds, start(t, h, h.name, c.etcdBin, "--name", h.name, "--dir", filepath.Join(dir, h.name),
			"--client", fmt.Sprintf("%s:%d", h.ip, etcdClient), "--peer", fmt.Sprintf("%s:%d", h.ip, etcdPeer),
			"--initial-cluster", strings.Join(members, ",")))
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitFor(t, 60*time.Second, "etcd cluster", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := cli.Put(cctx, "/multihost/ready", "1")
		return err == nil
	})
	doc, err := routing.Parse([]byte(rules))
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	b, _ := json.Marshal(doc)
	if _, err := cli.Put(ctx, discovery.RuleKey(discovery.DefaultPrefix, "hello"), string(b)); err != nil {
		t.Fatal(err)
	}

	for _, h := range svcHosts {
		c.startSidecar(h)
	}
	var edges []string
	for _, h := range edgeHosts {
		c.edges = append(c.edges, start(t, h, h.name, bin.Griddle, "edge", "--listen", fmt.Sprintf("%s:%d", h.ip, edgePort),
			"--admin", fmt.Sprintf("%s:%d", h.ip, edgeAdmin), "--admin-public", "--etcd", c.etcd, "--log-level", "warn"))
		edges = append(edges, fmt.Sprintf("%s:%d", h.ip, edgePort))
	}
	// Ready: every edge has reached every instance.
	waitFor(t, 30*time.Second, "edges reaching all three hosts", func() bool {
		seen := map[string]bool{}
		for i := range 60 {
			resp, err := c.http.Get("http://" + edges[i%2] + "/hello/pid")
			if err != nil {
				return false
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			pid, _ := strconv.Atoi(strings.TrimSpace(string(body)))
			seen[c.hostOf(pid)] = true
		}
		return seen["svc1"] && seen["svc2"] && seen["svc3"]
	})

	machine0, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	ours0 := c.ours(t)
	began := time.Now()
	l := startLoad(ctx, c.http, edges, rate)
	var phases []*phase
	mark := func(name, host string, waitHost bool, fault func() error, hold time.Duration) {
		t.Helper()
		p := &phase{Name: name, Host: host, WaitHost: waitHost, From: l.now(), Faulty: fault != nil}
		p.Fault = p.From
		if fault != nil {
			if err := fault(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if waitHost {
			p.PID = c.handlerPID(host)
		}
		time.Sleep(hold)
		p.To = l.now()
		phases = append(phases, p)
	}
	svc1, svc2, svc3, e1 := svcHosts[0], svcHosts[1], svcHosts[2], etcdHosts[0]

	mark("steady", "", false, nil, 10*time.Second)
	mark("cut svc1's link", "svc1", false, func() error { return c.lab.cut(svc1, true) }, 10*time.Second)
	mark("svc1's link back", "svc1", true, func() error { return c.lab.cut(svc1, false) }, 10*time.Second)
	mark("kill -9 svc2's sidecar", "svc2", false, func() error { c.retire("svc2"); c.sidecars["svc2"].kill(); return nil }, 6*time.Second)
	mark("start svc2 again", "svc2", true, func() error { c.startSidecar(svc2); return nil }, 8*time.Second)
	mark("restart svc3 (SIGTERM, start)", "svc3", true, func() error {
		c.retire("svc3")
		if err := c.sidecars["svc3"].stop(20 * time.Second); err != nil {
			return err
		}
		c.startSidecar(svc3)
		return nil
	}, 8*time.Second)
	var impaired string
	mark("slow, lossy link to svc3", "svc3", false, func() (err error) { impaired, err = impair(svc3); return err }, 10*time.Second)
	t.Logf("svc3's link: %s", impaired)
	mark("svc3's link repaired", "svc3", false, func() error { return repair(svc3) }, 5*time.Second)
	mark("partition etcd1", "etcd1", false, func() error { return c.lab.cut(e1, true) }, 15*time.Second)
	mark("etcd1 back", "etcd1", false, func() error { return c.lab.cut(e1, false) }, 10*time.Second)
	rs := l.stop()
	machine1, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	// What other processes used while the faults ran (what our stopped
	// sidecars used while draining counts here too, a little): over half a
	// core, and the figures say more about the machine than about the mesh.
	others := float64(machine1-machine0-(c.ours(t)-ours0)) / float64(time.Since(began))
	noisy := others > 0.5
	for _, p := range phases {
		p.measure(rs, c.hostOf)
	}

	// Capacity: CPU per request of each component at a higher rate, all
	// hosts healthy (the input of the capacity model).
	time.Sleep(2 * time.Second)
	cpu0 := c.cpu(t)
	lp := startLoad(ctx, c.http, edges, peakRate)
	time.Sleep(8 * time.Second)
	rsPeak := lp.stop()
	cpu1 := c.cpu(t)
	peak := &phase{Name: fmt.Sprintf("capacity run at %d/s", peakRate), To: time.Hour}
	peak.measure(rsPeak, c.hostOf)
	phases = append(phases, peak)
	peakServed := peak.OK
	report := struct {
		Rate     int                `json:"rate_per_s"`
		Impaired string             `json:"impaired_link"`
		Phases   []*phase           `json:"phases"`
		CPU      map[string]float64 `json:"cpu_us_per_request"`
		PeakRate int                `json:"cpu_measured_at_per_s"`
		Others   float64            `json:"other_processes_cores"`
	}{rate, impaired, phases, map[string]float64{}, peakRate, others}
	t.Logf("%-38s %6s %8s %6s %6s %5s %9s %9s %9s %9s  %s", "phase", "sent", "answered", "ok", "failed", "slow", "p50 ms", "p99 ms", "moved ms", "back ms", "served by")
	unanswered := 0
	for _, p := range phases {
		unanswered += p.Sent - p.Answered
		t.Logf("%-38s %6d %8d %6d %6d %5d %9.1f %9.1f %9.0f %9.0f  %v %v", p.Name, p.Sent, p.Answered, p.OK, p.Failed, p.Slow, p.P50ms, p.P99ms, ms(p.Disruption), ms(p.Back), p.Share, p.Codes)
	}
	for k, d := range cpu1 {
		if peakServed > 0 {
			report.CPU[k] = float64((d - cpu0[k]).Microseconds()) / float64(peakServed)
		}
	}
	t.Logf("CPU µs per request at %d/s, by component (all instances together): %v", peakRate, report.CPU)
	if out := os.Getenv("GRIDDLE_MULTIHOST_OUT"); out != "" {
		b, _ := json.MarshalIndent(report, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Error(err)
		}
	}

	t.Logf("other processes used %.2f cores during the faults", others)
	if noisy {
		t.Logf("the machine was busy with other work (%.2f cores): failures and latencies are reported, not checked", others)
		return
	}
	if unanswered > 0 {
		var why []string
		for _, r := range rs {
			if r.status == 0 && len(why) < 5 {
				why = append(why, fmt.Sprintf("at %s: %s", r.at.Round(time.Millisecond), r.err))
			}
		}
		t.Errorf("%d requests got no answer, e.g. %v", unanswered, why)
	}
	for _, p := range phases[:len(phases)-1] {
		switch {
		case p.Sent < rate*int(p.To-p.From)/int(time.Second)*9/10:
			t.Errorf("%s: %d requests sent in %s, want about %d/s: the load generator fell behind", p.Name, p.Sent, p.To-p.From, rate)
		case p.Failed > 0:
			t.Errorf("%s: %d requests failed, want every one answered with 200", p.Name, p.Failed)
		case p.WaitHost && p.Back == 0:
			t.Errorf("%s: %s served nothing after it came back", p.Name, p.Host)
		}
	}
}

// startSidecar starts (or starts again) hello's sidecar on h, and waits
// until it reports its handler's pid.
func (c *cluster) startSidecar(h *host) {
	c.t.Helper()
	admin := fmt.Sprintf("%s:%d", h.ip, sidecarAdm)
	p := start(c.t, h, "sidecar "+h.name, c.bin.Griddle, "sidecar", "--service", "hello", "--version", "v1", "--id", h.name,
		"--plugin", c.bin.Handlers["hello"], "--listen", fmt.Sprintf("tcp://%s:%d", h.ip, sidecarPort),
		"--admin", admin, "--admin-public", "--http-prefix", "/hello/", "--etcd", c.etcd, "--ttl", sidecarTTL, "--log-level", "warn")
	c.sidecars[h.name] = p
	waitFor(c.t, 20*time.Second, "sidecar on "+h.name, func() bool {
		var st struct {
			HandlerPID int `json:"handlerPid"`
		}
		resp, err := c.http.Get("http://" + admin + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&st) != nil || st.HandlerPID == 0 {
			return false
		}
		c.mu.Lock()
		c.pids[st.HandlerPID] = h.name
		c.latest[h.name] = st.HandlerPID
		c.mu.Unlock()
		return true
	})
}

// retire adds the CPU the sidecar on host and its handler have used to
// c.retired, before the test stops them (what they use while draining is
// not counted).
func (c *cluster) retire(host string) {
	for _, pid := range []int{c.sidecars[host].pid(), c.handlerPID(host)} {
		if d, err := cpuTime(pid); err == nil {
			c.mu.Lock()
			c.retired += d
			c.mu.Unlock()
		}
	}
}

// ours is the CPU used so far by the test process and every process it
// runs now.
func (c *cluster) ours(t *testing.T) time.Duration {
	var sum time.Duration
	for _, d := range c.cpu(t) {
		sum += d
	}
	self, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return sum + self + c.retired
}

// handlerPID is the newest handler process of host's sidecar.
func (c *cluster) handlerPID(host string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latest[host]
}

func (c *cluster) hostOf(pid int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.pids[pid]; ok {
		return h
	}
	return "pid " + strconv.Itoa(pid)
}

// cpu reads the CPU used so far by each component: the two edges, the
// three sidecars, their handlers and the etcd members.
func (c *cluster) cpu(t *testing.T) map[string]time.Duration {
	out := map[string]time.Duration{}
	add := func(k string, pid int) {
		d, err := cpuTime(pid)
		if err != nil {
			t.Logf("cpu of %s: %v", k, err)
			return
		}
		out[k] += d
	}
	c.mu.Lock()
	for _, pid := range c.latest {
		add("handlers", pid)
	}
	c.mu.Unlock()
	for _, p := range c.sidecars {
		add("sidecars", p.pid())
	}
	for _, p := range c.edges {
		add("edges", p.pid())
	}
	for _, p := range c.etcds {
		add("etcd", p.pid())
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
