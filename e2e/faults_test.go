package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/faultproxy"
	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// The fault suite: components run as separate processes under a steady
// open-loop load while one fault at a time is injected — a fault proxy
// between the edge and one sidecar and between one sidecar and the store,
// SIGSTOP, kill -9 of each component, etcd stopped and restarted, one
// sidecar's clock 30 s ahead. Each case prints the requests sent, answered
// and failed, and checks that only the requests it may cost (those inside
// the faulty part when the fault struck, or sent to it before it was
// ejected) failed, and that the rest were answered.
//
// GRIDDLE_FAULTS=1 runs the short version (.ci/run does, with -v);
// GRIDDLE_FAULTS=long runs the long one the README reports (longer faults,
// a 30 s etcd outage, a higher rate).

// faultScale holds the durations of one version of the suite.
type faultScale struct {
	rate       int           // requests per second
	before     time.Duration // load before the fault
	hold       time.Duration // how long a fault lasts
	after      time.Duration // load after the fault is healed
	etcdOutage time.Duration
}

func faultsScale(t *testing.T) faultScale {
	switch os.Getenv("GRIDDLE_FAULTS") {
	case "1":
		return faultScale{rate: 200, before: time.Second, hold: 2 * time.Second, after: 2 * time.Second, etcdOutage: 10 * time.Second}
	case "long":
		return faultScale{rate: 300, before: 2 * time.Second, hold: 10 * time.Second, after: 10 * time.Second, etcdOutage: 30 * time.Second}
	}
	t.Skip("the fault suite runs with GRIDDLE_FAULTS=1 (short, as .ci/run does) or GRIDDLE_FAULTS=long")
	return faultScale{}
}

// loadResult is one request of an open-loop load.
type loadResult struct {
	at   time.Duration // when it was due, since the load began
	took time.Duration
	code int // HTTP status; 0: no HTTP answer
}

// openLoad sends GET requests at a fixed rate, each on its own goroutine,
// whatever happens to the answers (open loop).
type openLoad struct {
	begin time.Time
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	res   []loadResult
}

var loadClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 1024},
}

// getting turns a URL per request into a sender for startOpenLoad.
func getting(url func(i int) string) func(i int) int {
	return func(i int) int {
		resp, err := loadClient.Get(url(i))
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
}

// startOpenLoad calls send(i) for the i-th request at rate per second;
// send returns the HTTP status (0: none).
func startOpenLoad(send func(i int) int, rate int) *openLoad {
	l := &openLoad{begin: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		every := time.Second / time.Duration(rate)
		for i := 0; ; i++ {
			due := l.begin.Add(time.Duration(i) * every)
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-l.stop:
					return
				}
			}
			select {
			case <-l.stop:
				return
			default:
			}
			wg.Go(func() {
				code := send(i)
				r := loadResult{at: due.Sub(l.begin), took: time.Since(due), code: code}
				l.mu.Lock()
				l.res = append(l.res, r)
				l.mu.Unlock()
			})
		}
	}()
	return l
}

// now is the time since the load began.
func (l *openLoad) now() time.Duration { return time.Since(l.begin) }

// results returns the requests due in [from, to) that have ended.
func (l *openLoad) results(from, to time.Duration) []loadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []loadResult
	for _, r := range l.res {
		if r.at >= from && r.at < to {
			out = append(out, r)
		}
	}
	return out
}

func (l *openLoad) finish() {
	close(l.stop)
	<-l.done
}

// faultCase is one fault: inject at the case's fault time, heal after
// hold (heal may be nil). mayFail tells whether a failed request was one
// the fault may cost; f and h are the fault's and the heal's times.
type faultCase struct {
	name    string
	inject  func(t *testing.T)
	heal    func(t *testing.T)
	hold    time.Duration // 0: the scale's
	after   time.Duration // 0: the scale's
	mayFail func(r loadResult, f, h time.Duration) bool
	maxFail int // at most this many failures in all; 0: no limit beyond mayFail
	check   func(t *testing.T, rs []loadResult, f, h time.Duration)
}

