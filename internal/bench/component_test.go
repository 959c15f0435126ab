package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/bench/floor"
)

func TestComponentCPU(t *testing.T) {
	// 1 ─┬─ 10 ── 11 ── 12
	//    └─ 20 ── 21
	procs := map[int]proc{
		1: {ppid: 0, cpu: 1}, 10: {ppid: 1, cpu: 10}, 11: {ppid: 10, cpu: 100}, 12: {ppid: 11, cpu: 1000},
		20: {ppid: 1, cpu: 10000}, 21: {ppid: 20, cpu: 100000},
	}
	children := childrenOf(procs)
	for _, tc := range []struct {
		name string
		c    component
		want time.Duration
	}{
		{"tree", component{pids: []int{10}, scope: scopeTree}, 1110},
		{"self", component{pids: []int{10}, scope: scopeSelf}, 10},
		{"below", component{pids: []int{10}, scope: scopeBelow}, 1100},
		{"self of two", component{pids: []int{10, 20}, scope: scopeSelf}, 10010},
		{"below two", component{pids: []int{10, 20}, scope: scopeBelow}, 101100},
		{"exited pid", component{pids: []int{99}, scope: scopeBelow}, 0},
		{"nested pids counted once", component{pids: []int{1, 10}, scope: scopeTree}, 111111},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := componentCPU(procs, children, tc.c); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestSampleComponents runs a real process tree, a shell that waits for a
// child that spins, and checks that the child's CPU is counted below the
// parent and not as the parent's own.
func TestSampleComponents(t *testing.T) {
	cmd := exec.Command("sh", "-c", `sh -c 'i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; sleep 30' & wait`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("no sh: %v", err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	pid := cmd.Process.Pid
	comps := []component{
		{name: "parent", pids: []int{pid}, scope: scopeSelf},
		{name: "children", pids: []int{pid}, scope: scopeBelow},
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := sampleCPU([]int{pid}, comps)
		if err != nil {
			t.Fatal(err)
		}
		if s.parts[1] >= 100*time.Millisecond {
			if s.parts[0] > 20*time.Millisecond || s.target != s.parts[0]+s.parts[1] {
				t.Errorf("got parent %v, children %v, tree %v; want the parent idle and the tree their sum", s.parts[0], s.parts[1], s.target)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spinning child's CPU never reached 100ms: got %v (parent %v)", s.parts[1], s.parts[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPrintComponentsAndFloors(t *testing.T) {
	r := &Report{Targets: []string{"mesh", "deployed"}, Runs: []RunResult{
		{Target: "mesh", Phase: "run", Offered: 1000, Kept: true, CPU: RunCPU{TargetUSPerReq: 300, Components: []ComponentCPU{
			{Name: "up", USPerReq: 200}, {Name: "handlers", USPerReq: 100}}}},
		{Target: "deployed", Phase: "run", Offered: 1000, Kept: true, CPU: RunCPU{TargetUSPerReq: 500, Components: []ComponentCPU{
			{Name: "edge", USPerReq: 120}, {Name: "sidecar", USPerReq: 180}, {Name: "handler", USPerReq: 100},
			{Name: "store", USPerReq: 90}, {Name: "etcd", USPerReq: 10}}}},
	}, Floors: []floor.Result{{Name: "mangos-tcp", Hop: "edge → sidecar", InFlight: 16, PerSecond: 50000, NsPerOp: 20000, CPUUSPerOp: 9.5, AllocsPerOp: 15}}}
	var b bytes.Buffer
	printTable(&b, r)
	out := b.String()
	for _, want := range []string{"up 200, handlers 100", "edge 120, sidecar 180, handler 100, store 90, etcd 10", "mangos-tcp", "9.50", "edge → sidecar"} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
}

// TestRunDeployed builds griddle and the handlers from this module and
// runs the static scenario briefly against the deployed target with CPU
// profiles and floors: every component must be counted, its CPU must add
// up to the target's, and each profiled component must leave a profile.
func TestRunDeployed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds griddle and starts a whole deployment; skipped with -short")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain to build griddle with")
	}
	root := moduleRoot(t)
	dir := t.TempDir()
	griddle := dir + "/griddle"
	build := exec.Command(goTool, "build", "-o", griddle, "./cmd/griddle")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/griddle: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cfg := validConfig()
	cfg.Targets = []string{TargetDeployed}
	cfg.Rates = []int{50}
	cfg.Duration = time.Second
	cfg.Griddle, cfg.Source = griddle, root
	cfg.Out = dir + "/out"
	cfg.CPUProfileDir = dir + "/pprof"
	cfg.Floors, cfg.FloorInFlight, cfg.FloorDuration = true, []int{1}, 100*time.Millisecond
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 1 || rep.Runs[0].Success < 40 {
		t.Fatalf("got runs %+v; want one run with 40 or more answers", rep.Runs)
	}
	cpu := rep.Runs[0].CPU
	var names []string
	var sum float64
	for _, c := range cpu.Components {
		names = append(names, c.Name)
		sum += c.Sec
	}
	if got := strings.Join(names, ","); got != "edge,sidecar,handler,store,etcd" {
		t.Errorf("got components %s, want edge,sidecar,handler,store,etcd", got)
	}
	if d := sum - cpu.TargetSec; d < -0.011 || d > 0.011 {
		t.Errorf("components add up to %.2fs, the target used %.2fs", sum, cpu.TargetSec)
	}
	// etcd, the two sidecars, their handlers and the edge serve pprof.
	if len(rep.Runs[0].Profiles) != 6 {
		t.Errorf("got profiles %v, want 6", rep.Runs[0].Profiles)
	}
	for _, p := range rep.Runs[0].Profiles {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s: %v", p, err)
		}
	}
	// Closed loop at one in flight, and paced at the one rate.
	if want := 2 * len(floor.All()); len(rep.Floors) != want {
		t.Errorf("got %d floors, want %d", len(rep.Floors), want)
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(strings.TrimSpace(string(out)), "/go.mod")
}
