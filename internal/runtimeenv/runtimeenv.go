// Package runtimeenv holds the Go runtime settings Griddle's processes run
// with, and puts them into a process's environment.
//
// One setting today: the runtime's monitor thread (sysmon) stays awake.
// By default, once every P of a process is idle, sysmon sleeps until the
// next timer, and the first system call after that wakes it with a futex;
// it then polls every 20 µs until it sees the process idle again and
// sleeps once more. A mesh component between requests is idle, so at
// moderate rates every request pays for that cycle in every process it
// crosses: the wake-up, the monitor's own run and its sleep again, 13% of a
// handler's CPU at 4,000 requests/s. With the monitor kept awake it polls
// instead, at most every 10 ms while nothing happens (about 100 wake-ups a
// second per process, a few microseconds each), and no request pays for
// waking it.
//
// The runtime has one way to keep it awake: a scheduler trace period
// (GODEBUG schedtrace), which forbids the deep sleep so that the trace can
// be printed on time. The period set here is the longest the runtime
// accepts (2³¹−1 ms, about 24.8 days), and the runtime prints its first
// trace once the host's monotonic clock (its uptime, on Linux) has passed
// one period. So the setting is made only on a host up for less than that
// (elsewhere processes run with Go's default, and pay for the wake-ups): a
// process then writes nothing at start, and one SCHED line to standard
// error only if it is still running when the host's uptime reaches 24.8
// days, and once per period after that. A GODEBUG that sets schedtrace
// itself (schedtrace=0 restores Go's default) is left as it is.
package runtimeenv

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// periodMillis is Setting's trace period, the longest the runtime reads
// (an int32 of milliseconds).
const periodMillis = math.MaxInt32

const period = periodMillis * time.Millisecond

// Setting is the GODEBUG setting Griddle's processes run with.
var Setting = "schedtrace=" + strconv.Itoa(periodMillis)

// wanted reports whether Setting can be made without a trace at start:
// whether the monotonic clock, which the runtime's first trace waits for,
// is short of period by more than an hour.
func wanted() bool {
	up, ok := monotonic()
	return ok && up < period-time.Hour
}

// With returns env (KEY=value pairs) with Setting added to its GODEBUG,
// unless that already sets schedtrace or the host has been up too long
// (see the package comment). env is not modified.
func With(env []string) []string {
	if !wanted() {
		return env
	}
	return with(env)
}

func with(env []string) []string {
	out := make([]string, 0, len(env)+1)
	found := false
	for _, kv := range env {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			out = append(out, kv)
			continue
		}
		found = true
		if !setsSchedtrace(v) {
			kv = "GODEBUG=" + strings.TrimPrefix(v+","+Setting, ",")
		}
		out = append(out, kv)
	}
	if !found {
		out = append(out, "GODEBUG="+Setting)
	}
	return out
}

func setsSchedtrace(godebug string) bool {
	for kv := range strings.SplitSeq(godebug, ",") {
		if name, _, _ := strings.Cut(strings.TrimSpace(kv), "="); name == "schedtrace" {
			return true
		}
	}
	return false
}

// Reexec replaces the running process with itself under With's
// environment, when its own does not set schedtrace yet: the runtime reads
// GODEBUG's scheduler settings once, at start. It returns only when it did
// not exec: nil when nothing had to change, or why the exec failed (the
// process then runs on with Go's default).
func Reexec() error {
	// Set already: by the exec before this one, or the operator's choice.
	if setsSchedtrace(os.Getenv("GODEBUG")) || !wanted() {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("runtimeenv: %w", err)
	}
	err = syscall.Exec(self, os.Args, with(os.Environ()))
	return fmt.Errorf("runtimeenv: exec %s: %w", self, err)
}
