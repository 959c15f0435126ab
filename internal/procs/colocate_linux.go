package procs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ColocateDefaults are Colocate's thresholds, in cores of the whole
// group: it goes to one CPU once the group's mean over DownAfter is below
// 0.45, and back to every CPU once the mean of three samples on that one
// CPU reaches 0.5 or one sample 0.7. Measured spread, the group costs a
// third more CPU than on one (its cross-CPU wake-ups), so 0.45 spread is
// about 0.3 on one CPU, well below the way back. On one CPU the group's
// work queues behind itself: little for a read (four crossings; the
// mesh's p99 at 4,000 reads/s was 2.8–3.5 ms on one CPU against 2.4 ms
// spread), more for a message (ten crossings and a synced commit: p99
// 6.9–10 ms at 1,000/s against 4.9–5.8), and at 0.6 of the CPU, the
// first thresholds, the messages scenario's sustainable rate fell from
// 3,000 to 2,750/s.
var ColocateDefaults = Config{Up: 0.5, Down: 0.45, Burst: 0.7}

// Colocate keeps this process and its descendants (griddle up and its
// handler processes; a sidecar and its handler) on one CPU while their
// load together fits well within it, and on every CPU the process may use
// above that, until ctx ends; then it restores every CPU and returns nil.
//
// Every request crosses these processes several times, and each crossing
// wakes a thread of another process. Woken on another CPU, that costs an
// interprocessor interrupt, on a virtual machine an exit to its host: on
// a 2-core virtual machine the mesh's CPU per read was 172 µs at 1,000/s
// and 114 µs at 4,000/s spread, 139 and 94 µs with the group on one CPU
// (−19%, −18%), and the direct server's fell from 90 to 38 µs: most of
// what one process pays at low rates is threads waking each other across
// CPUs. The kernel's own placement does not see it: it spreads woken
// threads to idle CPUs. Envoy and DPDK pin their workers for the same
// reason; this makes the choice as the load changes.
//
// cfg's zero Up, Down and Burst take ColocateDefaults'; Max is ignored (the CPUs are
// those of the process's affinity at the start). It returns at once, with
// nil, where the process may use only one CPU, and with an error if the
// group's CPU time cannot be read.
func Colocate(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.Up == 0 {
		cfg.Up = ColocateDefaults.Up
	}
	if cfg.Down == 0 {
		cfg.Down = ColocateDefaults.Down
	}
	if cfg.Burst == 0 {
		cfg.Burst = ColocateDefaults.Burst
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return fmt.Errorf("procs: colocate: %w", err)
	}
	cpus := cpuList(all)
	if len(cpus) < 2 {
		return nil
	}
	cfg.Max = len(cpus)
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &group{self: os.Getpid(), seen: map[int]uint64{}}
	if _, err := g.sample(true); err != nil {
		return fmt.Errorf("procs: colocate: %w", err)
	}
	winStat, _ := readCPUStat() // /proc/stat at the start of the last full second
	c := newController(cfg, time.Now())
	on := -1 // the CPU the group is held on; -1: spread
	defer func() {
		if on >= 0 {
			g.apply(&all)
		}
	}()
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			// Once a second the members are looked up (a handler restarted
			// in between is born with its parent's CPUs), and /proc/stat's
			// window rolls. The clock is read with the CPU times, as in Run.
			second := n%10 == 0
			used, err := g.sample(second)
			if err != nil {
				continue
			}
			want, cores := c.observe(time.Now(), used)
			var stat cpuStat // read only where a choice of CPU needs it
			if second || (want == 1 && on < 0) {
				stat, _ = readCPUStat()
			}
			switch {
			case want == 1 && on < 0:
				on = idlest(winStat, stat, cpus)
				g.apply(oneCPU(on))
				log.Debug("procs: the process group held on one CPU", "cpu", on, "cores", cores, "processes", len(g.members))
			case want > 1 && on >= 0:
				on = -1
				g.apply(&all)
				log.Debug("procs: the process group spread over every CPU", "cores", cores)
			case on >= 0 && second && crowded(winStat, stat, on, cpus):
				// Other processes (another group held there, say) keep the
				// CPU busy: the group moves to the idlest.
				from := on
				on = idlest(winStat, stat, cpus)
				g.apply(oneCPU(on))
				log.Debug("procs: the process group moved off a busy CPU", "from", from, "cpu", on)
			case on >= 0:
				// Threads started since inherit the CPU; apply catches any
				// started while it last ran.
				g.applyNew(oneCPU(on))
			}
			if second {
				winStat = stat
			}
		}
	}
}

// group is a process and its descendants, and the CPU time each of their
// threads had used at the last sample.
type group struct {
	self    int
	members []int
	seen    map[int]uint64 // tid → nanoseconds on a CPU at the last sample
	applied map[int]bool   // tids given the current CPUs
}

