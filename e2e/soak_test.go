package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
// The store runs with Badger's smallest memtables (--memtable-mb 8), and
// before the measured run a warm-up writes messages until the store has
// flushed a memtable to disk (a table file appears in its directory): a
// memtable is reserved whole and its pages become resident as writes fill
// it, so until the first flush the store's memory rises with every write
// however bounded it is, and the measured run starts in the steady state.
//
// GRIDDLE_SOAK=1 runs 60 s (.ci/run does, with -v); GRIDDLE_SOAK=10m (any
// duration) runs that long and judges the last half.
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	const rate = 200
	every := max(dur/30, 2*time.Second)

	m := meshtest.Start(t, bin, "--memtable-mb", "8")
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
		goroutines func() (int, error)
	}
	pprofCount := func(addr string) func() (int, error) {
		return func() (int, error) { return pprofGoroutines("http://" + addr + "/debug/pprof/goroutine?debug=1") }
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
	warmUp(t, m.StoreDir, write)

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
	type sample struct {
		at         time.Duration
		rss, gor   []float64 // per proc: anonymous MiB, count
		total      []float64 // per proc: VmRSS MiB
		sent, fail int
	}
	var samples []sample
	for end := time.Now().Add(dur); time.Now().Before(end); time.Sleep(every) {
		s := sample{at: l.now()}
		for _, p := range procs {
			rss, err := rssMiB(p.pid, "RssAnon:")
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			g, err := p.goroutines()
			if err != nil {
				t.Fatalf("%s goroutines: %v", p.name, err)
			}
			all, err := rssMiB(p.pid, "VmRSS:")
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			s.rss = append(s.rss, rss)
			s.total = append(s.total, all)
			s.gor = append(s.gor, float64(g))
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
	table = append(table, fmt.Sprintf("%-18s %31s %10s %9s   %22s %10s", "process", "RssAnon MiB first / mid / last", "MiB/min", "VmRSS", "goroutines first/mid/last", "per min"))
	for i, p := range procs {
		xs, rss, gor := make([]float64, len(half)), make([]float64, len(half)), make([]float64, len(half))
		for j, s := range half {
			xs[j], rss[j], gor[j] = s.at.Minutes(), s.rss[i], s.gor[i]
		}
		rssSlope, gorSlope := slope(xs, rss), slope(xs, gor)
		first, mid, last := samples[0], half[0], half[len(half)-1]
		table = append(table, fmt.Sprintf("%-18s %12.1f / %6.1f / %6.1f %+10.2f %9.1f   %6.0f / %5.0f / %5.0f %+10.1f",
			p.name, first.rss[i], mid.rss[i], last.rss[i], rssSlope, last.total[i], first.gor[i], mid.gor[i], last.gor[i], gorSlope))
		if grow := rssSlope * window.Minutes(); grow > max(8, 0.1*mean(rss)) {
			t.Errorf("%s: anonymous memory grows %.1f MiB/min over the second half (%.1f MiB in %v)", p.name, rssSlope, grow, window.Round(time.Second))
		}
		if grow := gorSlope * window.Minutes(); grow > max(20, 0.1*mean(gor)) {
			t.Errorf("%s: goroutines grow %.1f/min over the second half (%.0f in %v)", p.name, gorSlope, grow, window.Round(time.Second))
		}
	}
	t.Logf("over the last %v:\n%s", window.Round(time.Second), strings.Join(table, "\n"))
}

// warmUp sends the requests write makes, from a few clients at once,
// until the store in dir has flushed a memtable: a table file (*.sst) that
// was not there before appears. It fails the test if that takes over 5
// minutes or more than 1 in 1,000 writes fail.
func warmUp(t *testing.T, dir string, write func(i int) *http.Request) {
	t.Helper()
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
	flushed := func(before map[string]bool) bool {
		for n := range tables() {
			if !before[n] {
				return true
			}
		}
		return false
	}
	before := tables()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(sent.Add(1))
				resp, err := loadClient.Do(write(i).WithContext(ctx))
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					failed.Add(1)
				}
			}
		})
	}
	for ctx.Err() == nil && !flushed(before) {
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	done := ctx.Err() == nil
	cancel()
	wg.Wait()
	if !done {
		t.Fatalf("warm-up: no memtable flushed in %v (%d writes, %d failed)", time.Since(start).Round(time.Second), sent.Load(), failed.Load())
	}
	t.Logf("warm-up: the store flushed its first memtable after %d writes (%d failed) in %v", sent.Load(), failed.Load(), time.Since(start).Round(100*time.Millisecond))
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

// pprofGoroutines reads the total of a goroutine profile in debug=1 form.
func pprofGoroutines(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, err
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("%s: first line %q", url, line)
	}
	return strconv.Atoi(rest)
}

// handlerGoroutines reads a handler's goroutines from its sidecar.
func handlerGoroutines(admin string) func() (int, error) {
	return func() (int, error) {
		resp, err := http.Get("http://" + admin + "/debug/handler")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var st struct {
			Goroutines int `json:"goroutines"`
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s/debug/handler: %s", admin, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return 0, err
		}
		return st.Goroutines, nil
	}
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
