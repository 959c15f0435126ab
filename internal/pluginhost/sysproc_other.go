//go:build !linux

package pluginhost

import "syscall"

// sysProcAttr returns nil: only Linux has a parent-death signal. The
// handler's own parent watch (plugins.Serve) still stops it.
func sysProcAttr() *syscall.SysProcAttr { return nil }
