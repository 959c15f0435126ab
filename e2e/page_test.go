package e2e

import (
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// paced sends GET requests to url at about perSecond until stop.
type paced struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func startPaced(url string, perSecond int) *paced {
	p := &paced{stop: make(chan struct{})}
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
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
	})
	return p
}

func (p *paced) finish() { close(p.stop); p.wg.Wait() }

// rowRate is the JavaScript for the edge's request rate of a version on
// the service page.
func rowRate(version string) string {
	return `parseFloat((document.querySelector('tr[data-version="` + version + `"] td.rate')||{}).textContent||'0')`
}

// TestPageInChromium drives the control plane's page in headless Chromium
// against real processes: it sees live rates, shows the validation error
// of a bad weight, applies a split and sees it move, starts a canary, sees
// it step, rolls it back, and rolls the rules back from the history.
// Screenshots go to $GRIDDLE_SCREENSHOTS (default: the test's temporary
// directory).
func TestPageInChromium(t *testing.T) {
	chromium, ok := chromiumPath()
	if !ok {
		t.Skip("chromium is not installed (apt-get install chromium, or set GRIDDLE_CHROMIUM)")
	}
	shots := os.Getenv("GRIDDLE_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	m := meshtest.Start(t, bin)
	m.Sidecar("hello", "v1")
	m.Sidecar("hello", "v2")
	e := m.Edge("--no-admission")
	addr := meshtest.FreeAddr(t)
	tokenFile := writeFile(t, "token", controlToken)
	ctl := m.Griddle("control", "control", "--listen", addr, "--etcd", m.EtcdEndpoints(), "--token-file", tokenFile,
		"--session-ttl", "2s", "--poll", "100ms", "--sample-every", "500ms")
	url := "http://" + addr
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("griddle control not ready:\n%s", ctl.Log())
		}
	}
	rules := writeFile(t, "hello.yaml", "# hello: the greeting service\nservice: hello\nhttp: [{pathPrefix: /hello/}]\nversions:\n  - to: {v1: 100}   # the default route\n")
	if out, code := cli(t, url, "routes", "apply", "-f", rules, "--comment", "first rules"); code != 0 {
		t.Fatalf("routes apply: exit %d: %s", code, out)
	}
	first := rulesRevision(t, url)
	load := startPaced("http://"+e.Addr+"/hello/greet?name=page", 60)
	defer load.finish()

	b := startBrowser(t, chromium, 1280, 1700)
	page := url + "/services/hello"
	b.open(t, page)
	b.waitFor(t, "a live rate for v1", rowRate("v1")+" > 10", 20*time.Second)
	b.screenshot(t, shots, "1-live")

	b.do(t, `(function(){var i=document.querySelector('#token'); i.value=`+jsString(controlToken)+`; i.dispatchEvent(new Event('input'));})()`)
	setEditor := func(weights string) {
		b.do(t, `(function(){var e=document.querySelector('#editor'); e.value=e.value.replace(/to: \{[^}]*\}/, `+jsString("to: {"+weights+"}")+`);})()`)
	}
	// A bad weight: the same validation as the CLI names the field.
	setEditor("v1: 90, v2: 20")
	b.do(t, `document.querySelector('#validate').click()`)
	b.waitFor(t, "the validation error", `document.querySelector('#edit-result').classList.contains('err') && document.querySelector('#edit-result').textContent.includes('versions[0].to')`, 10*time.Second)
	b.screenshot(t, shots, "2-invalid")
	if r := rulesRevision(t, url); r != first {
		t.Fatalf("validation changed the rules: revision %d, want %d", r, first)
	}

	// A good split: applied with compare-and-swap; the page reloads and the split shows in the live rates.
	setEditor("v1: 50, v2: 50")
	// The dry run replays the edge's sample: half of the traffic would move to v2.
	b.do(t, `document.querySelector('#dry-run').click()`)
	b.waitFor(t, "the dry run", `document.querySelector('#edit-result').textContent.includes('would move 50.0% of requests')`, 10*time.Second)
	b.screenshot(t, shots, "2b-dry-run")
	if r := rulesRevision(t, url); r != first {
		t.Fatalf("the dry run changed the rules: revision %d, want %d", r, first)
	}
	b.do(t, `document.querySelector('#apply').click()`)
	b.waitFor(t, "the applied message", `document.querySelector('#flash').textContent.includes('applied revision')`, 15*time.Second)
	b.waitFor(t, "v2 to take about half the traffic", rowRate("v2")+" > 10 && "+rowRate("v2")+" / ("+rowRate("v1")+" + "+rowRate("v2")+") > 0.3", 30*time.Second)
	b.screenshot(t, shots, "3-split")
	if out, _ := cli(t, url, "routes", "get", "hello"); !strings.Contains(out, "# hello: the greeting service") || !strings.Contains(out, "{v1: 50, v2: 50}") {
		t.Fatalf("rules after the page's apply:\n%s", out)
	}

	// A canary from the page: it steps, then is rolled back from the page.
	b.do(t, `(function(){var f=document.querySelector('#canary-form');
		f.to.value='v2'; f.from.value='v1'; f.steps.value='10,20,30,40,50,60,70,80,90,100'; f.interval.value='1500ms';
		f.maxErrorRate.value='5'; f.minRequests.value='5'; f.requestSubmit();})()`)
	b.waitFor(t, "the canary to start", `document.querySelector('#flash').textContent.includes('canary started')`, 15*time.Second)
	b.waitFor(t, "the canary to step to 20%", `parseInt(document.querySelector('#canary-weight').textContent) >= 20 && document.querySelector('#canary-state').textContent === 'running'`, 30*time.Second)
	b.waitFor(t, "the editor to say its text is stale", `!document.querySelector('#stale').hidden`, 10*time.Second)
	b.screenshot(t, shots, "4-canary")
	b.do(t, `document.querySelector('#canary-abort').click()`)
	b.waitFor(t, "the canary to be aborted", `document.querySelector('#canary-state') && document.querySelector('#canary-state').textContent === 'aborted'`, 15*time.Second)
	b.screenshot(t, shots, "5-canary-rolled-back")
	if out, _ := cli(t, url, "routes", "get", "hello"); !strings.Contains(out, "{v1: 50, v2: 50}") {
		t.Fatalf("rules after aborting the canary: want the split back:\n%s", out)
	}

	// One click in the history returns to the first rules.
	b.do(t, `Array.from(document.querySelectorAll('#history button')).find(function(x){return x.dataset.url.endsWith('to=`+itoa(first)+`')}).click()`)
	b.waitFor(t, "the rollback", `document.querySelector('#flash').textContent.includes('rolled back to revision `+itoa(first)+`')`, 15*time.Second)
	b.waitFor(t, "v2 to get no more traffic", rowRate("v2")+" < 1 && "+rowRate("v1")+" > 10", 30*time.Second)
	b.screenshot(t, shots, "6-history-rollback")
	if out, _ := cli(t, url, "routes", "get", "hello"); !strings.Contains(out, "{v1: 100}") || !strings.Contains(out, "# the default route") {
		t.Fatalf("rules after the rollback:\n%s", out)
	}
	b.open(t, url+"/")
	b.screenshot(t, shots, "7-overview")
}
