package loopback_test

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/internal/loopback"
)

func TestCheckAdmin(t *testing.T) {
	for _, c := range []struct {
		addr   string
		public bool
		want   string // in the error; "" for none
	}{
		{"", false, ""},
		{"127.0.0.1:9090", false, ""},
		{"[::1]:9090", false, ""},
		{"localhost:9090", false, ""},
		{"127.8.0.1:9090", false, ""},
		{":9090", false, "--admin-public"},
		{"0.0.0.0:9090", false, "not a loopback address"},
		{"10.0.0.7:9101", false, "--admin-public"},
		{"10.0.0.7:9101", true, ""},
		{":9090", true, ""},
		{"nonsense", true, "missing port"},
	} {
		err := loopback.CheckAdmin("--admin", c.addr, c.public, "--admin-public")
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q public=%v: %v, want nil", c.addr, c.public, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q public=%v: %v, want an error with %q", c.addr, c.public, err, c.want)
		}
	}
}

func TestFreeAddr(t *testing.T) {
	high := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if low, err := strconv.Atoi(f[0]); err == nil && low > 21000 {
				high = low
			}
		}
	}
	seen := map[string]bool{}
	for range 50 {
		addr, err := loopback.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("FreeAddr handed out %s twice", addr)
		}
		seen[addr] = true
		_, port, _ := net.SplitHostPort(addr)
		if p, _ := strconv.Atoi(port); p < 20000 || p >= high {
			t.Fatalf("FreeAddr = %s, want a port in 20000-%d, below the ephemeral range", addr, high-1)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listening on FreeAddr's %s: %v", addr, err)
		}
		ln.Close()
	}
}