// Which failures a fault may cost.
var (
	// none: nothing may fail.
	none = func(loadResult, time.Duration, time.Duration) bool { return false }
	// inFlightOrEjecting: requests in flight when the fault struck, and
	// those sent within a second after it (before the faulty instance is
	// ejected).
	inFlightOrEjecting = func(r loadResult, f, _ time.Duration) bool {
		return (r.at <= f && r.at+r.took >= f) || (r.at >= f && r.at < f+time.Second)
	}
)

// whileDown: requests in flight at the fault or sent until settle after
// the heal, for a component every request needs (the store, the edge).
func whileDown(settle time.Duration) func(loadResult, time.Duration, time.Duration) bool {
	return func(r loadResult, f, h time.Duration) bool {
		return r.at+r.took >= f && r.at < h+settle
	}
}

// edgeAnswersWithin is how long a request may go without an answer from
// an edge whose timeout is 2 s: its deadline, and room for a machine busy
// with other work.
const edgeAnswersWithin = 6 * time.Second

// runFaults runs the cases one after another under one load and reports
// each.
func runFaults(t *testing.T, sc faultScale, url func(i int) string, cases []faultCase) {
	t.Helper()
	l := startOpenLoad(getting(url), sc.rate)
	defer l.finish()
	var lines []string
	for _, c := range cases {
		hold, after := cmpOr(c.hold, sc.hold), cmpOr(c.after, sc.after)
		start := l.now()
		time.Sleep(sc.before)
		f := l.now()
		c.inject(t)
		time.Sleep(hold)
		if c.heal != nil {
			c.heal(t)
		}
		h := l.now()
		time.Sleep(after)
		end := l.now()
		time.Sleep(3 * time.Second) // let the last requests end (edge timeout 2s)
		rs := l.results(start, end)
		answered, failed, excused := 0, 0, 0
		var bad, unanswered []string
		for _, r := range rs {
			if r.took > edgeAnswersWithin && len(unanswered) < 5 {
				unanswered = append(unanswered, fmt.Sprintf("sent %v after the fault: %d in %v", (r.at-f).Round(time.Millisecond), r.code, r.took.Round(time.Millisecond)))
			}
			if r.code == http.StatusOK {
				answered++
				continue
			}
			failed++
			if c.mayFail(r, f, h) {
				excused++
			} else if len(bad) < 5 {
				bad = append(bad, fmt.Sprintf("sent %v after the fault: %d in %v", (r.at-f).Round(time.Millisecond), r.code, r.took.Round(time.Millisecond)))
			}
		}
		line := fmt.Sprintf("%-46s sent %5d  answered %5d  failed %4d", c.name, len(rs), answered, failed)
		lines = append(lines, line)
		t.Log(line)
		if failed > excused {
			t.Errorf("%s: %d failures it may not cost, e.g. %s", c.name, failed-excused, strings.Join(bad, "; "))
		}
		if len(unanswered) > 0 {
			t.Errorf("%s: requests the edge did not answer within %v (its timeout is 2 s), e.g. %s", c.name, edgeAnswersWithin, strings.Join(unanswered, "; "))
		}
		if c.maxFail > 0 && failed > c.maxFail {
			t.Errorf("%s: %d failed, want at most %d", c.name, failed, c.maxFail)
		}
		if want := int(float64(sc.rate) * (end - start).Seconds() * 0.9); len(rs) < want {
			t.Errorf("%s: only %d requests ended of about %d sent", c.name, len(rs), want)
		}
		if c.check != nil {
			c.check(t, rs, f, h)
		}
	}
	t.Logf("fault suite at %d/s:\n%s", sc.rate, strings.Join(lines, "\n"))
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func setFaults(p *faultproxy.Proxy, f faultproxy.Faults) func(*testing.T) {
	return func(t *testing.T) {
		if err := p.Set(f); err != nil {
			t.Fatal(err)
		}
	}
}

func newFaultProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestFaultsOnLinks puts fault proxies between the edge and one of two
// profiles sidecars and between that sidecar and the store.
func TestFaultsOnLinks(t *testing.T) {
	sc := faultsScale(t)
	m := meshtest.Start(t, bin)
	storeLink := newFaultProxy(t, strings.TrimPrefix(m.Store, "http://"))
	listen := meshtest.FreeAddr(t)
	edgeLink := newFaultProxy(t, listen)
	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/",
		"--listen", "tcp://"+listen, "--advertise", "tcp://"+edgeLink.Addr(), "--store", "http://"+storeLink.Addr())
	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/")
	e := m.Edge("--no-admission", "--timeout", "2s")
	seed(t, e.Addr, 100)
	url := func(i int) string { return "http://" + e.Addr + "/profiles/" + strconv.Itoa(i%100+1) }
	waitBothServe(t, url(0))

	heal := func(p *faultproxy.Proxy) func(*testing.T) { return func(*testing.T) { p.Heal() } }
	runFaults(t, sc, url, []faultCase{
		{
			name:   "edge→sidecar: 300 ms latency",
			inject: setFaults(edgeLink, faultproxy.Faults{Latency: 300 * time.Millisecond}), heal: heal(edgeLink),
			mayFail: none,
			check: func(t *testing.T, rs []loadResult, f, h time.Duration) {
				// Ejected as a latency outlier: later requests are fast but
				// for its trials (two a second).
				slow, n := 0, 0
				for _, r := range rs {
					if r.at > f+1500*time.Millisecond && r.at < h {
						n++
						if r.took > 250*time.Millisecond {
							slow++
						}
					}
				}
				t.Logf("  %d of %d requests sent 1.5 s after the latency began were slow", slow, n)
				if slow > n/20 {
					t.Errorf("%d of %d requests were slow 1.5 s after the link slowed: the slow instance was not ejected", slow, n)
				}
			},
		},
		{
			name:   "edge→sidecar: 100 KB/s",
			inject: setFaults(edgeLink, faultproxy.Faults{Bandwidth: 100 << 10}), heal: heal(edgeLink),
			mayFail: inFlightOrEjecting,
		},
		{
			name:   "edge→sidecar: blackhole",
			inject: setFaults(edgeLink, faultproxy.Faults{Blackhole: true}), heal: heal(edgeLink),
			mayFail: inFlightOrEjecting, maxFail: sc.rate / 2,
		},
		{
			name:   "edge→sidecar: reset",
			inject: setFaults(edgeLink, faultproxy.Faults{Reset: true}), heal: heal(edgeLink),
			mayFail: inFlightOrEjecting,
		},
		{
			name:   "edge→sidecar: half close",
			inject: setFaults(edgeLink, faultproxy.Faults{HalfClose: true}), heal: heal(edgeLink),
			mayFail: inFlightOrEjecting,
		},
		{
			name:   "sidecar→store: 100 ms latency",
			inject: setFaults(storeLink, faultproxy.Faults{Latency: 100 * time.Millisecond}), heal: heal(storeLink),
			mayFail: none,
		},
		{
			name:   "sidecar→store: blackhole",
			inject: setFaults(storeLink, faultproxy.Faults{Blackhole: true}), heal: heal(storeLink),
			mayFail: inFlightOrEjecting, maxFail: sc.rate / 2,
		},
		{
			// Held, a reset link is a store this sidecar cannot reach: once
			// three calls in a row have failed, the sidecar marks its
			// handler's 503s Unhealthy, the edge sends those reads to the
			// other instance and ejects this one. Only the reads before
			// that may fail; then its trials fail over too.
			name:   "sidecar→store: reset held",
			inject: setFaults(storeLink, faultproxy.Faults{Reset: true}), heal: heal(storeLink),
			mayFail: inFlightOrEjecting, maxFail: sc.rate / 20,
		},
		{
			// The store's connections are reset once: only the requests
			// reading the store at that moment may fail.
			name:   "sidecar→store: reset once",
			inject: setFaults(storeLink, faultproxy.Faults{Reset: true}), heal: heal(storeLink),
			hold:    10 * time.Millisecond,
			mayFail: inFlightOrEjecting,
		},
	})
}

