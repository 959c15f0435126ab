package floor

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/griddle-mesh/griddle/internal/shmpipe"
)

// ShmMux is the floor of the sidecar → handler hop as it runs: the frames
// of UnixMux on one shared-memory pipe (package shmpipe) instead of the
// socket, its two ends in this process.
func ShmMux() Floor {
	return Floor{Name: "shm-mux", Hop: "sidecar → handler (shared-memory pipe, one multiplexed connection)", open: openShmMux}
}

func openShmMux(cfg Config, _ string) (*Rig, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var ends [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, err
		}
		ends[i] = c.(*net.UnixConn)
	}
	type accepted struct {
		p   *shmpipe.Pipe
		err error
	}
	got := make(chan accepted, 1)
	go func() {
		p, _, err := shmpipe.Accept(ends[1])
		if err == nil && p == nil {
			err = fmt.Errorf("no offer accepted")
		}
		got <- accepted{p, err}
	}()
	client, err := shmpipe.Offer(ends[0], 0, 5*time.Second)
	a := <-got
	if err != nil || a.err != nil {
		if client != nil {
			client.Close()
		}
		if a.p != nil {
			a.p.Close()
		}
		_ = ends[1].Close()
		return nil, fmt.Errorf("offer: %v; accept: %v", err, a.err)
	}
	r := &Rig{}
	r.onClose(a.p.Close)
	r.onClose(client.Close)
	r.wg.Go(func() { muxEcho(cfg, a.p) })
	muxClient(r, cfg, client)
	return r, nil
}
