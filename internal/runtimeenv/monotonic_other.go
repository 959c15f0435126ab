//go:build !linux

package runtimeenv

import "time"

// monotonic is unknown here: the setting is not made.
func monotonic() (time.Duration, bool) { return 0, false }