// sample returns the CPU time the group's threads used since the last
// sample (a thread first seen now counts from now), looking the members
// up again when refresh is set.
func (g *group) sample(refresh bool) (time.Duration, error) {
	if refresh || g.members == nil {
		g.members = descendants(g.self)
	}
	var used uint64
	next := make(map[int]uint64, len(g.seen))
	for _, pid := range g.members {
		for _, tid := range tasks(pid) {
			ns, ok := taskNS(pid, tid)
			if !ok {
				continue
			}
			if before, ok := g.seen[tid]; ok && ns >= before {
				used += ns - before
			}
			next[tid] = ns
		}
	}
	if len(next) == 0 {
		return 0, fmt.Errorf("no thread's CPU time in /proc/%d/task/*/schedstat", g.self)
	}
	g.seen = next
	return time.Duration(used), nil
}

// apply gives every thread of the group the CPUs in set.
func (g *group) apply(set *unix.CPUSet) {
	g.applied = map[int]bool{}
	g.applyNew(set)
}

// applyNew gives the CPUs in set to the threads not given them yet.
func (g *group) applyNew(set *unix.CPUSet) {
	for tid := range g.seen {
		if g.applied[tid] {
			continue
		}
		// A thread that has exited since the sample is no error.
		_ = unix.SchedSetaffinity(tid, set)
		g.applied[tid] = true
	}
}

// descendants returns pid and every process below it.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		for _, tid := range tasks(out[i]) {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(out[i]) + "/task/" + strconv.Itoa(tid) + "/children")
			if err != nil {
				continue
			}
			for _, f := range bytes.Fields(b) {
				if child, err := strconv.Atoi(string(f)); err == nil {
					out = append(out, child)
				}
			}
		}
	}
	return out
}

// tasks returns the thread ids of pid.
func tasks(pid int) []int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out
}

// taskNS is the time thread tid of pid has spent on a CPU, in
// nanoseconds: the first field of its schedstat.
func taskNS(pid, tid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/schedstat")
	if err != nil {
		return 0, false
	}
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, false
	}
	ns, err := strconv.ParseUint(string(f[0]), 10, 64)
	return ns, err == nil
}

// oneCPU is the set of cpu alone.
func oneCPU(cpu int) *unix.CPUSet {
	var s unix.CPUSet
	s.Set(cpu)
	return &s
}

// cpuList is the CPUs in set, in order.
func cpuList(set unix.CPUSet) []int {
	n := set.Count()
	out := make([]int, 0, n)
	for i := 0; len(out) < n; i++ {
		if set.IsSet(i) {
			out = append(out, i)
		}
	}
	return out
}

// cpuStat is each CPU's busy and total time in clock ticks, from
// /proc/stat.
type cpuStat map[int]cpuTicks

type cpuTicks struct{ busy, total uint64 }

func readCPUStat() (cpuStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseCPUStat(b), nil
}

// parseCPUStat reads the cpuN lines of /proc/stat: busy is every field
// but idle and iowait (the fourth and fifth).
func parseCPUStat(b []byte) cpuStat {
	out := cpuStat{}
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		if len(f) < 6 || !bytes.HasPrefix(f[0], []byte("cpu")) || len(f[0]) == 3 {
			continue
		}
		cpu, err := strconv.Atoi(string(f[0][3:]))
		if err != nil {
			continue
		}
		var t cpuTicks
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(string(v), 10, 64)
			t.total += n
			if i != 3 && i != 4 {
				t.busy += n
			}
		}
		out[cpu] = t
	}
	return out
}

// busyShare is the share of cpu's time it was busy between two samples
// of /proc/stat; ok is false where they say nothing of it.
func busyShare(before, after cpuStat, cpu int) (share float64, ok bool) {
	b, ok1 := before[cpu]
	a, ok2 := after[cpu]
	if !ok1 || !ok2 || a.total <= b.total || a.busy < b.busy {
		return 0, false
	}
	return float64(a.busy-b.busy) / float64(a.total-b.total), true
}

// idlest is the CPU of cpus that was busy least between two samples of
// /proc/stat (the first of cpus where they tie or cannot be read).
func idlest(before, after cpuStat, cpus []int) int {
	best, bestShare := cpus[0], 2.0
	for _, c := range cpus {
		if s, ok := busyShare(before, after, c); ok && s < bestShare {
			best, bestShare = c, s
		}
	}
	return best
}

// crowded reports whether cpu, the group's, was nearly always busy
// between two samples while another of cpus had a third of its time or
// more to spare beyond it: on a host where several groups chose the
// same CPU, say.
func crowded(before, after cpuStat, cpu int, cpus []int) bool {
	s, ok := busyShare(before, after, cpu)
	if !ok || s < 0.9 {
		return false
	}
	other, _ := busyShare(before, after, idlest(before, after, cpus))
	return other <= s-1.0/3
}
