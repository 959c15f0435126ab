package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// serviceVersion is the version every example service runs, as in griddle up.
const serviceVersion = "v1"

// deployed starts the mesh as production runs it, each component a process
// of its own, all on 127.0.0.1 and talking over sockets: etcd (griddle
// bench serve-etcd: the embedded etcd of griddle up, alone), the store
// (griddle store), a sidecar per service instance (griddle sidecar --store
// http://…, its handler a child process of it), and the edge (griddle
// edge). It runs the same services as the mesh target and, for the profile
// scenario, seeds the profiles through the edge with griddle seed, as
// griddle up seeds its own.
func (s *starter) deployed(ctx context.Context) (*target, error) {
	dir := filepath.Join(s.dir, "deployed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: deployed: %w", ErrTargetStart, err)
	}
	t := &target{name: TargetDeployed}
	fail := func(err error) (*target, error) {
		_ = t.stop()
		return nil, err
	}
	start := func(label string, argv ...string) (*process, error) {
		p, err := startProcess(label, argv, nil, dir, filepath.Join(s.dir, label+".log"), s.cfg.TargetCPUs)
		if err != nil {
			return nil, err
		}
		t.procs = append(t.procs, p)
		return p, nil
	}
	// withAdmin appends --admin with a free address when runs are
	// profiled, and records the component as a profiler.
	withAdmin := func(name string, argv []string) ([]string, error) {
		if !s.profiling() {
			return argv, nil
		}
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		t.profilers = append(t.profilers, profiler{name: name, admin: a})
		return append(argv, "--admin", a), nil
	}
	g := s.cfg.Griddle
	quiet := []string{"--log-level", "warn"}
	// the flags of the edge, the sidecars and the store
	common := append(slices.Clip(quiet), "--adaptive-procs="+strconv.FormatBool(s.cfg.AdaptiveProcs))

	etcdAddr, err := freeAddr()
	if err != nil {
		return fail(err)
	}
	argv, err := withAdmin("etcd", append([]string{g, "bench", "serve-etcd", "--dir", filepath.Join(dir, "etcd"), "--listen", etcdAddr}, quiet...))
	if err != nil {
		return fail(err)
	}
	etcd, err := start("deployed-etcd", argv...)
	if err != nil {
		return fail(err)
	}
	if err := waitReady(ctx, t, "http://"+etcdAddr+"/health"); err != nil {
		return fail(err)
	}

	storeAddr, err := freeAddr()
	if err != nil {
		return fail(err)
	}
	storeTokens, tokenFiles, err := writeStoreTokens(dir, slices.Sorted(maps.Keys(s.handlers)))
	if err != nil {
		return fail(err)
	}
	store, err := start("deployed-store", append([]string{g, "store", "--listen", storeAddr, "--dir", filepath.Join(dir, "store"), "--tokens", storeTokens}, common...)...)
	if err != nil {
		return fail(err)
	}
	if err := waitListening(ctx, t, storeAddr); err != nil {
		return fail(err)
	}

	var sidecars []int
	instances := max(s.cfg.MeshInstances, 1)
	for _, svc := range slices.Sorted(maps.Keys(s.handlers)) {
		for n := range instances {
			id := fmt.Sprintf("%s-%d", svc, n+1)
			argv := append([]string{g, "sidecar", "--service", svc, "--version", serviceVersion, "--id", id,
				"--listen", "tcp://127.0.0.1:0", "--plugin", s.handlers[svc], "--http-prefix", "/" + svc + "/",
				"--store", "http://" + storeAddr, "--store-token-file", tokenFiles[svc], "--etcd", etcdAddr, "--handler-procs", strconv.Itoa(s.cfg.HandlerProcs),
				"--handler-plain-socket=" + strconv.FormatBool(s.cfg.HandlerPlainSocket), "--colocate=" + strconv.FormatBool(s.cfg.Colocate)}, common...)
			if argv, err = withAdmin("sidecar-"+id, argv); err != nil {
				return fail(err)
			}
			if s.profiling() { // its handler's, through its admin address
				t.profilers = append(t.profilers, handlerProfiler(id, t.profilers[len(t.profilers)-1].admin))
			}
			p, err := start("deployed-sidecar-"+id, argv...)
			if err != nil {
				return fail(err)
			}
			sidecars = append(sidecars, p.pid())
		}
	}

	addr, err := freeAddr()
	if err != nil {
		return fail(err)
	}
	t.base = "http://" + addr
	if argv, err = withAdmin("edge", append([]string{g, "edge", "--listen", addr, "--etcd", etcdAddr}, common...)); err != nil {
		return fail(err)
	}
	edge, err := start("deployed-edge", argv...)
	if err != nil {
		return fail(err)
	}
	t.components = []component{
		{name: "edge", pids: []int{edge.pid()}, scope: scopeTree},
		{name: "sidecar", pids: sidecars, scope: scopeSelf},
		{name: "handler", pids: sidecars, scope: scopeBelow},
		{name: "store", pids: []int{store.pid()}, scope: scopeTree},
		{name: "etcd", pids: []int{etcd.pid()}, scope: scopeTree},
	}
	t.note = fmt.Sprintf("deployed: griddle edge, griddle sidecar (%d per service, each with its handler process), "+
		"griddle store (the sidecars' --store http://%s) and etcd (griddle bench serve-etcd), each a process of its own; "+
		"CPU by component from each one's processes", instances, storeAddr)

	// A profiled run takes a profile of every component: each serves its
	// admin address first (the sidecars of services the scenario does not
	// call are ready no sooner than the rest).
	for _, p := range t.profilers {
		if err := waitListening(ctx, t, p.admin); err != nil {
			return fail(err)
		}
	}
	if needsProfiles(s.cfg.Scenario) {
		if err := waitReady(ctx, t, t.base+probePath(ScenarioStatic)); err != nil {
			return fail(err)
		}
		if err := s.seed(ctx, t); err != nil {
			return fail(err)
		}
	}
	return t, nil
}

