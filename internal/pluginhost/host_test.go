package pluginhost

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/internal/pluginproto"
)

// envParentBin makes the test binary act as a sidecar that hosts the
// handler binary it names, prints the handler's PID and blocks. The orphan
// test kills such a parent with SIGKILL.
const envParentBin = "PLUGINHOST_TEST_PARENT_BIN"

const helloPkg = "github.com/griddle-mesh/griddle/services/hello"

func TestMain(m *testing.M) {
	if bin := os.Getenv(envParentBin); bin != "" {
		os.Exit(runParent(bin))
	}
	goleak.VerifyTestMain(m)
}

func runParent(bin string) int {
	h, err := New(Config{Path: bin})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := h.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(h.PID())
	select {}
}

// buildHello builds services/hello into a temporary directory.
func buildHello(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hello")
	out, err := exec.Command("go", "build", "-o", bin, helloPkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", helloPkg, err, out)
	}
	return bin
}

func startHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

func roundTrip(t testing.TB, h *Host, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := h.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "plain")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "exe")
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  Config
		want string // substring; "" means valid
	}{
		{"missing path", Config{}, "Path: required"},
		{"no such file", Config{Path: filepath.Join(dir, "nope")}, "Path: stat"},
		{"directory", Config{Path: dir}, "Path: " + dir + " is not a regular file"},
		{"not executable", Config{Path: notExec}, "is not executable"},
		{"negative Conns", Config{Path: exe, Conns: -1}, "Conns: -1 is negative"},
		{"backoff order", Config{Path: exe, MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MinBackoff: 1s exceeds MaxBackoff 1ms"},
		{"negative StartTimeout", Config{Path: exe, StartTimeout: -1}, "StartTimeout"},
		{"valid", Config{Path: exe}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("got %v, want nil", err)
			case c.want == "":
			case err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrConfig):
				t.Fatalf("got %v, want an ErrConfig containing %q", err, c.want)
			}
		})
	}
}

// TestHostServes runs a request with a body of 1 MiB and repeated headers
// through each of the hop's transports: the shared-memory pipe, mapped by
// the handler once per connection, and the plain socket.
func TestHostServes(t *testing.T) {
	bin := buildHello(t)
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			h := startHost(t, Config{Path: bin, PlainSocket: plain})
			if !h.Healthy() || h.PID() == 0 {
				t.Fatalf("after Start: Healthy %v PID %d, want true and non-zero", h.Healthy(), h.PID())
			}
			testServes(t, h)
			maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", h.PID()))
			if err != nil {
				t.Skipf("the handler's mappings: %v", err)
			}
			want := DefaultConns
			if plain {
				want = 0
			}
			if got := bytes.Count(maps, []byte("memfd:griddle-shmpipe")); got != want {
				t.Errorf("the handler maps %d shared-memory pipes, want %d", got, want)
			}
		})
	}
}

func testServes(t *testing.T, h *Host) {

	body := bytes.Repeat([]byte{0, 1, 2, 0xff, '\n'}, 1<<20/5+1)[:1<<20]
	req, err := http.NewRequest(http.MethodPut, "http://handler/hello/echo?b=2&a=1&a=%2F", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header["X-Test-Repeat"] = []string{"1", "2", "", "4"}
	req.Header.Set("X-Test-Single", "s")
	resp, got := roundTrip(t, h, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: got %d, want 200", resp.StatusCode)
	}
	if !bytes.Equal(got, body) {
		t.Errorf("body: got %d bytes, want the %d bytes sent", len(got), len(body))
	}
	for _, c := range []struct{ name, got, want string }{
		{"X-Test-Repeat", fmt.Sprintf("%q", resp.Header.Values("X-Test-Repeat")), `["1" "2" "" "4"]`},
		{"X-Test-Single", resp.Header.Get("X-Test-Single"), "s"},
		{"X-Echo-Query", resp.Header.Get("X-Echo-Query"), "b=2&a=1&a=%2F"},
		{"X-Echo-Method", resp.Header.Get("X-Echo-Method"), "PUT"},
		{"Content-Type", resp.Header.Get("Content-Type"), "application/octet-stream"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, c.got, c.want)
		}
	}

	req, _ = http.NewRequest(http.MethodGet, "http://handler/hello/status?code=503", nil)
	if resp, _ := roundTrip(t, h, req); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status route: got %d, want 503", resp.StatusCode)
	}
}

