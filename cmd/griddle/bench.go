package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/griddle-mesh/griddle/internal/bench"
)

// benchCmd is `griddle bench`: open-loop load against the mesh and its
// baselines, all started and stopped by the bench on 127.0.0.1.
func benchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the mesh against a direct net/http server and nginx, open-loop, on this machine",
		Long: `Measure the mesh against a direct net/http server and nginx, open-loop (fixed arrival
rate), on this machine. The bench builds the example handlers, starts each target on
127.0.0.1 itself, runs the load, stops the targets and writes results.json and
latency.svg into --out.

Targets:
  direct    the handler alone under net/http (profile scenario: griddle bench
            serve-direct, the same store read in a plain server)
  nginx     nginx as a reverse proxy in front of a direct server (skipped when
            nginx is not installed)
  mesh      griddle up: one process holding etcd, the store, the edge and the
            sidecars, plus a handler process per service instance
  deployed  the components as production runs them, each a process of its own:
            griddle edge, griddle sidecar --store http://... (its handler a child
            process), griddle store, and etcd (griddle bench serve-etcd: griddle
            up's embedded etcd, alone); profiles seeded with griddle seed

Scenarios: static (hello's greeting), profile (a random profile of 1..--profiles per
request, an uncached store read).

CPU is counted per request from /proc for each target as a whole and for each of its
components, each from its own processes: direct: server; nginx: nginx, backend; mesh:
up (the griddle up process), handlers (its children); deployed: edge, sidecar, handler,
store, etcd. --cpuprofile-dir saves a CPU profile of every component that serves
/debug/pprof/ (mesh: up; deployed: edge, each sidecar, etcd; direct: the server),
fetched during each measured run. --floors measures the floor of each hop first, in
the bench's own process: mangos REQ/REP over tcp, a frame echo on a unix socket (a
connection per request, and one multiplexed connection), a Badger read bare and
through the store package; ns, allocations and CPU µs per round trip, closed loop at
each --floor-in-flight and (run only) paced at each of --rates.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(benchRunCmd(g, false), benchRunCmd(g, true), benchServeDirectCmd(g), benchServeEtcdCmd(g), benchStallProbeCmd())
	return cmd
}

// benchRunCmd is `griddle bench run`, or with sweep `griddle bench sweep`.
func benchRunCmd(g *globals, sweep bool) *cobra.Command {
	var (
		cfg      bench.Config
		targets  string
		rates    string
		p99      time.Duration
		floorsAt string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run every target at every rate, interleaved, and report latency, errors and CPU",
		Example: `  griddle bench run --scenario static --targets direct,nginx,mesh --rates 1000,2000 --duration 10s --out bench-out
  griddle bench run --scenario profile --targets direct,nginx,mesh,deployed --rates 1000,4000 --repeat 3 --out bench-out
  griddle bench run --scenario profile --targets mesh,deployed --rates 2000 --duration 5s --cpuprofile-dir bench-out/pprof
  griddle bench run --scenario profile --targets direct --rates 1000 --floors --floor-in-flight 1,16 --out bench-out`,
		Args: cobra.NoArgs,
	}
	if sweep {
		cmd.Use = "sweep"
		cmd.Short = "Find each target's sustainable rate (p99 and error bar), then optionally overload it"
		cmd.Example = `  griddle bench sweep --scenario profile --targets direct,nginx,mesh,deployed --duration 5s --budget 60s --overload 2 --out bench-out`
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := g.logger()
		if err != nil {
			return err
		}
		cfg.Logger = log
		cfg.Stdout = cmd.OutOrStdout()
		cfg.CommandLine = os.Args
		cfg.P99Target = p99
		for _, t := range strings.Split(targets, ",") {
			if t = strings.TrimSpace(t); t != "" {
				cfg.Targets = append(cfg.Targets, t)
			}
		}
		if !sweep {
			if cfg.Rates, err = intList(rates); err != nil {
				return fmt.Errorf("--rates %q: %w", rates, err)
			}
		}
		if cfg.FloorInFlight, err = intList(floorsAt); err != nil {
			return fmt.Errorf("--floor-in-flight %q: %w", floorsAt, err)
		}
		if cfg.Griddle, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: the griddle binary: %w", err)
		}
		if cfg.Handlers == "" {
			if cfg.Source, err = os.Getwd(); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
		}
		if sweep {
			_, err = bench.Sweep(cmd.Context(), cfg)
		} else {
			_, err = bench.Run(cmd.Context(), cfg)
		}
		return err
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Scenario, "scenario", bench.ScenarioStatic, "static, profile, messages (POST /messages/{id}: a store transaction and an event) or mixed (90% profile reads, 10% messages)")
	f.StringVar(&targets, "targets", "direct,nginx,mesh,deployed", "comma-separated: direct, nginx, mesh, deployed")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of each measured run")
	f.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "warm-up per target at the lowest rate, not reported (0: none)")
	f.IntVar(&cfg.Repeat, "repeat", 1, "runs per target and rate; the median by p99 of the quiet ones is kept")
	f.StringVar(&cfg.Out, "out", "bench-out", "directory for results.json, latency.svg and the targets' logs")
	f.IntVar(&cfg.Profiles, "profiles", 1000, "profile scenario: ids drawn at random from 1..N (the seeded ones)")
	f.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "per request; a request without an answer by then counts as an error")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "load generator's workers and connections (0: rate/5, 64 to 10000)")
	f.Float64Var(&cfg.NoisyCores, "noisy-cpu", 0.25, "a run is noisy when other processes used more cores than this (0: never)")
	f.DurationVar(&cfg.StallThreshold, "stall", 10*time.Millisecond, "a run is stalled when a probe process that only sleeps 1 ms at a time, at real-time priority, woke this much late during it: the whole machine stopped (a virtual machine's host took its CPUs); a sweep runs a failed rate again, up to twice, when the stall explains its failure (p99 within --p99 plus the stall) (0: no probe)")
	f.StringVar(&cfg.Handlers, "handlers", "", "directory with prebuilt handler binaries hello and profiles (default: go build from the current module)")
	f.StringVar(&cfg.Nginx, "nginx", "", "nginx binary (default: nginx on PATH; without one the nginx target is skipped)")
	f.IntVar(&cfg.NginxWorkers, "nginx-workers", 1, "nginx worker_processes")
	f.StringVar(&cfg.TargetCPUs, "target-cpus", "", "run every target under taskset -c LIST (pin the bench itself with taskset)")
	f.IntVar(&cfg.MeshInstances, "mesh-instances", 1, "sidecars per service of the mesh (griddle up --instances) and deployed targets")
	f.BoolVar(&cfg.HandlerPlainSocket, "mesh-handler-plain-socket", false, "run the mesh's and the deployed target's sidecars with --handler-plain-socket: the hop to each handler on its unix socket alone, without the shared-memory pipe")
	f.BoolVar(&cfg.Colocate, "mesh-colocate", true, "run the mesh's griddle up and the deployed target's sidecars with --colocate, their default (each with its handlers on one CPU while their load fits in half of one); false: placed by the kernel")
	f.BoolVar(&cfg.AdaptiveProcs, "mesh-adaptive-procs", true, "run the mesh's griddle up and the deployed target's processes with --adaptive-procs, their default (one core while the load fits in half of one); false: on every core")
	f.IntVar(&cfg.HandlerProcs, "handler-procs", 0, "GOMAXPROCS of the mesh's and deployed target's handler processes (griddle up/sidecar --handler-procs; 0: their defaults: griddle up shares the cores among its handlers, a sidecar leaves Go's)")
	f.StringVar(&cfg.CPUProfileDir, "cpuprofile-dir", "", "save a CPU profile of each component with /debug/pprof/ for every measured run into this directory (<target>-<component>-<phase>-<rate>-r<repeat>.pprof)")
	f.BoolVar(&cfg.Floors, "floors", false, "first measure each hop's floor in this process (mangos tcp, unix socket, Badger read), closed loop and paced at each rate")
	f.StringVar(&floorsAt, "floor-in-flight", "1,16", "round trips in flight at which --floors measures closed loop, comma-separated")
	f.DurationVar(&cfg.FloorDuration, "floor-duration", 2*time.Second, "measured time of each floor at each in-flight number")
	if sweep {
		f.DurationVar(&p99, "p99", 25*time.Millisecond, "a rate is sustainable with p99 at or below this")
		f.Float64Var(&cfg.MaxErrorRate, "max-error-rate", 0.001, "... and a share of errors below this")
		f.IntVar(&cfg.SweepStart, "start", 500, "first rate tried, requests/s")
		f.IntVar(&cfg.SweepMax, "max-rate", 200_000, "highest rate tried, requests/s")
		f.Float64Var(&cfg.SweepFactor, "factor", 2, "geometric step up while rates hold")
		f.DurationVar(&cfg.SweepBudget, "budget", 2*time.Minute, "sweep time per target (runs only), bounding the search")
		f.Float64Var(&cfg.Overload, "overload", 0, "then run each target at this multiple of its sustainable rate (0: no overload run)")
	} else {
		f.StringVar(&rates, "rates", "1000,2000", "comma-separated offered rates, requests/s")
		f.DurationVar(&p99, "p99", 25*time.Millisecond, "p99 target drawn on the plot")
		cfg.MaxErrorRate = 0.001
	}
	return cmd
}

// benchServeDirectCmd is the profile scenario's direct server, run by the
// bench as a child process.
func benchServeDirectCmd(g *globals) *cobra.Command {
	var cfg bench.DirectConfig
	cmd := &cobra.Command{
		Use:    "serve-direct",
		Short:  "Serve profiles from the embedded store under plain net/http (the bench's baseline)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg.Logger = log
			return bench.ServeDirect(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.StoreDir, "store-dir", "", "the store's directory, seeded when empty (required)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8000", "address to serve on")
	f.IntVar(&cfg.Profiles, "profiles", 1000, "seed ids 1..N")
	f.StringVar(&cfg.Admin, "admin", "", "address serving /debug/pprof/ (empty: none)")
	return cmd
}

// benchServeEtcdCmd is the deployed target's etcd: griddle up's embedded
// etcd alone, run by the bench as a child process.
func benchServeEtcdCmd(g *globals) *cobra.Command {
	var cfg bench.EtcdConfig
	cmd := &cobra.Command{
		Use:    "serve-etcd",
		Short:  "Serve the embedded etcd alone, configured as griddle up configures it (the deployed target's etcd)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg.Logger = log
			return bench.ServeEtcd(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", "", "etcd's data directory (required)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:2379", "client address")
	f.StringVar(&cfg.Admin, "admin", "", "address serving /debug/pprof/ (empty: none)")
	return cmd
}

// benchStallProbeCmd is the bench's stall probe, run by the bench as a
// child process (bench.StallProbe).
func benchStallProbeCmd() *cobra.Command {
	var threshold time.Duration
	cmd := &cobra.Command{
		Use:    "stall-probe",
		Short:  "Sleep 1 ms at a time and print each wake-up later than --threshold (the bench's probe of machine stalls)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if threshold <= 0 {
				return fmt.Errorf("--threshold %s: want a positive duration", threshold)
			}
			return bench.StallProbe(cmd.Context(), os.Stdout, threshold)
		},
	}
	cmd.Flags().DurationVar(&threshold, "threshold", 10*time.Millisecond, "report wake-ups later than this")
	return cmd
}

// intList parses comma-separated integers; "" is none.
func intList(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
