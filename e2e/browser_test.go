package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// browser is headless Chromium driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: it reads commands on fd 3 and writes answers on
// fd 4, each message ending in a NUL byte), so no websocket library is
// needed.
type browser struct {
	cmd     *exec.Cmd
	w       *os.File
	done    chan struct{}
	mu      sync.Mutex
	next    int
	pending map[int]chan cdpReply
	session string
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// chromiumPath finds Chromium: $GRIDDLE_CHROMIUM, or Debian's chromium.
func chromiumPath() (string, bool) {
	if p := os.Getenv("GRIDDLE_CHROMIUM"); p != "" {
		return p, true
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p, true
		}
	}
	return "", false
}

// startBrowser starts Chromium with one page of width × height and
// attaches to it. The browser stops at the test's end.
func startBrowser(t *testing.T, path string, width, height int) *browser {
	t.Helper()
	toChrome, ours, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	theirs, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{w: ours, done: make(chan struct{}), pending: map[int]chan cdpReply{}}
	b.cmd = exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
		"--remote-debugging-pipe", "--user-data-dir="+t.TempDir(), fmt.Sprintf("--window-size=%d,%d", width, height))
	b.cmd.ExtraFiles = []*os.File{toChrome, fromChrome}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toChrome.Close()
	fromChrome.Close()
	go b.read(theirs)
	t.Cleanup(func() {
		ours.Close()
		_ = b.cmd.Process.Kill()
		_ = b.cmd.Wait()
		theirs.Close()
		<-b.done
	})
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatalf("chromium: create a page: %v", err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		t.Fatalf("chromium: attach: %v", err)
	}
	b.session = att.SessionID
	for _, c := range []struct {
		method string
		params map[string]any
	}{
		{"Page.enable", nil},
		{"Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}},
		// The page asks before writes; the test says yes.
		{"Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": "window.confirm = function () { return true; };"}},
	} {
		if err := b.call(b.session, c.method, c.params, nil); err != nil {
			t.Fatalf("chromium: %s: %v", c.method, err)
		}
	}
	return b
}

// read delivers answers to their callers until the pipe closes; events
// are dropped.
func (b *browser) read(r *os.File) {
	defer close(b.done)
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		var m struct {
			ID int `json:"id"`
			cdpReply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.pending[m.ID]
		delete(b.pending, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.cdpReply
		}
	}
}

// call sends one command (to session, "" for the browser) and decodes its result into out.
func (b *browser) call(session, method string, params any, out any) error {
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpReply, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	data, _ := json.Marshal(msg)
	if _, err := b.w.Write(append(data, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: chromium went away", method)
		}
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: no answer in 30s", method)
	}
}

// eval runs a JavaScript expression in the page (awaiting a promise) and
// decodes its value into out (if not nil).
func (b *browser) eval(expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception *struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := b.call(b.session, "Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true}, &r); err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		if e.Exception != nil {
			return errors.New(e.Exception.Description)
		}
		return errors.New(e.Text)
	}
	if out != nil && len(r.Result.Value) > 0 {
		return json.Unmarshal(r.Result.Value, out)
	}
	return nil
}

// do runs expr and fails the test on an exception.
func (b *browser) do(t *testing.T, expr string) {
	t.Helper()
	if err := b.eval(expr, nil); err != nil {
		t.Fatalf("in the page: %s: %v", expr, err)
	}
}

// waitFor polls the boolean expression cond until it holds.
func (b *browser) waitFor(t *testing.T, what, cond string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		var ok bool
		err := b.eval("(function(){try{return !!("+cond+")}catch(e){return false}})()", &ok)
		if err == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			var text string
			_ = b.eval("document.body ? document.body.innerText.slice(0, 4000) : ''", &text)
			t.Fatalf("waiting for %s: not within %v (last error %v); the page says:\n%s", what, timeout, err, text)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// open loads url and waits until the document is complete.
func (b *browser) open(t *testing.T, url string) {
	t.Helper()
	if err := b.call(b.session, "Page.navigate", map[string]any{"url": url}, nil); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the page at "+url, "location.href === "+jsString(url)+" && document.readyState === 'complete'", 20*time.Second)
}

// screenshot writes the whole page as dir/name.png.
func (b *browser) screenshot(t *testing.T, dir, name string) {
	t.Helper()
	var r struct {
		Data string `json:"data"`
	}
	if err := b.call(b.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
