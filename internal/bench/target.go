package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/griddle-mesh/griddle/internal/loopback"
	"github.com/griddle-mesh/griddle/plugins"
)

// Bounds on starting and stopping targets.
const (
	readyTimeout = 90 * time.Second // griddle up may build the handlers first
	stopGrace    = 10 * time.Second // SIGTERM, then SIGKILL
	probeEvery   = 50 * time.Millisecond
)

// ErrTargetStart wraps every failure to start a target.
var ErrTargetStart = errors.New("bench: target did not start")

// target is one system under test, running on 127.0.0.1. Its processes are
// children of the bench, all in the bench's own session and process group
// (none is started in a session of its own), so that the kernel's autogroup
// scheduling treats every target alike.
type target struct {
	name  string
	base  string     // http://127.0.0.1:port
	procs []*process // started in order, stopped in reverse
	note  string     // what the report must say about how it ran
	// components split the target's CPU among its parts, each counted
	// from its own processes.
	components []component
	// profilers are the components whose CPU profiles runs save.
	profilers []profiler
	// edgeAdmin, when set, is the admin address of an edge whose /status
	// lists the sidecars whose handlers are profiled too: read at the
	// first profiled run, when they all serve.
	edgeAdmin string
}

// profiler is a component whose CPU profile can be fetched during a run.
type profiler struct {
	name  string // in the profile's file name: edge, sidecar-profiles-1, ...
	admin string // host:port serving route
	route string // "": /debug/pprof/profile; a handler's: /debug/handler/profile
}

// handlerProfiler is the profiler of the handler of the sidecar with id,
// through the sidecar's admin address.
func handlerProfiler(id, admin string) profiler {
	return profiler{name: "handler-" + id, admin: admin, route: "/debug/handler/profile"}
}

// roots are the pids whose process trees make up the target.
func (t *target) roots() []int {
	out := make([]int, len(t.procs))
	for i, p := range t.procs {
		out[i] = p.pid()
	}
	return out
}

