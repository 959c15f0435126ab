package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A virtual machine can stop running every process on it at once: its
// host hands the vCPUs to someone else for tens of milliseconds. A run
// that such a stall lands in holds every request in flight for its length
// and can fail the p99 target whatever the target does. The bench watches
// for stalls with a probe process that only sleeps stallPeriod at a time
// and reports each wake-up later than the threshold; a run a stall
// overlapped is flagged stalled, so that a sweep can tell the machine's
// failures from the target's.

// stallPeriod is how long the probe sleeps at a time.
const stallPeriod = time.Millisecond

// stallRetries is how many times a sweep runs again a rate whose failure a
// stall explains (Config.stallExplains).
const stallRetries = 2

// StallProbe is the probe process's body (griddle bench stall-probe): it
// sleeps stallPeriod at a time on a thread of its own, at real-time
// priority where it may (so that the load on the machine does not delay
// it; only a stop of the whole machine does), and writes each wake-up
// later than threshold to w as "<unix ns when due> <ns late>". It returns
// when ctx is done or w fails.
func StallProbe(ctx context.Context, w io.Writer, threshold time.Duration) error {
	runtime.LockOSThread()
	// SCHED_FIFO, priority 1, for this thread: a real-time thread runs as
	// soon as it wakes, ahead of every ordinary one. Without the right to
	// it (not root), the probe still catches stalls, and also long run
	// queues.
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 1}, 0); err != nil {
		if _, err := fmt.Fprintf(w, "# the probe runs at ordinary priority: sched_setattr: %v\n", err); err != nil {
			return err
		}
	}
	ts := syscall.NsecToTimespec(stallPeriod.Nanoseconds())
	for ctx.Err() == nil {
		start := time.Now()
		// A raw system call: the thread keeps its P while it sleeps. Through
		// the runtime's (unix.Nanosleep), the monitor thread took the P
		// back from every sleep and so polled every 20 µs: 0.3 of a core
		// for a probe that should cost nothing. The runtime's preemption of
		// a long-running goroutine interrupts a sleep now and then (EINTR):
		// a shorter sleep, never a late one.
		_, _, _ = syscall.RawSyscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		if late := time.Since(start) - stallPeriod; late >= threshold {
			if _, err := fmt.Fprintf(w, "%d %d\n", start.Add(stallPeriod).UnixNano(), late.Nanoseconds()); err != nil {
				return err
			}
		}
	}
	return nil
}

// stall is one late wake-up of the probe.
type stall struct {
	at time.Time // when the probe was due to wake
	d  time.Duration
}

// stallWatch runs the probe process and collects what it reports.
type stallWatch struct {
	cmd *exec.Cmd
	wg  sync.WaitGroup // the reader goroutine

	mu     sync.Mutex
	stalls []stall
	notes  []string // lines starting with '#'
	ended  bool     // the probe's output closed
}

// startStallWatch starts griddle (the binary) bench stall-probe.
func startStallWatch(griddle string, threshold time.Duration) (*stallWatch, error) {
	cmd := exec.Command(griddle, "bench", "stall-probe", "--threshold", threshold.String())
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: stall probe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: stall probe: %w", err)
	}
	w := &stallWatch{cmd: cmd}
	w.wg.Go(func() { w.read(out) })
	return w, nil
}

// read collects the probe's lines until its output closes.
func (w *stallWatch) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if s, ok := parseStall(line); ok {
			w.add(s)
		} else if note, ok := strings.CutPrefix(line, "#"); ok {
			w.mu.Lock()
			w.notes = append(w.notes, strings.TrimSpace(note))
			w.mu.Unlock()
		}
	}
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
}

// parseStall parses one "<unix ns> <ns>" line.
func parseStall(line string) (stall, bool) {
	a, b, ok := strings.Cut(line, " ")
	if !ok {
		return stall{}, false
	}
	at, err1 := strconv.ParseInt(a, 10, 64)
	d, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || d < 0 {
		return stall{}, false
	}
	return stall{at: time.Unix(0, at), d: time.Duration(d)}, true
}

// add records a stall.
func (w *stallWatch) add(s stall) {
	w.mu.Lock()
	w.stalls = append(w.stalls, s)
	w.mu.Unlock()
}

// worst is the longest stall that overlapped [from, to]: one that ended
// (the probe woke) after from and began before to.
func (w *stallWatch) worst(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var m time.Duration
	for _, s := range w.stalls {
		began, ended := s.at, s.at.Add(s.d)
		if ended.After(from) && began.Before(to) {
			m = max(m, s.d)
		}
	}
	return m
}

// summary is the count and the longest of all stalls seen, and the
// probe's notes.
func (w *stallWatch) summary() (n int, longest time.Duration, notes []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.stalls {
		longest = max(longest, s.d)
	}
	return len(w.stalls), longest, append([]string(nil), w.notes...)
}

// stop ends the probe and waits for its reader.
func (w *stallWatch) stop() {
	w.mu.Lock()
	if w.ended {
		w.notes = append(w.notes, "the probe ended before the bench did: the runs after that were not watched")
	}
	w.mu.Unlock()
	_ = w.cmd.Process.Kill()
	w.wg.Wait()
	_ = w.cmd.Wait()
}
