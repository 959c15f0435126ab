package runtimeenv

import (
	"time"

	"golang.org/x/sys/unix"
)

// monotonic reads the clock the runtime's nanotime reads.
func monotonic() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
