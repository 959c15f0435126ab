package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"
)

// ErrConfig is wrapped by every error of Config.Validate and
// DirectConfig.Validate.
var ErrConfig = errors.New("bench: invalid config")

// Targets the bench can start.
const (
	TargetDirect = "direct" // the handler alone under net/http
	TargetNginx  = "nginx"  // nginx as a reverse proxy in front of the direct server
	TargetMesh   = "mesh"   // griddle up: edge → sidecar → handler
	// TargetDeployed runs the mesh's components as production does, each
	// a process of its own: griddle edge, griddle sidecar (its handler a
	// child process), griddle store and etcd.
	TargetDeployed = "deployed"
)

// Config configures Run and Sweep. Zero values are invalid unless a field
// says otherwise; the CLI fills in the defaults.
type Config struct {
	Scenario string   // static, profile, messages or mixed (--scenario)
	Targets  []string // started in this order, run interleaved (--targets)
	Rates    []int    // offered rates of Run, requests/s (--rates)
	Duration time.Duration
	Warmup   time.Duration // per target, at the lowest rate, before measuring; 0: none
	Repeat   int           // runs per target and rate; the median by p99 is kept
	Out      string        // directory for results.json and latency.svg

	Profiles    int           // profile scenario: ids 1..Profiles
	Timeout     time.Duration // per request
	MaxInFlight int           // load generator's workers and connections per run; 0: sized from the rate

	// Sweep.
	P99Target    time.Duration // a rate is sustainable with p99 ≤ this (25 ms)
	MaxErrorRate float64       // ... and an error rate below this (0.001)
	SweepStart   int           // first rate tried
	SweepMax     int           // never offer more
	SweepFactor  float64       // geometric step while rates hold (> 1)
	SweepBudget  time.Duration // bound on all the sweep's runs together, per target
	Overload     float64       // after the sweep, a run at Overload × the sustainable rate; 0: none

	NoisyCores float64 // a run is noisy when other processes used more cores than this; 0: never
	// StallThreshold: a run is stalled when the stall probe (stall.go)
	// woke this much late during it; 0: no probe.
	StallThreshold time.Duration

	// How targets are started.
	Griddle       string // the griddle binary (os.Executable())
	Source        string // module root, for griddle up to build the handlers from ("": none)
	Handlers      string // directory holding prebuilt handler binaries hello and profiles ("": build with go)
	Nginx         string // nginx binary ("": looked up on PATH; absent: the nginx target is skipped)
	NginxWorkers  int
	TargetCPUs    string // taskset CPU list every target runs on ("": no pinning)
	MeshInstances int    // sidecars per service of the mesh (griddle up --instances) and deployed targets (0 or 1: one)
	HandlerProcs  int    // GOMAXPROCS of the mesh's and deployed target's handler processes (--handler-procs; 0: griddle up's and the sidecar's defaults)
	AdaptiveProcs bool   // griddle up and the deployed target's processes run with --adaptive-procs (false: =false, on every P)
	Colocate      bool   // griddle up and the deployed target's sidecars run with --colocate (false: =false, placed by the kernel)
	// HandlerPlainSocket: the mesh's and the deployed target's sidecars
	// run with --handler-plain-socket (no shared-memory pipe).
	HandlerPlainSocket bool

	// CPUProfileDir, when set, receives a CPU profile of each component
	// that serves /debug/pprof/ (edge, sidecars, griddle up, etcd, the
	// direct server) for every measured run, fetched during the run.
	CPUProfileDir string

	// Floors, when set, measures the floors of the hops (package floor)
	// once, before the targets start, at each of FloorInFlight round trips
	// in flight, for FloorDuration each.
	Floors        bool
	FloorInFlight []int
	FloorDuration time.Duration

	CommandLine []string     // recorded in results.json
	Stdout      io.Writer    // the table; nil: io.Discard
	Logger      *slog.Logger // progress; nil: slog.Default()
}

