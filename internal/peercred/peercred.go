// Package peercred tells which process is at the other end of a unix
// socket connection, so that a sidecar and its handler talk to each other
// only: the handler accepts only its parent's connections, the sidecar
// only a socket its handler serves.
package peercred

import (
	"errors"
	"fmt"
	"net"
)

// ErrUnsupported is returned where the system cannot tell (not Linux).
var ErrUnsupported = errors.New("peercred: not supported on this system")

// ErrPeer is wrapped by Check's refusals.
var ErrPeer = errors.New("peercred: unexpected peer")

// Cred is a peer process's identity as the kernel knows it: for the
// connecting side, the process that listened; for the accepting side, the
// one that connected.
type Cred struct {
	PID, UID int
}

// Check refuses c unless its peer is the process pid (0: any) of user uid.
// Where the system cannot tell it accepts c.
func Check(c net.Conn, pid, uid int) error {
	got, err := Of(c)
	if errors.Is(err, ErrUnsupported) {
		return nil
	}
	if err != nil {
		return err
	}
	if got.UID != uid || (pid != 0 && got.PID != pid) {
		return fmt.Errorf("%w: pid %d uid %d, want pid %d uid %d", ErrPeer, got.PID, got.UID, pid, uid)
	}
	return nil
}
