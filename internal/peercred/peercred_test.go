package peercred

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

func TestCheck(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_PEERCRED is Linux's")
	}
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	defer sc.Close()
	for name, conn := range map[string]net.Conn{"dialled": c, "accepted": sc} {
		if err := Check(conn, os.Getpid(), os.Getuid()); err != nil {
			t.Errorf("%s: this process: %v", name, err)
		}
		if err := Check(conn, os.Getpid()+1, os.Getuid()); !errors.Is(err, ErrPeer) {
			t.Errorf("%s: another pid: %v, want ErrPeer", name, err)
		}
	}

	// A connection from another process (python's, where there is one).
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Log("no python3: the check against another process is not run")
		return
	}
	fromOther := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			fromOther <- c
		}
		close(fromOther)
	}()
	cmd := exec.Command(py, "-c", "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(1)", sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	other, ok := <-fromOther
	if !ok {
		t.Fatal("no connection from the other process")
	}
	defer other.Close()
	if err := Check(other, os.Getpid(), os.Getuid()); !errors.Is(err, ErrPeer) {
		t.Errorf("a connection from pid %d passed as this process's: %v", cmd.Process.Pid, err)
	}
	if err := Check(other, cmd.Process.Pid, os.Getuid()); err != nil {
		t.Errorf("a connection from pid %d checked against its own pid: %v", cmd.Process.Pid, err)
	}
}
