package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/griddle-mesh/griddle/internal/bench/floor"
)

// Report is everything a bench command measured; it is written to
// results.json.
type Report struct {
	Machine   Machine            `json:"machine"`
	Command   []string           `json:"command"`
	Scenario  string             `json:"scenario"`
	Targets   []string           `json:"targets"` // those that ran
	Started   time.Time          `json:"started"`
	Finished  time.Time          `json:"finished"`
	Settings  Settings           `json:"settings"`
	Notes     []string           `json:"notes,omitempty"`
	Runs      []RunResult        `json:"runs"` // every run, in the order run; Kept marks the reported ones
	Sustained map[string]float64 `json:"sustainable_rps,omitempty"`
	// Floors are the hops' floors (package floor), measured in this
	// process before the targets started; with --floors only.
	Floors []floor.Result `json:"floors,omitempty"`
}

// Settings are the parameters the numbers depend on.
type Settings struct {
	DurationSec  float64 `json:"duration_sec"`
	WarmupSec    float64 `json:"warmup_sec"`
	Repeat       int     `json:"repeat"`
	P99TargetMS  float64 `json:"p99_target_ms"`
	MaxErrorRate float64 `json:"max_error_rate"`
	Profiles     int     `json:"profiles,omitempty"`
	NginxWorkers int     `json:"nginx_workers"`
	TargetCPUs   string  `json:"target_cpus,omitempty"`
	NoisyCores   float64 `json:"noisy_cores"`
	StallMS      float64 `json:"stall_threshold_ms"`  // 0: no stall probe
	Instances    int     `json:"instances,omitempty"` // sidecars per service, mesh and deployed
	CPUProfiles  string  `json:"cpu_profile_dir,omitempty"`
	// AdaptiveProcs: the mesh's and the deployed target's processes ran
	// with --adaptive-procs (their default), or with it false.
	AdaptiveProcs bool `json:"adaptive_procs"`
	// Colocate: griddle up and the deployed target's sidecars ran with
	// --colocate (their default), or with it false.
	Colocate bool `json:"colocate"`
	// HandlerPlainSocket: their sidecars ran with --handler-plain-socket.
	HandlerPlainSocket bool `json:"handler_plain_socket"`
}

// Machine describes where the numbers were measured.
type Machine struct {
	NumCPU    int    `json:"nproc"`
	Model     string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	Affinity  int    `json:"loadgen_cpus"` // CPUs the load generator may run on
}

func machine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), Affinity: runtime.GOMAXPROCS(0)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	// NumCPU counts the CPUs this process may run on (its affinity).
	if b, err := os.ReadFile("/sys/devices/system/cpu/online"); err == nil {
		m.NumCPU = countCPUs(strings.TrimSpace(string(b)))
		m.Affinity = runtime.NumCPU()
	}
	return m
}

// countCPUs counts the CPUs of a list like "0-3,8,10-11".
func countCPUs(list string) int {
	n := 0
	for _, part := range strings.Split(list, ",") {
		var lo, hi int
		if _, err := fmt.Sscanf(part, "%d-%d", &lo, &hi); err == nil {
			n += hi - lo + 1
		} else if _, err := fmt.Sscanf(part, "%d", &lo); err == nil {
			n++
		}
	}
	return n
}

// session is one bench command: its targets, started once and stopped at
// the end, and its report.
type session struct {
	cfg     Config
	log     *slog.Logger
	st      starter
	targets []*target
	report  Report
	stalls  *stallWatch // nil: no probe
}