// Validate reports the first invalid field, named as on the command line.
// sweep selects the checks of Sweep instead of Run's.
func (c Config) Validate(sweep bool) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch c.Scenario {
	case ScenarioStatic, ScenarioProfile, ScenarioMessages, ScenarioMixed:
	default:
		return bad("--scenario %q: want static, profile, messages or mixed", c.Scenario)
	}
	if len(c.Targets) == 0 {
		return bad("--targets: want at least one of direct, nginx, mesh, deployed")
	}
	for i, t := range c.Targets {
		switch t {
		case TargetDirect, TargetNginx, TargetMesh, TargetDeployed:
		default:
			return bad("--targets %q: want direct, nginx, mesh or deployed", t)
		}
		if slices.Index(c.Targets, t) != i {
			return bad("--targets: %q twice", t)
		}
	}
	if !sweep {
		if len(c.Rates) == 0 {
			return bad("--rates: want at least one rate")
		}
		for _, r := range c.Rates {
			if r < 1 {
				return bad("--rates %d: want 1 or more requests/s", r)
			}
		}
	}
	switch {
	case c.Duration < 100*time.Millisecond:
		return bad("--duration %s: want 100ms or more", c.Duration)
	case c.Warmup < 0:
		return bad("--warmup %s: negative", c.Warmup)
	case c.Repeat < 1:
		return bad("--repeat %d: want 1 or more", c.Repeat)
	case c.Out == "":
		return bad("--out is required")
	case c.Profiles < 1:
		return bad("--profiles %d: want 1 or more", c.Profiles)
	case c.Timeout <= 0:
		return bad("--timeout %s: want more than 0", c.Timeout)
	case c.MaxInFlight < 0:
		return bad("--max-in-flight %d: negative", c.MaxInFlight)
	case c.NoisyCores < 0:
		return bad("--noisy-cpu %g: negative", c.NoisyCores)
	case c.StallThreshold < 0:
		return bad("--stall %s: negative", c.StallThreshold)
	case c.Griddle == "" && slices.Contains(c.Targets, TargetMesh):
		return bad("Griddle: the griddle binary is required for the mesh target")
	case c.Griddle == "" && slices.Contains(c.Targets, TargetDeployed):
		return bad("Griddle: the griddle binary is required for the deployed target")
	case c.Griddle == "" && needsProfiles(c.Scenario):
		return bad("Griddle: the griddle binary is required for the %s scenario's direct server", c.Scenario)
	case c.Source == "" && c.Handlers == "":
		return bad("--handlers: required where the module's source is not at hand")
	case c.NginxWorkers < 1:
		return bad("--nginx-workers %d: want 1 or more", c.NginxWorkers)
	case c.HandlerProcs < 0:
		return fmt.Errorf("%w: --handler-procs: %d is negative", ErrConfig, c.HandlerProcs)
	case c.MeshInstances < 0:
		return bad("--mesh-instances: negative")
	}
	if c.Floors {
		if len(c.FloorInFlight) == 0 {
			return bad("--floor-in-flight: want at least one number")
		}
		for _, n := range c.FloorInFlight {
			if n < 1 {
				return bad("--floor-in-flight %d: want 1 or more", n)
			}
		}
		if c.FloorDuration < 100*time.Millisecond {
			return bad("--floor-duration %s: want 100ms or more", c.FloorDuration)
		}
	}
	if sweep {
		switch {
		case c.P99Target <= 0:
			return bad("--p99 %s: want more than 0", c.P99Target)
		case c.MaxErrorRate <= 0 || c.MaxErrorRate >= 1:
			return bad("--max-error-rate %g: want between 0 and 1", c.MaxErrorRate)
		case c.SweepStart < 1:
			return bad("--start %d: want 1 or more", c.SweepStart)
		case c.SweepMax < c.SweepStart:
			return bad("--max-rate %d: below --start %d", c.SweepMax, c.SweepStart)
		case c.SweepFactor <= 1:
			return bad("--factor %g: want more than 1", c.SweepFactor)
		case c.SweepBudget < c.Duration:
			return bad("--budget %s: shorter than one run (--duration %s)", c.SweepBudget, c.Duration)
		case c.Overload < 0:
			return bad("--overload %g: negative", c.Overload)
		}
	}
	return nil
}

// inFlight is the load generator's bound on requests in flight at rate: the
// configured one, or enough for 200 ms of answers (at least 64, at most
// 10,000).
func (c Config) inFlight(rate int) int {
	if c.MaxInFlight > 0 {
		return c.MaxInFlight
	}
	return min(max(rate/5, 64), 10_000)
}

// ok reports whether r holds the sweep's bar.
func (c Config) ok(r RunResult) bool {
	return !r.Behind && r.Requests > 0 && r.ErrorRate < c.MaxErrorRate &&
		r.Latency.P99 <= float64(c.P99Target)/float64(time.Millisecond)
}

// stallExplains reports whether r failed in a stalled run with its p99
// within the target plus the stall: a failure the machine's stop may have
// caused, where a p99 far beyond that is the target's own.
func (c Config) stallExplains(r RunResult) bool {
	return r.Stalled && !c.ok(r) && r.Latency.P99 <= r.StallMS+float64(c.P99Target)/float64(time.Millisecond)
}
