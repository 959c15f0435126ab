package multihost

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lab is a set of hosts (network namespaces) on one bridge, which lives in a
// namespace of its own (the switch), so nothing is added to the machine's
// own network namespace.
type lab struct {
	t      *testing.T
	prefix string // starts the name of each of the lab's namespaces
	sw     string
	subnet string // first three octets, e.g. "10.77.0"
	hosts  map[string]*host
}

// host is a namespace with one interface, eth0, whose peer on the switch
// is port.
type host struct {
	name, ns, ip, port string
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// removeStale deletes namespaces named prefix* (left by a killed run).
func removeStale(ctx context.Context, prefix string) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			if err := ipCmd(ctx, "netns", "del", f[0]); err != nil {
				return err
			}
		}
	}
	return nil
}

// newLab makes the switch namespace and its bridge; t.Cleanup removes
// every namespace of the lab. Each namespace's name starts with prefix;
// those a killed run left behind are removed first.
func newLab(t *testing.T, prefix, subnet string) *lab {
	ctx := t.Context()
	if err := removeStale(ctx, prefix); err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, prefix: prefix, sw: prefix + "sw", subnet: subnet, hosts: map[string]*host{}}
	// Root without CAP_SYS_ADMIN (some containers) cannot make namespaces:
	// that is the machine, not the mesh.
	if err := ipCmd(ctx, "netns", "add", l.sw); err != nil {
		t.Skipf("cannot make network namespaces here: %v", err)
	}
	t.Cleanup(func() {
		for _, h := range l.hosts {
			if err := ipCmd(context.Background(), "netns", "del", h.ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if err := ipCmd(context.Background(), "netns", "del", l.sw); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	for _, args := range [][]string{
		{"-n", l.sw, "link", "add", "br0", "type", "bridge"},
		{"-n", l.sw, "link", "set", "br0", "up"},
		{"-n", l.sw, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// add makes host name with address subnet.octet, linked to the switch.
func (l *lab) add(name string, octet int) *host {
	ctx := l.t.Context()
	h := &host{name: name, ns: l.prefix + name, ip: fmt.Sprintf("%s.%d", l.subnet, octet), port: "p-" + name}
	if err := ipCmd(ctx, "netns", "add", h.ns); err != nil {
		l.t.Fatal(err)
	}
	l.hosts[name] = h
	for _, args := range [][]string{
		{"-n", l.sw, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
		{"-n", l.sw, "link", "set", h.port, "master", "br0", "up"},
		{"-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"},
		{"-n", h.ns, "link", "set", "eth0", "up"},
		{"-n", h.ns, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(ctx, args...); err != nil {
			l.t.Fatal(err)
		}
	}
	return h
}

// cut takes the host's switch port down (its link has no carrier: packets
// are lost, nobody is told), or brings it back up. Bringing it up returns
// once both ends of the link report themselves up: the kernel applies a
// carrier change asynchronously (up to a second later), and until it has,
// the link still drops what it is given.
func (l *lab) cut(h *host, down bool) error {
	ctx := context.Background()
	if down {
		return ipCmd(ctx, "-n", l.sw, "link", "set", h.port, "down")
	}
	if err := ipCmd(ctx, "-n", l.sw, "link", "set", h.port, "up"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, end := range [][2]string{{l.sw, h.port}, {h.ns, "eth0"}} {
		if err := waitOperUp(ctx, end[0], end[1]); err != nil {
			return err
		}
	}
	return nil
}

// waitOperUp waits until dev in namespace ns reports operational state UP.
func waitOperUp(ctx context.Context, ns, dev string) error {
	for {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-o", "link", "show", "dev", dev).Output()
		if err == nil && bytes.Contains(out, []byte(" state UP ")) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s in %s: not up: %w (last: %s)", dev, ns, ctx.Err(), bytes.TrimSpace(out))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// impair makes everything the host sends late and lossy, and says how:
// with tc netem (100 ms ± 20 ms, 10% loss) where the kernel has it;
// otherwise (CONFIG_NET_SCH_NETEM unset) a slow link, tc tbf at 1 Mbit/s
// with up to 100 ms of queue, plus 10% random loss from nftables. repair
// undoes either.
func impair(h *host) (string, error) {
	ctx := context.Background()
	err := ipCmd(ctx, "netns", "exec", h.ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "100ms", "20ms", "loss", "10%")
	if err == nil {
		return "tc netem delay 100ms 20ms loss 10%", nil
	}
	if !strings.Contains(err.Error(), "qdisc kind is unknown") {
		return "", err
	}
	if err := ipCmd(ctx, "netns", "exec", h.ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "16kb", "latency", "100ms"); err != nil {
		return "", err
	}
	how := "no netem in this kernel: tc tbf rate 1mbit latency 100ms"
	if _, err := exec.LookPath("nft"); err != nil {
		return how + " (no nft: no loss)", nil
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("table inet gmh {\n chain out {\n  type filter hook output priority 0;\n  oifname \"eth0\" numgen random mod 100 < 10 drop\n }\n}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("nft: %w: %s", err, bytes.TrimSpace(out))
	}
	return how + " + nft 10% loss", nil
}

// repair removes what impair added.
func repair(h *host) error {
	ctx := context.Background()
	err := ipCmd(ctx, "netns", "exec", h.ns, "tc", "qdisc", "del", "dev", "eth0", "root")
	if _, lerr := exec.LookPath("nft"); lerr == nil {
		// Absent when netem did the loss: nothing to delete then.
		_ = ipCmd(ctx, "netns", "exec", h.ns, "nft", "delete", "table", "inet", "gmh")
	}
	return err
}

// nsDialer dials from inside a namespace: its sockets are created by
// goroutines locked to OS threads that entered the namespace (a socket stays
// in the namespace it was created in, whichever thread uses it later).
type nsDialer struct {
	reqs chan dialReq
}

type dialReq struct {
	ctx           context.Context
	network, addr string
	res           chan dialRes
}

type dialRes struct {
	c   net.Conn
	err error
}

// newNSDialer starts n dialing goroutines in namespace ns; they stop when
// ctx ends, and their threads end with them.
func newNSDialer(ctx context.Context, ns string, n int) (*nsDialer, error) {
	d := &nsDialer{reqs: make(chan dialReq)}
	errc := make(chan error, n)
	for range n {
		go func() {
			// Never unlocked: the thread is in another namespace and must
			// not run other goroutines; it exits with this one.
			runtime.LockOSThread()
			f, err := os.Open("/run/netns/" + ns)
			if err == nil {
				err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
				f.Close()
			}
			errc <- err
			if err != nil {
				return
			}
			for {
				select {
				case <-ctx.Done():
					return
				case r := <-d.reqs:
					c, err := (&net.Dialer{Timeout: 3 * time.Second}).DialContext(r.ctx, r.network, r.addr)
					r.res <- dialRes{c, err}
				}
			}
		}()
	}
	for range n {
		if err := <-errc; err != nil {
			return nil, fmt.Errorf("entering namespace %s: %w", ns, err)
		}
	}
	return d, nil
}

// DialContext has net.Dialer's meaning, from inside the namespace.
func (d *nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r := dialReq{ctx: ctx, network: network, addr: addr, res: make(chan dialRes, 1)}
	select {
	case d.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-r.res:
		return res.c, res.err
	case <-ctx.Done():
		go func() { // the dial finishes on its own; do not leak its conn
			if res := <-r.res; res.c != nil {
				res.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// listenIn opens a TCP listener inside namespace ns (the socket is made on
// a thread that entered it; the thread ends with its goroutine).
func listenIn(ns, addr string) (net.Listener, error) {
	type res struct {
		ln  net.Listener
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see newNSDialer
		f, err := os.Open("/run/netns/" + ns)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		if err != nil {
			c <- res{nil, fmt.Errorf("entering namespace %s: %w", ns, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		c <- res{ln, err}
	}()
	r := <-c
	return r.ln, r.err
}
