package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/launch"
	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// TestUp runs the README's start command as a user would, with other ports,
// serves the README's curl, and checks that Ctrl-C leaves no process behind.
func TestUp(t *testing.T) {
	root, err := meshtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	listen, admin, etcd, ctl := meshtest.FreeAddr(t), meshtest.FreeAddr(t), meshtest.FreeAddr(t), meshtest.FreeAddr(t)
	cmd := exec.Command(bin.Griddle, "up", "--dir", dir, "--listen", listen, "--admin", admin, "--etcd-listen", etcd, "--control", ctl)
	cmd.Dir = root
	var out meshtest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("griddle up said:\n%s", out.String())
		}
	}()

	deadline := time.Now().Add(90 * time.Second) // the first run builds the handlers
	for !strings.Contains(out.String(), "the mesh is running") {
		select {
		case err := <-exited:
			t.Fatalf("griddle up exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("griddle up did not start in 90s")
		}
	}
	if status, body, _ := get(t, "http://"+listen+"/hello/greet?name=world"); status != 200 || body != "hello, world" {
		t.Errorf("curl: got %d %q, want 200 %q", status, body, "hello, world")
	}
	if status, body, _ := get(t, "http://"+listen+"/profiles/42/greeting"); status != 200 || !strings.Contains(body, "hello, user-42") {
		t.Errorf("profiles greeting: got %d %q", status, body)
	}
	if out, code := cli(t, "http://"+ctl, "status"); code != 0 || !strings.Contains(out, "profiles") {
		t.Errorf("griddle status against up's control plane: exit %d:\n%s", code, out)
	}
	handlers := processesRunning(filepath.Join(dir, "bin"))
	if want := len(launch.ExampleServices()); len(handlers) != want {
		t.Errorf("found %d handler processes, want %d", len(handlers), want)
	}

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("griddle up exited with %v after Ctrl-C, want success", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("griddle up did not stop within 20s of Ctrl-C")
	}
	for start := time.Now(); len(processesRunning(filepath.Join(dir, "bin"))) > 0; {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("handler processes left behind: %v", processesRunning(filepath.Join(dir, "bin")))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processesRunning lists the pids of live processes whose executable is in dir.
func processesRunning(dir string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.HasPrefix(exe, dir+"/") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
