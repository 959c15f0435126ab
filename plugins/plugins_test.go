package plugins_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/internal/pluginproto"
	"github.com/griddle-mesh/griddle/plugins"
	"github.com/griddle-mesh/griddle/plugins/plugintest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const helloPkg = "github.com/griddle-mesh/griddle/services/hello"

func TestRunByHand(t *testing.T) {
	bin := plugintest.Build(t, helloPkg)
	cmd := exec.Command(bin)
	cmd.Env = withoutCookie(os.Environ())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("got %v, want exit status 1", err)
	}
	for _, want := range []string{"is a Griddle handler", "griddle sidecar --plugin " + bin, "griddle up"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q does not contain %q", stderr.String(), want)
		}
	}
}

// TestExitsWhenParentDies checks the handler's own parent watch, without
// the parent-death signal the sidecar also sets: a shell starts the
// handler and is killed.
func TestExitsWhenParentDies(t *testing.T) {
	bin := plugintest.Build(t, helloPkg)
	hs := pluginproto.Handshake()
	sh := exec.Command("/bin/sh", "-c", `"$0" >/dev/null & echo $!; wait`, bin)
	// The killed handler cannot remove go-plugin's socket; keep it here.
	sockDir, err := os.MkdirTemp("", "plugins-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	sh.Env = append(withoutCookie(os.Environ()),
		hs.MagicCookieKey+"="+hs.MagicCookieValue,
		plugin.EnvUnixSocketDir+"="+sockDir,
	)
	sh.Stderr = os.Stderr
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		_ = sh.Process.Kill()
		_ = sh.Wait()
		t.Fatalf("reading handler PID: %q %v %v", line, err, perr)
	}
	time.Sleep(300 * time.Millisecond) // let the handler reach Serve
	if !alive(pid) {
		t.Fatalf("handler %d exited before its parent did", pid)
	}
	if err := sh.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = sh.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("handler %d still running 2s after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMeshWithoutSidecar(t *testing.T) {
	_, err := plugins.Mesh(context.Background()).Client().Get("http://hello/hello/greet")
	if !errors.Is(err, plugins.ErrNoMesh) {
		t.Fatalf("got %v, want ErrNoMesh", err)
	}
}

func withoutCookie(env []string) []string {
	key := pluginproto.Handshake().MagicCookieKey + "="
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key) {
			out = append(out, kv)
		}
	}
	return out
}

// alive reports whether pid names a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
