package e2e

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// TestHungInstance stops one of two sidecars with SIGSTOP: it keeps its
// connections but answers nothing. Sent one at a time, only the request
// that was inside it waits for the deadline; under an open-loop load, only
// the requests sent to it before it is ejected fail, and every request sent
// a second after the stop is answered at once.
func TestHungInstance(t *testing.T) {
	m := meshtest.Start(t, bin)
	victim := m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	const timeout = 2 * time.Second
	e := m.Edge("--no-admission", "--timeout", timeout.String())
	url := "http://" + e.Addr + "/hello/greet?name=hung"
	waitBothServe(t, url)

	stop := func() {
		if err := syscall.Kill(victim.PID(), syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	cont := func() { _ = syscall.Kill(victim.PID(), syscall.SIGCONT) }
	t.Cleanup(cont)

	t.Run("one at a time", func(t *testing.T) {
		stop()
		defer cont()
		slow := 0
		for i := range 20 {
			start := time.Now()
			code, _, _ := get(t, url)
			took := time.Since(start)
			if took > timeout/2 {
				slow++
			} else if code != http.StatusOK {
				t.Errorf("request %d: %d in %v", i, code, took)
			}
		}
		t.Logf("%d of 20 sequential requests waited for the deadline", slow)
		if slow > 1 {
			t.Errorf("%d requests waited for the deadline, want at most the first", slow)
		}
	})

	// Let the victim come back and be picked again (its ejection ends).
	time.Sleep(6 * time.Second)
	waitBothServe(t, url)

	t.Run("under load", func(t *testing.T) {
		const rate, run = 300, 4 * time.Second
		type result struct {
			at   time.Duration
			code int
			took time.Duration
		}
		var (
			mu      sync.Mutex
			results []result
			wg      sync.WaitGroup
		)
		begin := time.Now()
		stoppedAt := time.Second
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		stopped := false
		for time.Since(begin) < run {
			<-tick.C
			if !stopped && time.Since(begin) >= stoppedAt {
				stop()
				stopped = true
			}
			wg.Go(func() {
				at := time.Since(begin)
				code := 0
				resp, err := client.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				results = append(results, result{at: at, code: code, took: time.Since(begin) - at})
				mu.Unlock()
			})
		}
		wg.Wait()
		cont()
		failed, late, lastBad := 0, 0, time.Duration(0)
		for _, r := range results {
			bad := r.code != http.StatusOK || r.took > 500*time.Millisecond
			if !bad {
				continue
			}
			failed++
			lastBad = max(lastBad, r.at)
			if r.at > stoppedAt+time.Second {
				late++
			}
		}
		t.Logf("%d requests at %d/s, %d failed or slow, the last sent %v after the stop", len(results), rate, failed, (lastBad - stoppedAt).Round(time.Millisecond))
		if late > 0 {
			t.Errorf("%d requests sent more than 1s after the stop failed or were slow: the hung instance was not ejected", late)
		}
		if failed > rate { // at most the second's worth that went to it
			t.Errorf("%d requests failed, want at most those sent to the hung instance in its first second", failed)
		}
	})
}

// waitBothServe waits until requests succeed again.
func waitBothServe(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for ok := 0; ok < 20; {
		if time.Now().After(deadline) {
			t.Fatal("the mesh does not answer")
		}
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok++
				continue
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRestartedHandlerReturnsFast kills the handler of one of two
// instances under sequential load: while it restarts the instance is
// ejected, and once it is back a trial request ends the ejection, well
// before the ejection's period of 5 s.
func TestRestartedHandlerReturnsFast(t *testing.T) {
	m := meshtest.Start(t, bin)
	victim := m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	e := m.Edge()
	url := "http://" + e.Addr + "/hello/pid"
	waitBothServe(t, url)
	var st sidecarStatus
	if err := victim.Status(&st); err != nil || st.HandlerPID == 0 {
		t.Fatalf("sidecar status: %+v, %v", st, err)
	}
	old := strconv.Itoa(st.HandlerPID)
	if err := killPID(st.HandlerPID); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	seen := map[string]bool{}
	for time.Since(killed) < 8*time.Second {
		code, pid, _ := get(t, url)
		if code != http.StatusOK {
			continue
		}
		if !seen[pid] && pid != old {
			// A pid not seen yet: the other instance's, or the victim's new handler.
			if err := victim.Status(&st); err == nil && strconv.Itoa(st.HandlerPID) == pid {
				back := time.Since(killed)
				t.Logf("the restarted handler answered %v after the kill", back.Round(time.Millisecond))
				if back > 2500*time.Millisecond {
					t.Errorf("the restarted instance took %v to get traffic again, want well under the 5s ejection", back)
				}
				return
			}
		}
		seen[pid] = true
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the restarted handler got no request within 8s")
}

// TestClientGoneCancels: a client that gives up cancels the request in the
// edge, the sidecar and the handler's context; the handler's work ends at
// once instead of at its deadline.
func TestClientGoneCancels(t *testing.T) {
	m := meshtest.Start(t, bin)
	sc := m.Sidecar("hello", "v1", "--http-prefix", "/hello/")
	e := m.Edge("--timeout", "30s")
	waitBothServe(t, "http://"+e.Addr+"/hello/greet?name=x")

	impatient := &http.Client{Timeout: 300 * time.Millisecond}
	if _, err := impatient.Get("http://" + e.Addr + "/hello/sleep?ms=20000"); err == nil {
		t.Fatal("the 20s sleep answered within 300ms")
	}
	gone := time.Now()
	var st struct {
		InFlight int64 `json:"inFlight"`
	}
	for {
		if err := sc.Status(&st); err != nil {
			t.Fatal(err)
		}
		if st.InFlight == 0 {
			break
		}
		if time.Since(gone) > 3*time.Second {
			t.Fatalf("the handler still works on the request %v after its client left", time.Since(gone).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the request ended in the sidecar and handler %v after its client left", time.Since(gone).Round(time.Millisecond))
}