// seed loads profiles 1..Profiles through t's edge with griddle seed,
// retrying until the edge knows the profiles service or readyTimeout passes.
func (s *starter) seed(ctx context.Context, t *target) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	logPath := filepath.Join(s.dir, t.name+"-seed.log")
	log, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("%w: %s: seed: %w", ErrTargetStart, t.name, err)
	}
	defer log.Close()
	for {
		cmd := exec.CommandContext(ctx, s.cfg.Griddle, "seed", "--edge", t.base, "--count", strconv.Itoa(s.cfg.Profiles), "--batch", "500")
		cmd.Stdout, cmd.Stderr = log, log
		err := cmd.Run()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: griddle seed: %w (see %s)", ErrTargetStart, t.name, err, logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitListening waits until addr accepts tcp connections, a process of t
// exits, ctx is done, or readyTimeout passes.
func waitListening(ctx context.Context, t *target, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
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
			return fmt.Errorf("%w: %s: %s not listening: %w", ErrTargetStart, t.name, addr, ctx.Err())
		case <-time.After(probeEvery):
		}
	}
}

// writeStoreTokens writes a random store token for each service into dir:
// the store's --tokens file, and each service's --store-token-file.
func writeStoreTokens(dir string, services []string) (string, map[string]string, error) {
	files := map[string]string{}
	var all []byte
	for _, svc := range services {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", nil, err
		}
		tok := hex.EncodeToString(b)
		files[svc] = filepath.Join(dir, svc+".store-token")
		if err := os.WriteFile(files[svc], []byte(tok+"\n"), 0o600); err != nil {
			return "", nil, fmt.Errorf("%w: deployed: %w", ErrTargetStart, err)
		}
		all = fmt.Appendf(all, "%s %s\n", svc, tok)
	}
	tokens := filepath.Join(dir, "store-tokens")
	if err := os.WriteFile(tokens, all, 0o600); err != nil {
		return "", nil, fmt.Errorf("%w: deployed: %w", ErrTargetStart, err)
	}
	return tokens, files, nil
}
