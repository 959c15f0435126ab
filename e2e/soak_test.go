package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/launch"
	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// TestSoak runs the example app (profiles, messages, feed, the store and
// the edge as processes of their own) under a steady open-loop load of
// reads and writes, samples the resident memory (/proc/PID/status) and
// goroutines (pprof, or the handler's own figures through its sidecar) of
// every process, and fails when either still grows over the second half
// of the run. Memory is judged by its anonymous part (RssAnon): the file
// pages Badger maps (its value log and tables) are page cache, and grow
// with the data until a file is complete.
//
// In runs of 5 minutes or more, the store runs with Badger's smallest
// memtables (--memtable-mb 8), and before the measured run a warm-up writes messages until the store has
// flushed two memtables to disk (two table files appear in its
// directory). A memtable is reserved whole; the first one, and the one
// opened while the first is flushed, lie in memory fresh from the system,
// whose pages become resident only as writes fill them, so until then the
// store's memory rises with every write however bounded it is. From the
// third on, a memtable reuses the memory of one flushed, resident at once:
// the measured run starts in the steady state.
//
// GRIDDLE_SOAK=1 runs 60 s (.ci/run does, with -v); GRIDDLE_SOAK=10m (any
// duration) runs that long and judges the last half.
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	const rate = 200
	every := max(dur/30, 2*time.Second)

	// The warm-up is for runs long enough to judge the steady state; the
	// short one (CI) judges the store's first memtable filling, at
	// Badger's default size, whose first minute stays well inside the
	// allowance.
	warm := dur >= 5*time.Minute
	var storeArgs []string
	if warm {
		storeArgs = []string{"--memtable-mb", "8"}
	}
	m := meshtest.Start(t, bin, storeArgs...)
	sidecars := map[string]*meshtest.Proc{
		"profiles": m.Sidecar("profiles", "v1", "--http-prefix", "/profiles/"),
		"messages": m.Sidecar("messages", "v1", "--http-prefix", "/messages/"),
		"feed":     m.Sidecar("feed", "v1", "--http-prefix", "/feed/"),
	}
	e := m.Edge("--no-admission")
	base := "http://" + e.Addr
	seed(t, e.Addr, 100)
	for _, p := range []string{"/profiles/1", "/messages/1", "/feed/1"} {
		waitRoute(t, base+p)
	}

	// What is sampled: each process's pid and a way to count its
	// goroutines.
	type proc struct {
		name       string
		pid        int
		goroutines func() (goroutineCount, error)
	}
	pprofCount := func(addr string) func() (goroutineCount, error) {
		return func() (goroutineCount, error) {
			return pprofGoroutines("http://" + addr + "/debug/pprof/goroutine?debug=1")
		}
	}
	procs := []proc{
		{"edge", e.PID(), pprofCount(e.Admin)},
		{"store", m.StoreProc.PID(), pprofCount(strings.TrimPrefix(m.Store, "http://"))},
	}
	for _, svc := range []string{"profiles", "messages", "feed"} {
		sc := sidecars[svc]
		var st sidecarStatus
		if err := sc.Status(&st); err != nil || st.HandlerPID == 0 {
			t.Fatalf("%s sidecar status: %+v, %v", svc, st, err)
		}
		procs = append(procs,
			proc{"sidecar " + svc, sc.PID(), pprofCount(sc.Admin)},
			proc{"handler " + svc, st.HandlerPID, handlerGoroutines(sc.Admin)})
	}

	write := func(i int) *http.Request { // a message and its event, delivered to feed
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/messages/%d", base, i%100+1),
			bytes.NewReader([]byte(`{"from":"1","text":"soak"}`)))
		req.Header.Set("Content-Type", "application/json")
		return req
	}
	if warm {
		warmUp(t, m.StoreDir, write)
	}

	send := func(i int) int {
		var req *http.Request
		if i%10 == 9 { // one in ten writes
			req = write(i)
		} else {
			req, _ = http.NewRequest("GET", fmt.Sprintf("%s/profiles/%d", base, i%100+1), nil)
		}
		resp, err := loadClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			return http.StatusOK
		}
		return resp.StatusCode
	}
	l := startOpenLoad(send, rate)
	// A sample holds the floor of each process's RssAnon and goroutines
	// over the interval before it, read every second: a leak raises the
	// floor as much as any reading, while what is only passing through
	// does not tilt the line (a memtable flush doubles the store's RssAnon
	// for some 15 s; a burst of requests held up on the shared cores
	// raises a sidecar's goroutines for a moment). The memory peaks are
	// kept for the table.
	//
	// Goroutines are judged in two parts: those serving an HTTP
	// connection (both ends of each sidecar's pool toward the store, the
	// load's connections to the edge), whose number follows how many
	// connections bursts left open, within the pools' bounds; and the
	// rest, which must stay level.
	read := func(p proc) (rss float64, g goroutineCount) {
		rss, err := rssMiB(p.pid, "RssAnon:")
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		g, err = p.goroutines()
		if err != nil {
			t.Fatalf("%s goroutines: %v", p.name, err)
		}
		return rss, g
	}
	// A goroutine floor is taken over the last `held` of readings, the
	// interval or longer: the hop workers a burst started wait
	// hop.WorkerIdle for the next stream before they exit, so a burst
	// near a sample's end would raise a floor taken over a shorter
	// interval, and a burst near the run's end tilt the line.
	held := max(every, hop.WorkerIdle+time.Second)
	type reading struct {
		at       time.Time
		gor, con float64
	}
	recent := make([][]reading, len(procs))
	var samples []sample
	peak := make([]float64, len(procs))
	for end := time.Now().Add(dur); time.Now().Before(end); {
		n := len(procs)
		s := sample{rss: make([]float64, n), gor: make([]float64, n), con: make([]float64, n)}
		for i := range procs {
			s.rss[i], s.gor[i], s.con[i] = math.Inf(1), math.Inf(1), math.Inf(1)
		}
		take := func(i int, p proc) {
			rss, g := read(p)
			s.rss[i], peak[i] = min(s.rss[i], rss), max(peak[i], rss)
			now := time.Now()
			r := recent[i][:0]
			for _, x := range recent[i] {
				if now.Sub(x.at) < held {
					r = append(r, x)
				}
			}
			recent[i] = append(r, reading{now, float64(g.other), float64(g.conns)})
		}
		for i, p := range procs {
			take(i, p)
		}
		for until := time.Now().Add(every); time.Now().Before(until); {
			time.Sleep(min(time.Second, time.Until(until)))
			for i, p := range procs {
				take(i, p)
			}
		}
		for i := range procs {
			for _, x := range recent[i] {
				s.gor[i], s.con[i] = min(s.gor[i], x.gor), min(s.con[i], x.con)
			}
		}
		s.at = l.now()
		for _, p := range procs {
			all, err := rssMiB(p.pid, "VmRSS:")
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			s.total = append(s.total, all)
		}
		samples = append(samples, s)
	}
	l.finish()
	rs := l.results(0, l.now())
	failed := 0
	for _, r := range rs {
		if r.code != http.StatusOK {
			failed++
		}
	}
	t.Logf("soak of %v at %d/s (90%% reads, 10%% writes): %d requests, %d failed; samples every %v", dur, rate, len(rs), failed, every)
	if failed*1000 > len(rs) {
		t.Errorf("%d of %d requests failed, want under 0.1%%", failed, len(rs))
	}

	// Judge the second half: the growth a least-squares line gives over
	// it, against a floor and a tenth of the level.
	half := samples[len(samples)/2:]
	window := half[len(half)-1].at - half[0].at
	var table []string
	table = append(table, fmt.Sprintf("%-18s %31s %10s %6s %9s   %22s %10s   %22s %10s", "process", "RssAnon MiB first / mid / last",
		"MiB/min", "peak", "VmRSS", "goroutines first/mid/last", "per min", "connections' first/mid/last", "per min"))
	for i, p := range procs {
		xs, rss, gor, con := make([]float64, len(half)), make([]float64, len(half)), make([]float64, len(half)), make([]float64, len(half))
		for j, s := range half {
			xs[j], rss[j], gor[j], con[j] = s.at.Minutes(), s.rss[i], s.gor[i], s.con[i]
		}
		rssSlope, gorSlope, conSlope := slope(xs, rss), slope(xs, gor), slope(xs, con)
		first, mid, last := samples[0], half[0], half[len(half)-1]
		table = append(table, fmt.Sprintf("%-18s %12.1f / %6.1f / %6.1f %+10.2f %6.1f %9.1f   %6.0f / %5.0f / %5.0f %+10.1f   %6.0f / %5.0f / %5.0f %+10.1f",
			p.name, first.rss[i], mid.rss[i], last.rss[i], rssSlope, peak[i], last.total[i],
			first.gor[i], mid.gor[i], last.gor[i], gorSlope, first.con[i], mid.con[i], last.con[i], conSlope))
		if grow := rssSlope * window.Minutes(); grow > max(8, 0.1*mean(rss)) {
			t.Errorf("%s: anonymous memory grows %.1f MiB/min over the second half (%.1f MiB in %v)", p.name, rssSlope, grow, window.Round(time.Second))
		}
		// A saw-tooth (the store's memtables fill and flush) tilts the
		// line by where its flushes fall; its troughs show a leak
		// instead: the second half's lowest reading against the first's.
		// Only after a warm-up: the short run starts with the store's
		// first memtable empty, and its rise is the first half's.
		if lo1, lo2 := lowest(samples[:len(samples)/2], i), lowest(half, i); warm && lo2-lo1 > max(8, 0.1*lo1) {
			t.Errorf("%s: the lowest anonymous memory rose from %.1f MiB in the first half to %.1f in the second", p.name, lo1, lo2)
		}
		if grow := gorSlope * window.Minutes(); grow > max(20, 0.1*mean(gor)) {
			t.Errorf("%s: goroutines grow %.1f/min over the second half (%.0f in %v)", p.name, gorSlope, grow, window.Round(time.Second))
		}
		// A sidecar keeps up to StoreMaxIdleConns idle connections to the
		// store, two goroutines each (and the store one for each): the
		// floor may rise by that much as bursts leave more open. A leak
		// of connections passes it within seconds at this rate.
		if grow := conSlope * window.Minutes(); grow > 2*launch.StoreMaxIdleConns {
			t.Errorf("%s: connection goroutines grow %.1f/min over the second half (%.0f in %v), more than %d idle connections hold",
				p.name, conSlope, grow, window.Round(time.Second), launch.StoreMaxIdleConns)
		}
	}
	t.Logf("over the last %v:\n%s", window.Round(time.Second), strings.Join(table, "\n"))
}

