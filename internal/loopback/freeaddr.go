package loopback

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Ports FreeAddr picks from: above the well-known and registered ports
// most daemons use, below the kernel's ephemeral range.
const (
	freeLow          = 20000
	ephemeralDefault = 32768
)

var (
	freeMu   sync.Mutex
	handed   = map[int]bool{}
	ephemLow = sync.OnceValue(ephemeralLow)
)

// FreeAddr returns 127.0.0.1:port with a port that nothing listened on a
// moment ago, for a listener another process will open (a test's or a
// benchmark's child). The port is below the kernel's ephemeral range:
// there, any outgoing connection of the machine could take it between
// this call and the child's bind. This process never hands out the same
// port twice.
func FreeAddr() (string, error) {
	high := ephemLow()
	freeMu.Lock()
	defer freeMu.Unlock()
	for range 200 {
		port := freeLow + rand.IntN(high-freeLow)
		if handed[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		handed[port] = true
		return addr, nil
	}
	return "", fmt.Errorf("loopback: no free port in %d-%d after 200 tries", freeLow, high-1)
}

// ephemeralLow is the first port of the kernel's ephemeral range, or
// 32768 where it cannot be read or leaves no room below it.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return ephemeralDefault
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ephemeralDefault
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low < freeLow+1000 {
		return ephemeralDefault
	}
	return low
}
