package shmpipe

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// create makes a pipe's memory, sealed at its size so that neither side
// can shrink it under the other (a read past a shrunk file's end is a
// SIGBUS), and its four bells.
func create(size int) (fds []int, err error) {
	defer func() {
		if err != nil {
			closeAll(fds)
		}
	}()
	mfd, err := unix.MemfdCreate("griddle-shmpipe", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("%w: memfd_create: %w", ErrUnsupported, err)
	}
	fds = append(fds, mfd)
	if err := unix.Ftruncate(mfd, int64(headerSize+2*size)); err != nil {
		return fds, fmt.Errorf("shmpipe: %w", err)
	}
	var w [8]byte
	binary.NativeEndian.PutUint64(w[:], uint64(size))
	if _, err := unix.Pwrite(mfd, w[:], offSize); err != nil {
		return fds, fmt.Errorf("shmpipe: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fds, fmt.Errorf("shmpipe: seal: %w", err)
	}
	for range nFDs - 1 {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return fds, fmt.Errorf("%w: eventfd: %w", ErrUnsupported, err)
		}
		fds = append(fds, efd)
	}
	return fds, nil
}