func TestHostRestartsAfterKill(t *testing.T) {
	h := startHost(t, Config{Path: buildHello(t), MinBackoff: 10 * time.Millisecond})
	first := h.PID()
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.PID() == 0 || h.PID() == first {
		if time.Now().After(deadline) {
			t.Fatalf("no new handler 10s after killing %d (PID %d)", first, h.PID())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.Restarts(); got != 1 {
		t.Errorf("Restarts: got %d, want 1", got)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://handler/hello/pid", nil)
	resp, body := roundTrip(t, h, req)
	if want := strconv.Itoa(h.PID()); resp.StatusCode != 200 || string(body) != want {
		t.Errorf("after restart: got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
}

func TestHostUnavailable(t *testing.T) {
	bin := buildHello(t)

	t.Run("before start", func(t *testing.T) {
		h, err := New(Config{Path: bin})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		req, _ := http.NewRequest(http.MethodGet, "http://handler/hello/pid", nil)
		if _, err := h.RoundTrip(req); !errors.Is(err, ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable", err)
		}
	})

	t.Run("dial fails", func(t *testing.T) {
		h := startHost(t, Config{Path: bin})
		// Remove the socket from under a live handler: new connections fail.
		if err := os.Remove(h.proc.Load().socket); err != nil {
			t.Fatal(err)
		}
		p := h.proc.Load()
		p.mu.Lock()
		conns := p.conns
		p.mu.Unlock()
		for _, c := range conns { // the next request must dial
			_ = c.Close()
		}
		req, _ := http.NewRequest(http.MethodGet, "http://handler/hello/pid", nil)
		if _, err := h.RoundTrip(req); !errors.Is(err, ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable", err)
		}
	})

	t.Run("after close", func(t *testing.T) {
		h := startHost(t, Config{Path: bin})
		pid := h.PID()
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if err := h.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://handler/hello/pid", nil)
		if _, err := h.RoundTrip(req); !errors.Is(err, ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable", err)
		}
		if h.Healthy() || h.PID() != 0 {
			t.Errorf("after Close: Healthy %v PID %d, want false 0", h.Healthy(), h.PID())
		}
		if alive(pid) {
			t.Errorf("handler %d still running after Close", pid)
		}
		if err := h.Start(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close: got %v, want ErrClosed", err)
		}
	})
}

func TestStartFailure(t *testing.T) {
	// A binary that is not a handler never completes the handshake; what it
	// writes to stderr reaches the host's logger with its level.
	script := filepath.Join(t.TempDir(), "not-a-handler")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'plain line' >&2\necho '[ERROR] broken' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	h, err := New(Config{Path: script, StartTimeout: 5 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Start(context.Background()); !errors.Is(err, ErrStart) {
		t.Fatalf("got %v, want ErrStart", err)
	}
	for _, want := range []string{
		`level=INFO msg="plain line" handler=not-a-handler stream=stderr`,
		`level=ERROR msg="[ERROR] broken" handler=not-a-handler stream=stderr`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs do not contain %q:\n%s", want, logs.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNoOrphanAfterParentKill kills -9 a process hosting a handler and
// checks that the handler goes too.
func TestNoOrphanAfterParentKill(t *testing.T) {
	bin := buildHello(t)
	// The killed parent cannot remove its socket directory; keep it here.
	tmp, err := os.MkdirTemp("", "orphan-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(tmp) })
	parent := exec.Command(os.Args[0])
	parent.Env = append(os.Environ(), envParentBin+"="+bin, "TMPDIR="+tmp)
	parent.Stderr = os.Stderr
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = parent.Process.Kill()
		_ = parent.Wait()
		t.Fatalf("reading handler PID from parent: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		t.Fatalf("parent printed %q, want a PID", line)
	}
	if !alive(pid) {
		t.Fatalf("handler %d not running under the parent", pid)
	}
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()

	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("handler %d still running 2s after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid names a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// BenchmarkHostRoundTrip measures the sidecar→handler hop: a request with 11
// headers and a 200-byte body to the echo route of a real handler process,
// 8 goroutines per GOMAXPROCS in flight (16 on 2 cores, as in DESIGN.md).
// allocs/op count the host side only; the handler runs in its own process.
func BenchmarkHostRoundTrip(b *testing.B) {
	h := startHost(b, Config{Path: buildHello(b)})
	body := bytes.Repeat([]byte("x"), 200)
	header := http.Header{
		"Content-Type":         {"application/json"},
		"Accept":               {"application/json"},
		"User-Agent":           {"griddle-bench/1"},
		"X-Griddle-Deadline":   {strconv.FormatInt(time.Now().Add(time.Hour).UnixNano(), 10)},
		"X-Griddle-Request-Id": {"0af7651916cd43dd8448eb211c80319c"},
		"X-Griddle-Routing":    {"sticky=u42;exp=ranking-test:b"},
		"Traceparent":          {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Tracestate":           {"griddle=1"},
		"Cookie":               {"uid=42; theme=dark"},
		"X-Test-A":             {"a"},
		"X-Test-B":             {"b"},
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest(http.MethodPost, "http://handler/hello/echo", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header = header.Clone()
			resp, err := h.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// TestDeclaredSubscriptions: what a handler declares with
// plugins.Subscribe reaches the host through Describe.
func TestDeclaredSubscriptions(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "feed")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/griddle-mesh/griddle/services/feed").CombinedOutput(); err != nil {
		t.Fatalf("building feed: %v\n%s", err, out)
	}
	h := startHost(t, Config{Path: bin})
	want := []Subscription{{Publisher: "messages", Topic: "message.sent", Path: "/feed/events"}}
	if got := h.Subscriptions(); !slices.Equal(got, want) {
		t.Errorf("Subscriptions() = %v, want %v", got, want)
	}
	if got := startHost(t, Config{Path: buildHello(t)}).Subscriptions(); len(got) != 0 {
		t.Errorf("hello declares no subscriptions, got %v", got)
	}
}

// TestStats: the handler reports its runtime figures over its connection,
// and they move as it serves.
func TestStats(t *testing.T) {
	h := startHost(t, Config{Path: buildHello(t)})
	before, err := h.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if before.Goroutines == 0 || before.Allocs == 0 || before.HeapBytes == 0 {
		t.Fatalf("got %+v, want non-zero figures", before)
	}
	// The runtime counts allocations as its per-processor caches flush:
	// enough requests that some flush, and a few reads for them to show.
	for range 500 {
		req, _ := http.NewRequest(http.MethodGet, "http://handler/hello/greet?name=x", nil)
		roundTrip(t, h, req)
	}
	var after pluginproto.Stats
	for range 20 {
		if after, err = h.Stats(t.Context()); err != nil {
			t.Fatal(err)
		}
		if after.Allocs > before.Allocs {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("allocations did not grow over 500 requests: %d then %d", before.Allocs, after.Allocs)
}