// warmUp sends the requests write makes, from a few clients at once,
// until the store in dir has flushed two memtables: two table files
// (*.sst) that were not there before have appeared (compactions write
// tables too, but none runs before level 0 holds two). It fails the test
// if that takes over 5 minutes or more than 1 in 1,000 writes fail. Then
// it waits for the compaction those tables start to end.
func warmUp(t *testing.T, dir string, write func(i int) *http.Request) {
	t.Helper()
	start := time.Now()
	tables := func() map[string]bool {
		names, err := filepath.Glob(filepath.Join(dir, "*.sst"))
		if err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		set := make(map[string]bool, len(names))
		for _, n := range names {
			set[n] = true
		}
		return set
	}
	const flushes = 2
	before, seen := tables(), map[string]bool{}
	var firstAt time.Duration
	flushed := func() bool {
		for n := range tables() {
			if !before[n] && !seen[n] {
				seen[n] = true
				if len(seen) == 1 {
					firstAt = time.Since(start)
				}
			}
		}
		return len(seen) >= flushes
	}
	// The writers stop between requests, so that none is cancelled.
	var stop atomic.Bool
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				i := int(sent.Add(1))
				resp, err := loadClient.Do(write(i))
				if err != nil {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					failed.Add(1)
				}
			}
		})
	}
	deadline := start.Add(5 * time.Minute)
	for !flushed() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	done := flushed()
	stop.Store(true)
	wg.Wait()
	if !done {
		t.Fatalf("warm-up: %d of %d memtables flushed in %v (%d writes, %d failed)", len(seen), flushes, time.Since(start).Round(time.Second), sent.Load(), failed.Load())
	}
	flushedAt := time.Since(start)
	// Two tables on level 0 start a compaction: wait until the table
	// files have stayed the same for 5 s, so that the measured run does
	// not begin with it.
	last, still := tables(), time.Now()
	for time.Since(still) < 5*time.Second && time.Now().Before(deadline.Add(time.Minute)) {
		time.Sleep(500 * time.Millisecond)
		if now := tables(); !maps.Equal(now, last) {
			last, still = now, time.Now()
		}
	}
	t.Logf("warm-up: the store flushed its first memtable after %v, its second after %v (%d writes, %d failed), and its tables were still after %v",
		firstAt.Round(100*time.Millisecond), flushedAt.Round(100*time.Millisecond), sent.Load(), failed.Load(), time.Since(start).Round(100*time.Millisecond))
	if failed.Load()*1000 > sent.Load() {
		t.Errorf("warm-up: %d of %d writes failed, want under 0.1%%", failed.Load(), sent.Load())
	}
}