// stop stops the target's processes, last started first, and returns the
// first error.
func (t *target) stop() error {
	var first error
	for i := len(t.procs) - 1; i >= 0; i-- {
		if err := t.procs[i].stop(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// process is a child process and the goroutine that waits for it.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed once the process exited; err is set then
	err  error
	wg   sync.WaitGroup
}

// startProcess starts argv (pinned with taskset to cpus when cpus is not
// empty) with env added to the bench's environment, output to logPath.
func startProcess(name string, argv, env []string, dir, logPath, cpus string) (*process, error) {
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTargetStart, name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	// Pdeathsig ends the child if the bench dies without stopping it; it
	// changes neither its session nor its process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrTargetStart, name, err)
	}
	p := &process{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	p.wg.Go(func() {
		p.err = cmd.Wait()
		close(p.done)
	})
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, waits up to stopGrace, then kills. It returns nil
// once the process has exited, whatever its status.
func (p *process) stop() error {
	defer p.log.Close()
	defer p.wg.Wait()
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("bench: kill %s: %w", p.name, err)
	}
	<-p.done
	return fmt.Errorf("bench: %s did not stop within %s of SIGTERM; killed", p.name, stopGrace)
}

// freeAddr returns an address for a target process's listener
// (loopback.FreeAddr).
func freeAddr() (string, error) {
	addr, err := loopback.FreeAddr()
	if err != nil {
		return "", fmt.Errorf("%w: free port: %w", ErrTargetStart, err)
	}
	return addr, nil
}

// waitReady polls url until it answers 200, a process of t exits, ctx is
// done, or readyTimeout passes.
func waitReady(ctx context.Context, t *target, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrTargetStart, t.name, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		for _, p := range t.procs {
			select {
			case <-p.done:
				return fmt.Errorf("%w: %s: %s exited (%v); see %s", ErrTargetStart, t.name, p.name, p.err, p.log.Name())
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: %s not ready (last: %s): %w", ErrTargetStart, t.name, url, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// starter starts targets for one bench session. Everything it creates
// lives under dir.
type starter struct {
	cfg      Config
	dir      string
	handlers map[string]string // service → handler binary
	nginx    string            // nginx binary; "" when there is none
}

// buildHandlers finds or builds the hello and profiles handler binaries.
func (s *starter) buildHandlers(ctx context.Context) error {
	s.handlers = map[string]string{}
	svcs := []string{"hello", "profiles"}
	if writes(s.cfg.Scenario) {
		svcs = append(svcs, "messages")
	}
	for _, svc := range svcs {
		if s.cfg.Handlers != "" {
			bin := filepath.Join(s.cfg.Handlers, svc)
			if _, err := os.Stat(bin); err != nil {
				return fmt.Errorf("%w: --handlers: %w", ErrTargetStart, err)
			}
			s.handlers[svc] = bin
			continue
		}
		bin := filepath.Join(s.dir, "bin", svc)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./services/"+svc)
		cmd.Dir = s.cfg.Source
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: go build ./services/%s: %w\n%s", ErrTargetStart, svc, err, out)
		}
		s.handlers[svc] = bin
	}
	return nil
}

// start starts the named target and waits until it answers.
func (s *starter) start(ctx context.Context, name string) (*target, error) {
	var (
		t   *target
		err error
	)
	switch name {
	case TargetDirect:
		t, err = s.direct(ctx, name)
	case TargetNginx:
		t, err = s.nginxProxy(ctx)
	case TargetMesh:
		t, err = s.mesh(ctx)
	case TargetDeployed:
		t, err = s.deployed(ctx)
	default:
		err = fmt.Errorf("%w: %q", ErrConfig, name)
	}
	if err != nil {
		return nil, err
	}
	for _, p := range probePaths(s.cfg.Scenario) {
		if err := waitReady(ctx, t, t.base+p); err != nil {
			_ = t.stop()
			return nil, err
		}
	}
	return t, nil
}

// direct starts the scenario's handler under plain net/http: the handler
// binary alone (plugins.EnvStandalone), or for the profile scenario with
// the store built in, griddle bench serve-direct. label names its files.
func (s *starter) direct(_ context.Context, label string) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	t := &target{name: label, base: "http://" + addr}
	svc := service(s.cfg.Scenario)
	argv := []string{s.handlers[svc]}
	env := []string{plugins.EnvStandalone + "=" + addr}
	var admin string
	if needsProfiles(s.cfg.Scenario) {
		argv = []string{s.cfg.Griddle, "bench", "serve-direct", "--listen", addr,
			"--store-dir", filepath.Join(s.dir, label+"-store"), "--profiles", strconv.Itoa(s.cfg.Profiles)}
		if s.profiling() {
			if admin, err = freeAddr(); err != nil {
				return nil, err
			}
			argv = append(argv, "--admin", admin)
		}
		env = nil
		t.note = "direct server: griddle bench serve-direct, one uncached read of the embedded store (Badger) per request"
		if writes(s.cfg.Scenario) {
			t.note = "direct server: griddle bench serve-direct, the messages service's work in-process: " +
				"a read of the recipient's profile, then the message and its event in one transaction of the embedded store (Badger, synced)"
		}
	}
	p, err := startProcess(label, argv, env, s.dir, filepath.Join(s.dir, label+".log"), s.cfg.TargetCPUs)
	if err != nil {
		return nil, err
	}
	t.procs = append(t.procs, p)
	t.components = []component{{name: "server", pids: []int{p.pid()}, scope: scopeTree}}
	if admin != "" {
		t.profilers = []profiler{{name: "server", admin: admin}}
	}
	return t, nil
}

// nginxProxy starts a direct server of its own and nginx in front of it.
func (s *starter) nginxProxy(ctx context.Context) (*target, error) {
	backend, err := s.direct(ctx, "nginx-backend")
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, backend, backend.base+probePath(s.cfg.Scenario)); err != nil {
		_ = backend.stop()
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		_ = backend.stop()
		return nil, err
	}
	dir := filepath.Join(s.dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		_ = backend.stop()
		return nil, fmt.Errorf("%w: nginx: %w", ErrTargetStart, err)
	}
	conf := nginxConf(nginxParams{
		Dir: dir, Listen: addr, Upstream: backend.base[len("http://"):],
		Workers: s.cfg.NginxWorkers, Root: os.Geteuid() == 0,
	})
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		_ = backend.stop()
		return nil, fmt.Errorf("%w: nginx: %w", ErrTargetStart, err)
	}
	p, err := startProcess("nginx", []string{s.nginx, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log")},
		nil, dir, filepath.Join(s.dir, "nginx.log"), s.cfg.TargetCPUs)
	if err != nil {
		_ = backend.stop()
		return nil, err
	}
	backend.name = TargetNginx
	backend.base = "http://" + addr
	backend.procs = append(backend.procs, p)
	backend.components = []component{
		{name: "nginx", pids: []int{p.pid()}, scope: scopeTree},
		{name: "backend", pids: []int{backend.procs[0].pid()}, scope: scopeTree},
	}
	for i := range backend.profilers {
		backend.profilers[i].name = "backend"
	}
	if backend.note != "" {
		backend.note = "nginx's backend: " + backend.note[len("direct server: "):]
	}
	return backend, nil
}

// mesh starts griddle up in a directory of its own holding the handler
// binaries, so that it runs exactly those (it builds only from a module
// checkout, and its directory is none).
func (s *starter) mesh(_ context.Context) (*target, error) {
	dir := filepath.Join(s.dir, "mesh")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return nil, fmt.Errorf("%w: mesh: %w", ErrTargetStart, err)
	}
	for svc, bin := range s.handlers {
		if err := copyFile(bin, filepath.Join(dir, "bin", svc)); err != nil {
			return nil, fmt.Errorf("%w: mesh: %w", ErrTargetStart, err)
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin := "-"
	if s.profiling() {
		if admin, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	argv := []string{s.cfg.Griddle, "up", "--dir", dir, "--listen", addr, "--admin", admin, "--control", "-",
		"--etcd-listen", "127.0.0.1:0", "--log-level", "warn"}
	svcs := slices.Sorted(maps.Keys(s.handlers))
	argv = append(argv, "--services", strings.Join(svcs, ","))
	if s.cfg.MeshInstances > 1 {
		argv = append(argv, "--instances", strconv.Itoa(s.cfg.MeshInstances))
	}
	argv = append(argv, "--adaptive-procs="+strconv.FormatBool(s.cfg.AdaptiveProcs), "--colocate="+strconv.FormatBool(s.cfg.Colocate),
		"--handler-plain-socket="+strconv.FormatBool(s.cfg.HandlerPlainSocket))
	if s.cfg.HandlerProcs > 0 {
		argv = append(argv, "--handler-procs", strconv.Itoa(s.cfg.HandlerProcs))
	}
	p, err := startProcess("mesh", argv, nil, dir, filepath.Join(s.dir, "mesh.log"), s.cfg.TargetCPUs)
	if err != nil {
		return nil, err
	}
	t := &target{name: TargetMesh, base: "http://" + addr, procs: []*process{p},
		note: "mesh: CPU by component: up is the griddle up process (edge, sidecars, store, etcd and control in one), " +
			"handlers its children (a handler process per service instance)",
		components: []component{
			{name: "up", pids: []int{p.pid()}, scope: scopeSelf},
			{name: "handlers", pids: []int{p.pid()}, scope: scopeBelow},
		}}
	if admin != "-" {
		// pprof serves the whole process: edge, sidecars and store together.
		t.profilers = []profiler{{name: "up", admin: admin}}
		t.edgeAdmin = admin
	}
	return t, nil
}

// profiling reports whether runs save CPU profiles.
func (s *starter) profiling() bool { return s.cfg.CPUProfileDir != "" }

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
