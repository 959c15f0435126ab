package pluginhost

import "syscall"

// sysProcAttr makes the kernel kill the handler when the sidecar dies, so a
// kill -9 of the sidecar leaves no orphan. The signal follows the OS thread
// that started the handler, which the Go runtime keeps alive (it ends a
// thread only when a goroutine exits while locked to it); should that
// happen, the supervisor restarts the handler. plugins.Serve also watches
// its parent, which covers platforms and cases without the signal.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