func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("GRIDDLE_SOAK")
	switch v {
	case "":
		t.Skip("the soak test runs with GRIDDLE_SOAK=1 (60 s, as .ci/run does) or GRIDDLE_SOAK=<duration>")
	case "1":
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 30*time.Second {
		t.Fatalf("GRIDDLE_SOAK=%q: want 1 or a duration of at least 30s", v)
	}
	return d
}

// rssMiB is the field ("VmRSS:", "RssAnon:") of process pid's status.
func rssMiB(pid int, field string) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// goroutineCount is a process's goroutines: conns serve an HTTP
// connection (a client's read and write loops, a server's conn), other
// are the rest.
type goroutineCount struct{ other, conns int }

// connFrames are the functions at the root of a goroutine that serves
// one HTTP connection.
var connFrames = []string{"net/http.(*persistConn).readLoop", "net/http.(*persistConn).writeLoop", "net/http.(*conn).serve"}

// pprofGoroutines reads a goroutine profile in debug=1 form: groups of
// identical stacks, each headed "N @ pc…" and followed by its frames
// ("#\tpc\tfunction+off\tfile:line").
func pprofGoroutines(url string) (goroutineCount, error) {
	var g goroutineCount
	resp, err := http.Get(url)
	if err != nil {
		return g, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "goroutine profile: total ") {
		return g, fmt.Errorf("%s: first line %q (%v)", url, sc.Text(), sc.Err())
	}
	total, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "goroutine profile: total "))
	if err != nil {
		return g, fmt.Errorf("%s: %w", url, err)
	}
	group, counted := 0, false
	for sc.Scan() {
		line := sc.Text()
		if n, _, ok := strings.Cut(line, " @ "); ok && !strings.HasPrefix(line, "#") {
			group, _ = strconv.Atoi(n)
			counted = false
			continue
		}
		if counted || !strings.HasPrefix(line, "#") {
			continue
		}
		for _, f := range connFrames {
			if strings.Contains(line, "\t"+f+"+") {
				g.conns += group
				counted = true
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return g, fmt.Errorf("%s: %w", url, err)
	}
	g.other = total - g.conns
	return g, nil
}

// handlerGoroutines reads a handler's goroutines from its sidecar, which
// reports their total only (counted as other).
func handlerGoroutines(admin string) func() (goroutineCount, error) {
	return func() (goroutineCount, error) {
		resp, err := http.Get("http://" + admin + "/debug/handler")
		if err != nil {
			return goroutineCount{}, err
		}
		defer resp.Body.Close()
		var st struct {
			Goroutines int `json:"goroutines"`
		}
		if resp.StatusCode != http.StatusOK {
			return goroutineCount{}, fmt.Errorf("%s/debug/handler: %s", admin, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return goroutineCount{}, err
		}
		return goroutineCount{other: st.Goroutines}, nil
	}
}

// sample is one reading of every process in TestSoak.
type sample struct {
	at            time.Duration
	rss, gor, con []float64 // per proc: anonymous MiB (the interval's floor), other goroutines, connection goroutines (floors over the last held)
	total         []float64 // per proc: VmRSS MiB
}

// lowest is the least RssAnon of process i in samples.
func lowest(samples []sample, i int) float64 {
	lo := samples[0].rss[i]
	for _, s := range samples[1:] {
		lo = min(lo, s.rss[i])
	}
	return lo
}

// slope of the least-squares line through (xs, ys).
func slope(xs, ys []float64) float64 {
	mx, my := mean(xs), mean(ys)
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