// open validates cfg, starts the targets (skipping nginx, with a note,
// when there is none) and warms each up. The caller must close the session.
func open(ctx context.Context, cfg Config, sweep bool) (*session, error) {
	if err := cfg.Validate(sweep); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("bench: --out: %w", err)
	}
	if cfg.CPUProfileDir != "" {
		if err := os.MkdirAll(cfg.CPUProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: --cpuprofile-dir: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "griddle-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	s := &session{cfg: cfg, log: cfg.Logger, st: starter{cfg: cfg, dir: dir}}
	s.report = Report{
		Machine: machine(), Command: cfg.CommandLine, Scenario: cfg.Scenario, Started: time.Now().UTC(),
		Settings: Settings{
			DurationSec: cfg.Duration.Seconds(), WarmupSec: cfg.Warmup.Seconds(), Repeat: cfg.Repeat,
			P99TargetMS: float64(cfg.P99Target) / 1e6, MaxErrorRate: cfg.MaxErrorRate,
			NginxWorkers: cfg.NginxWorkers, TargetCPUs: cfg.TargetCPUs, NoisyCores: cfg.NoisyCores,
			Instances: max(cfg.MeshInstances, 1), CPUProfiles: cfg.CPUProfileDir,
			AdaptiveProcs: cfg.AdaptiveProcs, Colocate: cfg.Colocate, HandlerPlainSocket: cfg.HandlerPlainSocket,
		},
	}
	if needsProfiles(cfg.Scenario) {
		s.report.Settings.Profiles = cfg.Profiles
	}
	if cfg.StallThreshold > 0 {
		if cfg.Griddle == "" {
			s.notef("stall probe: off: no griddle binary to run it")
		} else if s.stalls, err = startStallWatch(cfg.Griddle, cfg.StallThreshold); err != nil {
			return nil, errors.Join(err, s.close())
		} else {
			s.report.Settings.StallMS = float64(cfg.StallThreshold) / 1e6
		}
	}
	if err := s.start(ctx); err != nil {
		return nil, errors.Join(err, s.close())
	}
	return s, nil
}

func (s *session) start(ctx context.Context) error {
	names := s.cfg.Targets
	if slices.Contains(names, TargetNginx) {
		nginx := s.cfg.Nginx
		if nginx == "" {
			nginx, _ = exec.LookPath("nginx")
		}
		if nginx == "" {
			s.notef("nginx: skipped: no nginx on PATH and no --nginx (apt-get install nginx)")
			names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == TargetNginx })
		}
		s.st.nginx = nginx
	}
	if len(names) == 0 {
		return fmt.Errorf("%w: no target left to run", ErrConfig)
	}
	if err := os.MkdirAll(filepath.Join(s.st.dir, "bin"), 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := s.st.buildHandlers(ctx); err != nil {
		return err
	}
	if s.cfg.Floors {
		if err := s.floors(ctx); err != nil {
			return err
		}
	}
	for _, name := range names {
		s.log.Info("bench: starting target", "target", name)
		t, err := s.st.start(ctx, name)
		if err != nil {
			return err
		}
		s.targets = append(s.targets, t)
		s.report.Targets = append(s.report.Targets, name)
		if t.note != "" {
			s.notef("%s", t.note)
		}
		if s.cfg.CPUProfileDir != "" {
			s.notef("%s: CPU profiles of %s in %s", t.name, profilerNames(t), s.cfg.CPUProfileDir)
		}
	}
	if s.cfg.Warmup > 0 {
		rate := s.cfg.SweepStart
		if len(s.cfg.Rates) > 0 {
			rate = slices.Min(s.cfg.Rates)
		}
		for _, t := range s.targets {
			if _, err := s.measure(ctx, t, rate, s.cfg.Warmup, "warmup", 0); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *session) notef(format string, a ...any) {
	n := fmt.Sprintf(format, a...)
	s.report.Notes = append(s.report.Notes, n)
	s.log.Info("bench: " + n)
}

// floors measures every floor in this process, while no target runs yet:
// closed loop at each of cfg.FloorInFlight, then paced at each of cfg.Rates
// with one round trip in flight (at these rates they rarely overlap).
func (s *session) floors(ctx context.Context) error {
	type point struct{ inFlight, rate int }
	var points []point
	for _, n := range s.cfg.FloorInFlight {
		points = append(points, point{n, 0})
	}
	for _, r := range s.cfg.Rates {
		points = append(points, point{1, r})
	}
	for _, f := range floor.All() {
		for _, p := range points {
			r, err := floor.Measure(ctx, f, floor.Config{
				InFlight: p.inFlight, Rate: p.rate, Duration: s.cfg.FloorDuration, Warmup: s.cfg.FloorDuration / 5,
				Keys: s.cfg.Profiles,
			})
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			s.log.Info("bench: floor", "floor", r.Name, "in_flight", p.inFlight, "rate", p.rate, "per_sec", int(r.PerSecond),
				"cpu_us_per_op", fmt.Sprintf("%.2f", r.CPUUSPerOp), "allocs_per_op", fmt.Sprintf("%.1f", r.AllocsPerOp))
			s.report.Floors = append(s.report.Floors, r)
		}
	}
	return nil
}

func profilerNames(t *target) string {
	if len(t.profilers) == 0 {
		return "no component (none serves /debug/pprof/)"
	}
	names := make([]string, len(t.profilers))
	for i, p := range t.profilers {
		names[i] = p.name
	}
	return strings.Join(names, ", ")
}

// close stops every target, keeps their logs under Out/logs, writes
// results.json and latency.svg when there is anything to write, and
// removes the session's temporary directory.
func (s *session) close() error {
	var errs []error
	for _, t := range s.targets {
		if err := t.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if logs, _ := filepath.Glob(filepath.Join(s.st.dir, "*.log")); len(logs) > 0 {
		keep := filepath.Join(s.cfg.Out, "logs")
		if err := os.MkdirAll(keep, 0o755); err == nil {
			for _, l := range append(logs, filepath.Join(s.st.dir, "nginx", "error.log")) {
				if _, err := os.Stat(l); err == nil {
					_ = copyFile(l, filepath.Join(keep, filepath.Base(l)))
				}
			}
		}
	}
	if s.stalls != nil {
		s.stalls.stop()
		n, longest, notes := s.stalls.summary()
		for _, note := range notes {
			s.notef("stall probe: %s", note)
		}
		stalled := 0
		for _, r := range s.report.Runs {
			if r.Stalled {
				stalled++
			}
		}
		s.notef("stall probe: %d stalls of the whole machine of %s or more (longest %s); %d of %d runs stalled (flag S)",
			n, s.cfg.StallThreshold, longest.Round(100*time.Microsecond), stalled, len(s.report.Runs))
	}
	if len(s.report.Runs) > 0 || len(s.report.Floors) > 0 {
		s.report.Finished = time.Now().UTC()
		if err := writeReport(s.cfg.Out, &s.report); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(s.st.dir); err != nil {
		errs = append(errs, fmt.Errorf("bench: %w", err))
	}
	return errors.Join(errs...)
}

// measure runs one open-loop run against t and records it.
func (s *session) measure(ctx context.Context, t *target, rate int, d time.Duration, phase string, repeat int) (RunResult, error) {
	profiles := func() []string { return nil }
	if phase != "warmup" {
		profiles = s.startProfiles(ctx, t, fmt.Sprintf("%s-%d-r%d", phase, rate, repeat), d)
	}
	from := time.Now()
	r, err := attack(ctx, load{
		target: t.name, rate: rate, duration: d, timeout: s.cfg.Timeout,
		maxInFlight: s.cfg.inFlight(rate), targeter: targeter(s.cfg.Scenario, t.base, s.cfg.Profiles),
		roots: t.roots(), components: t.components, noisyCores: s.cfg.NoisyCores,
	})
	r.Profiles = profiles()
	if err != nil {
		return r, err
	}
	r.Phase, r.Repeat = phase, repeat
	if s.stalls != nil {
		worst := s.stalls.worst(from, time.Now())
		r.StallMS = float64(worst) / 1e6
		r.Stalled = worst >= s.cfg.StallThreshold
	}
	s.log.Info("bench: run", "target", t.name, "phase", phase, "offered", rate, "achieved", int(r.Achieved),
		"p99_ms", r.Latency.P99, "errors", r.Errors, "target_us_per_req", int(r.CPU.TargetUSPerReq),
		"loadgen_cores", fmt.Sprintf("%.2f", r.CPU.LoadgenCores), "others_cores", fmt.Sprintf("%.2f", r.CPU.OthersCores),
		"stall_ms", r.StallMS)
	if phase != "warmup" {
		s.report.Runs = append(s.report.Runs, r)
	}
	return r, nil
}

// keep marks, among the runs of indexes idx (repeats of one target at one
// rate), the median by p99 of the quiet ones (of all, when none was quiet)
// as Kept, and returns it. A run is not quiet when it was noisy, or when
// it failed by no more than a stall of the machine during it explains; a
// stalled run that held, or failed beyond its stall, counts as it is.
func (s *session) keep(idx []int) RunResult {
	var quiet, all []RunResult
	for _, i := range idx {
		all = append(all, s.report.Runs[i])
		if r := s.report.Runs[i]; !r.Noisy && !s.cfg.stallExplains(r) {
			quiet = append(quiet, s.report.Runs[i])
		}
	}
	if len(quiet) == 0 {
		quiet = all
	}
	m := median(quiet, func(r RunResult) float64 { return r.Latency.P99 })
	for _, i := range idx {
		if r := s.report.Runs[i]; r.Repeat == m.Repeat && r.Target == m.Target && r.Offered == m.Offered && r.Phase == m.Phase {
			s.report.Runs[i].Kept = true
		}
	}
	m.Kept = true
	return m
}

// unkeep clears Kept on the runs of target at rate in phase: a later run
// replaces them.
func (s *session) unkeep(target string, rate int, phase string) {
	for i, r := range s.report.Runs {
		if r.Target == target && r.Offered == float64(rate) && r.Phase == phase {
			s.report.Runs[i].Kept = false
		}
	}
}

// repeat runs t at rate cfg.Repeat times in a row and keeps the median.
// Run interleaves targets between repeats instead; the sweep does not, as
// each target's next rate depends on its last.
func (s *session) repeated(ctx context.Context, t *target, rate int, phase string) (RunResult, error) {
	var idx []int
	for rep := 1; rep <= s.cfg.Repeat; rep++ {
		if _, err := s.measure(ctx, t, rate, s.cfg.Duration, phase, rep); err != nil {
			return RunResult{}, err
		}
		idx = append(idx, len(s.report.Runs)-1)
	}
	return s.keep(idx), nil
}

// Run starts the targets, runs each at each rate interleaved (every target
// at a rate, then every target at the next rate), cfg.Repeat times, keeps
// the median of the repeats, prints a table to cfg.Stdout and writes
// results.json and latency.svg into cfg.Out.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	s, err := open(ctx, cfg, false)
	if err != nil {
		return nil, err
	}
	err = s.runRates(ctx)
	if cerr := s.close(); err == nil {
		err = cerr
	}
	printTable(s.cfg.Stdout, &s.report)
	return &s.report, err
}

func (s *session) runRates(ctx context.Context) error {
	for _, rate := range s.cfg.Rates {
		idx := make(map[string][]int)
		for rep := 1; rep <= s.cfg.Repeat; rep++ {
			for _, t := range s.targets {
				if _, err := s.measure(ctx, t, rate, s.cfg.Duration, "run", rep); err != nil {
					return err
				}
				idx[t.name] = append(idx[t.name], len(s.report.Runs)-1)
			}
		}
		for _, t := range s.targets {
			s.keep(idx[t.name])
		}
	}
	return nil
}

// sweepState is one target's progress through the sweep.
type sweepState struct {
	t         *target
	good, bad int // highest rate that held, lowest that did not; 0: none yet
	next      int
	spent     time.Duration
	done      bool
}

// Sweep finds each target's sustainable rate — the highest offered rate
// with p99 ≤ cfg.P99Target and an error rate below cfg.MaxErrorRate — by
// geometric steps from cfg.SweepStart, then a binary search between the
// last rate that held and the first that did not, down to 5%; each target
// spends at most cfg.SweepBudget. Targets take turns, one run each. With
// cfg.Overload, each target then runs at that multiple of its sustainable
// rate. Output as for Run.
func Sweep(ctx context.Context, cfg Config) (*Report, error) {
	s, err := open(ctx, cfg, true)
	if err != nil {
		return nil, err
	}
	err = s.sweep(ctx)
	if err == nil && cfg.Overload > 0 {
		err = s.overload(ctx)
	}
	if cerr := s.close(); err == nil {
		err = cerr
	}
	printTable(s.cfg.Stdout, &s.report)
	return &s.report, err
}

// sweepPrecision ends the binary search once bad - good ≤ this × good.
const sweepPrecision = 0.05

func (s *session) sweep(ctx context.Context) error {
	states := make([]*sweepState, len(s.targets))
	for i, t := range s.targets {
		states[i] = &sweepState{t: t, next: s.cfg.SweepStart}
	}
	per := time.Duration(s.cfg.Repeat) * s.cfg.Duration
	for {
		active := false
		for _, st := range states {
			if st.done {
				continue
			}
			active = true
			rate := st.next
			r, err := s.repeated(ctx, st.t, rate, "sweep")
			if err != nil {
				return err
			}
			st.spent += per
			// A rate that failed in a stalled run, by no more than the
			// stall explains, may have failed for the machine: it runs
			// again, up to stallRetries times.
			for try := 0; s.cfg.stallExplains(r) && try < stallRetries && st.spent+per <= s.cfg.SweepBudget; try++ {
				s.log.Info("bench: the machine stalled during a failed run: running it again", "target", st.t.name,
					"offered", rate, "stall_ms", r.StallMS)
				s.unkeep(st.t.name, rate, "sweep")
				if r, err = s.repeated(ctx, st.t, rate, "sweep"); err != nil {
					return err
				}
				st.spent += per
			}
			if s.cfg.ok(r) {
				st.good = rate
			} else {
				st.bad = rate
			}
			st.next, st.done = s.nextRate(st)
			if st.spent+per > s.cfg.SweepBudget {
				st.done = true
			}
		}
		if !active {
			break
		}
	}
	s.report.Sustained = map[string]float64{}
	for _, st := range states {
		s.report.Sustained[st.t.name] = float64(st.good)
		if st.good == 0 {
			s.notef("%s: no rate from %d down held p99 ≤ %s with errors < %g%%", st.t.name, s.cfg.SweepStart,
				s.cfg.P99Target, 100*s.cfg.MaxErrorRate)
		}
	}
	return nil
}

// nextRate is the rate st tries next, and whether it is done.
func (s *session) nextRate(st *sweepState) (int, bool) {
	switch {
	case st.bad == 0: // still climbing
		if st.good >= s.cfg.SweepMax {
			return 0, true
		}
		return min(int(float64(st.good)*s.cfg.SweepFactor), s.cfg.SweepMax), false
	case st.good == 0: // the first rate failed: step down
		n := int(float64(st.bad) / s.cfg.SweepFactor)
		return n, n < 1
	}
	if float64(st.bad-st.good) <= sweepPrecision*float64(st.good) {
		return 0, true
	}
	return (st.good + st.bad) / 2, false
}

// overload runs each target with a sustainable rate at cfg.Overload times
// it, interleaved and repeated like Run.
func (s *session) overload(ctx context.Context) error {
	idx := make(map[string][]int)
	for rep := 1; rep <= s.cfg.Repeat; rep++ {
		for _, t := range s.targets {
			good := s.report.Sustained[t.name]
			if good == 0 {
				continue
			}
			if _, err := s.measure(ctx, t, int(good*s.cfg.Overload), s.cfg.Duration, "overload", rep); err != nil {
				return err
			}
			idx[t.name] = append(idx[t.name], len(s.report.Runs)-1)
		}
	}
	for _, t := range s.targets {
		if len(idx[t.name]) > 0 {
			s.keep(idx[t.name])
		}
	}
	return nil
}
