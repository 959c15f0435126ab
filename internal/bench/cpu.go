package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times. It is 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuSample is the CPU time used so far, at one instant, by the load
// generator (this process), the processes of one target (each root and its
// descendants), each of the target's components, and the whole machine
// (all CPUs, busy time only).
type cpuSample struct {
	self    time.Duration
	target  time.Duration
	parts   []time.Duration // by component, in the target's order
	machine time.Duration
}

// cpuUse is the difference of two samples.
type cpuUse struct {
	Loadgen time.Duration
	Target  time.Duration
	Parts   []time.Duration // by component
	// Others is the machine's busy time that was neither the load
	// generator's nor the target's: other engineers, other targets idling,
	// the kernel's own work.
	Others time.Duration
}

func (b cpuSample) since(a cpuSample) cpuUse {
	u := cpuUse{Loadgen: b.self - a.self, Target: b.target - a.target}
	u.Others = max(b.machine-a.machine-u.Loadgen-u.Target, 0)
	for i := range b.parts {
		if i < len(a.parts) {
			u.Parts = append(u.Parts, max(b.parts[i]-a.parts[i], 0))
		}
	}
	return u
}

// scope says which processes around a component's pids it counts.
type scope int

const (
	scopeTree  scope = iota // each pid and every process below it
	scopeSelf               // each pid alone
	scopeBelow              // every process below each pid, not the pid itself
)

// component is one part of a target for CPU accounting: edge, sidecar,
// handler, store, etcd, or in griddle up's single process all of them at
// once. Its processes are found anew at each sample, so a restarted
// handler is counted under its new pid.
type component struct {
	name  string
	pids  []int
	scope scope
}

// sampleCPU reads the CPU times of this process, of the process trees under
// roots, of each of comps, and of the machine. Processes' times are read
// from /proc/<pid>/stat; processes that exited since an earlier sample are
// no longer counted, which is why targets are long-lived.
func sampleCPU(roots []int, comps []component) (cpuSample, error) {
	var s cpuSample
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s, fmt.Errorf("bench: getrusage: %w", err)
	}
	s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	procs, err := readProcs()
	if err != nil {
		return s, err
	}
	children := childrenOf(procs)
	for _, pid := range walk(procs, children, roots) {
		s.target += procs[pid].cpu
	}
	s.parts = make([]time.Duration, len(comps))
	for i, c := range comps {
		s.parts[i] = componentCPU(procs, children, c)
	}
	s.machine, err = machineBusy()
	return s, err
}

// componentCPU is the CPU time used so far by c's processes.
func componentCPU(procs map[int]proc, children map[int][]int, c component) time.Duration {
	var d time.Duration
	if c.scope == scopeSelf {
		for _, pid := range c.pids {
			d += procs[pid].cpu
		}
		return d
	}
	for _, pid := range walk(procs, children, c.pids) {
		d += procs[pid].cpu
	}
	if c.scope == scopeBelow {
		for _, pid := range c.pids {
			d -= procs[pid].cpu
		}
	}
	return d
}

// proc is what sampleCPU needs of one /proc/<pid>/stat.
type proc struct {
	ppid int
	cpu  time.Duration // utime + stime
}

// readProcs reads every process's parent and CPU time. Processes that exit
// while it runs are skipped.
func readProcs() (map[int]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("bench: read /proc: %w", err)
	}
	out := make(map[int]proc, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		if p, err := parseStat(b); err == nil {
			out[pid] = p
		}
	}
	return out, nil
}

// parseStat parses /proc/<pid>/stat: "pid (comm) state ppid ... utime
// stime ...", where comm may hold spaces and parentheses.
func parseStat(b []byte) (proc, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return proc{}, fmt.Errorf("bench: stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return proc{}, fmt.Errorf("bench: stat: %d fields after comm, want 13 or more", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return proc{}, fmt.Errorf("bench: stat: bad number")
	}
	return proc{ppid: ppid, cpu: ticks(ut + st)}, nil
}

// descendants returns roots and every process below them.
func descendants(procs map[int]proc, roots []int) []int {
	return walk(procs, childrenOf(procs), roots)
}

// childrenOf maps each pid to its children's.
func childrenOf(procs map[int]proc) map[int][]int {
	children := make(map[int][]int, len(procs))
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	return children
}

// walk returns roots and every process below them, each once; pids not in
// procs (exited) are left out.
func walk(procs map[int]proc, children map[int][]int, roots []int) []int {
	seen := make(map[int]bool)
	var out []int
	stack := append([]int(nil), roots...)
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		if _, ok := procs[pid]; ok {
			out = append(out, pid)
		}
		stack = append(stack, children[pid]...)
	}
	return out
}

// machineBusy is the busy time of all CPUs together, from /proc/stat's
// first line: user, nice, system, irq, softirq and steal (not idle, not
// iowait; guest time is already in user).
func machineBusy() (time.Duration, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, fmt.Errorf("bench: /proc/stat is empty")
	}
	return parseProcStat(sc.Text())
}

func parseProcStat(line string) (time.Duration, error) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("bench: /proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/stat: field %d: %w", i, err)
		}
		busy += n
	}
	return ticks(busy), nil
}

func ticks(n int64) time.Duration { return time.Duration(n) * (time.Second / clockTicks) }

// ProcessCPU is the CPU time (user and system) process pid has used so
// far, from /proc/<pid>/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	p, err := parseStat(b)
	return p.cpu, err
}
