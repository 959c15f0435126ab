// Package loopback tells addresses that reach only this machine from the
// others: what Griddle serves without authentication (admin endpoints, an
// embedded etcd, a store without TLS) binds to those unless told
// otherwise.
package loopback

import (
	"fmt"
	"net"
)

// Host reports whether host names only this machine: "localhost" or a
// loopback IP. The empty host (every interface) is not.
func Host(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckAdmin reports an admin address (flag, as the user wrote it) that
// is not a loopback one, unless public says the operator wants it served
// beyond this machine (publicFlag names that flag in the message).
func CheckAdmin(flag, addr string, public bool, publicFlag string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	if public || Host(host) {
		return nil
	}
	return fmt.Errorf("%s: %s is not a loopback address, and /metrics, /status and /debug/pprof/ there need no credentials: give %s to serve them beyond this machine (and --no-pprof to leave pprof off)", flag, addr, publicFlag)
}