// TestFaultsOfProcesses stops and kills the components of a mesh of two
// profiles sidecars, one with its clock 30 s ahead, the store, etcd, the
// edge and the control plane.
func TestFaultsOfProcesses(t *testing.T) {
	sc := faultsScale(t)
	m := meshtest.Start(t, bin)
	victim := m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/")
	m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/", "--clock-offset", "30s")
	ctl, _ := controlProc(t, m)
	e := m.Edge("--no-admission", "--timeout", "2s")
	seed(t, e.Addr, 100)
	url := func(i int) string { return "http://" + e.Addr + "/profiles/" + strconv.Itoa(i%100+1) }
	waitBothServe(t, url(0))
	var st sidecarStatus
	if err := victim.Status(&st); err != nil || st.HandlerPID == 0 {
		t.Fatalf("sidecar status: %+v, %v", st, err)
	}
	signal := func(p *meshtest.Proc, sig syscall.Signal) func(*testing.T) {
		return func(t *testing.T) {
			if err := syscall.Kill(p.PID(), sig); err != nil {
				t.Fatal(err)
			}
		}
	}
	runFaults(t, sc, url, []faultCase{
		{
			name:   "a sidecar's clock 30 s ahead",
			inject: func(*testing.T) {}, mayFail: none,
		},
		{
			name:   "SIGSTOP of a sidecar, then SIGCONT",
			inject: signal(victim, syscall.SIGSTOP), heal: signal(victim, syscall.SIGCONT),
			mayFail: inFlightOrEjecting, maxFail: sc.rate / 2,
		},
		{
			name: "kill -9 of a handler",
			inject: func(t *testing.T) {
				if err := killPID(st.HandlerPID); err != nil {
					t.Fatal(err)
				}
			},
			mayFail: inFlightOrEjecting,
		},
		{
			name:   "kill -9 of a sidecar",
			inject: func(*testing.T) { victim.Kill() },
			heal: func(*testing.T) {
				m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/") // two instances again
			},
			mayFail: inFlightOrEjecting,
		},
		{
			name:   "kill -9 of the store, restarted 1 s later",
			inject: func(*testing.T) { m.StoreProc.Kill() },
			hold:   time.Second,
			heal:   func(*testing.T) { m.StoreProc.Restart() },
			// Every request reads the store: those until it is back fail.
			mayFail: whileDown(time.Second),
		},
		{
			name:   fmt.Sprintf("etcd stopped %v, then restarted", sc.etcdOutage),
			inject: func(*testing.T) { m.StopEtcd() },
			hold:   sc.etcdOutage,
			heal:   func(*testing.T) { m.StartEtcd() },
			after:  max(sc.after, 10*time.Second), // the leases' time to lapse and the sidecars' to return
			// mayFail none: static stability.
			mayFail: none,
		},
		{
			name:    "kill -9 of the control plane",
			inject:  func(*testing.T) { ctl.Kill() },
			mayFail: none,
		},
		{
			name:   "kill -9 of the edge, restarted 1 s later",
			inject: func(*testing.T) { e.Kill() },
			hold:   time.Second,
			heal: func(t *testing.T) {
				e.Restart()
				waitReady(t, "http://"+e.Admin+"/healthz")
			},
			mayFail: whileDown(500 * time.Millisecond),
		},
	})
}

// waitReady waits until url answers 200.
func waitReady(t *testing.T, url string) {
	t.Helper()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("%s not ready after 20s", url)
		}
	}
}
