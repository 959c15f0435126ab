package pluginhost

import "syscall"

// sysProcAttr makes the kernel kill the handler when the sidecar dies, so a
// kill -9 of the sidecar leaves no orphan. The handler also watches its
// parent (plugins.Serve), which covers the case where the thread that
// started it exits first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
