//go:build race

package shmpipe

import "sync/atomic"

// ioSync orders, for the race detector, every Write before every later
// Read, as package syscall does for reads and writes of file descriptors:
// what passes through the pipe passes through another process, in memory
// the detector does not see, so without it a buffer written before a Write
// and reused after the answer's Read would look like a race.
var ioSync atomic.Uint64

func raceReleaseMerge() { ioSync.Add(1) }
func raceAcquire()      { ioSync.Load() }
