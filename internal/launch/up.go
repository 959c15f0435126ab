package launch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/griddle-mesh/griddle/control"
	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/edge"
	"github.com/griddle-mesh/griddle/internal/etcdembed"
	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/loopback"
	"github.com/griddle-mesh/griddle/internal/store/badgerstore"
	"github.com/griddle-mesh/griddle/internal/trace"
	"github.com/griddle-mesh/griddle/internal/wire"
	"github.com/griddle-mesh/griddle/sidecar"
)

// Service is one service that Up runs: a handler built from a main package
// of this module, behind its sidecars.
type Service struct {
	Name     string
	Version  string
	Package  string   // main package, relative to the module root (./services/hello)
	Prefixes []string // paths the edge sends to it; none for internal services
	// Retention bounds the service's event log per topic (see
	// sidecar.Config.Retention); nil keeps every event.
	Retention map[string]events.Retention
	Args      []string // the handler's arguments
}

// ExampleServices returns the services of services/, as griddle up runs them.
func ExampleServices() []Service {
	return []Service{
		{Name: "hello", Version: "v1", Package: "./services/hello", Prefixes: []string{"/hello/"}},
		{Name: "profiles", Version: "v1", Package: "./services/profiles", Prefixes: []string{"/profiles/"}},
		{Name: "messages", Version: "v1", Package: "./services/messages", Prefixes: []string{"/messages/"},
			// feed is registered on the topic: it gets every event that
			// is trimmed only once it has it.
			Retention: map[string]events.Retention{"message.sent": {MaxEvents: 100_000, MaxAge: 7 * 24 * time.Hour}}},
		{Name: "feed", Version: "v1", Package: "./services/feed", Prefixes: []string{"/feed/"}}, // subscribes to messages' events itself
	}
}

// seedProfiles is how many example profiles Up loads into an empty store.
const seedProfiles = 1000

// UpConfig configures Up. Zero values select the defaults.
type UpConfig struct {
	Dir      string    // state: etcd data, handler binaries (".griddle")
	Listen   string    // the edge ("127.0.0.1:8080")
	Admin    string    // the edge's /status ("127.0.0.1:9090"; "-" disables)
	Control  string    // the control plane's API and page ("127.0.0.1:9300"; "-" disables)
	EtcdAddr string    // embedded etcd's client address ("127.0.0.1:2379")
	Source   string    // module root to build handlers from ("": found from the working directory)
	Services []Service // (ExampleServices())
	// Only, when set, names the example services to run (all of them).
	Only []string
	// Instances is the number of sidecars, each with its handler process,
	// per service (1).
	Instances int
	// HandlerProcs is each handler process's GOMAXPROCS (see
	// sidecar.Config.HandlerProcs). 0: the cores this process may use
	// shared among the handler processes, at least one each: they share
	// the machine with each other and with this process, and a handler
	// allowed more cores than it keeps busy pays for waking idle threads
	// on every request.
	HandlerProcs int
	// HandlerPlainSocket: see sidecar.Config.HandlerPlainSocket.
	HandlerPlainSocket bool
	Out                io.Writer // where Up says what runs where (os.Stdout)
	Logger             *slog.Logger
	// Tracer, when set, traces the edge's and sidecars' requests.
	Tracer *trace.Tracer
	// Demo runs DemoServices (hello in v1, v2 and v3) instead of
	// ExampleServices, gives hello its first rules (v1: 100) and sends
	// DemoRate requests per second of demo traffic (0: none).
	Demo     bool
	DemoRate int
}

// Validate reports the first invalid field, named as on the command line.
func (c UpConfig) Validate() error {
	for flag, addr := range map[string]string{"--listen": c.Listen, "--etcd-listen": c.EtcdAddr} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("up: %s: %w", flag, err)
		}
	}
	// The embedded etcd has no TLS and no users: this machine only.
	if host, _, _ := net.SplitHostPort(c.EtcdAddr); c.EtcdAddr != "" && !loopback.Host(host) {
		return fmt.Errorf("up: --etcd-listen: %s is not a loopback address; the embedded etcd answers this machine only", c.EtcdAddr)
	}
	if host, _, err := net.SplitHostPort(c.Admin); c.Admin != "" && c.Admin != "-" && err == nil && !loopback.Host(host) {
		return fmt.Errorf("up: --admin: %s is not a loopback address; griddle up serves /metrics and /debug/pprof/ to this machine only (griddle edge --admin-public serves them beyond)", c.Admin)
	}
	for flag, addr := range map[string]string{"--admin": c.Admin, "--control": c.Control} {
		if addr != "" && addr != "-" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return fmt.Errorf("up: %s: %w", flag, err)
			}
		}
	}
	for i, s := range c.Services {
		if s.Name == "" || s.Version == "" || s.Package == "" {
			return fmt.Errorf("up: Services[%d]: Name, Version and Package are required", i)
		}
	}
	for _, name := range c.Only {
		if !slices.ContainsFunc(ExampleServices(), func(s Service) bool { return s.Name == name }) {
			return fmt.Errorf("up: --services: no example service %q", name)
		}
	}
	if c.DemoRate < 0 {
		return fmt.Errorf("up: --demo-rate: %d is negative", c.DemoRate)
	}
	if c.Instances < 0 || c.Instances > 64 {
		return fmt.Errorf("up: --instances: %d, want 1 to 64", c.Instances)
	}
	return nil
}

func (c *UpConfig) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Dir, ".griddle")
	def(&c.Listen, "127.0.0.1:8080")
	def(&c.Admin, "127.0.0.1:9090")
	def(&c.Control, "127.0.0.1:9300")
	def(&c.EtcdAddr, "127.0.0.1:2379")
	if c.Admin == "-" {
		c.Admin = ""
	}
	if c.Control == "-" {
		c.Control = ""
	}
	if c.Services == nil {
		c.Services = ExampleServices()
		if c.Demo {
			c.Services = DemoServices()
		}
		if len(c.Only) > 0 {
			c.Services = slices.DeleteFunc(c.Services, func(s Service) bool { return !slices.Contains(c.Only, s.Name) })
		}
	}
	if c.Instances == 0 {
		c.Instances = 1
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Up runs a whole mesh in this process — embedded etcd, the edge, one
// sidecar per service with its handler process — until ctx is done or a
// component fails; then it stops everything, handler processes included.
func Up(ctx context.Context, cfg UpConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.setDefaults()
	log := cfg.Logger

	bins, err := buildHandlers(ctx, cfg)
	if err != nil {
		return err
	}

	etcd, err := etcdembed.Start(ctx, etcdembed.Config{Dir: filepath.Join(cfg.Dir, "etcd"), ClientAddr: cfg.EtcdAddr, LoopbackOnly: true, Logger: log})
	if err != nil {
		return fmt.Errorf("up: embedded etcd: %w", err)
	}
	defer etcd.Close()
	cli, err := etcd.Client(ctx)
	if err != nil {
		return fmt.Errorf("up: embedded etcd: %w", err)
	}
	m, err := newMesh(ctx, cli, "", nil, Dispatch{}, log)
	if err != nil {
		cli.Close()
		return err
	}
	defer m.Close()
	m.Tracer = cfg.Tracer
	st, err := badgerstore.Open(ctx, badgerstore.Config{Dir: filepath.Join(cfg.Dir, "store"), Logger: log})
	if err != nil {
		return fmt.Errorf("up: store: %w", err)
	}
	defer st.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		})
	}

	procs := cfg.HandlerProcs
	if procs == 0 {
		procs = max(1, runtime.GOMAXPROCS(0)/max(1, len(cfg.Services)*cfg.Instances))
	}
	var cars []*sidecar.Sidecar
	for i, svc := range cfg.Services {
		for n := range cfg.Instances {
			s, err := sidecar.New(sidecar.Config{
				Service: svc.Name, Version: svc.Version, ID: instanceName(cfg.Services, svc, n+1), PluginArgs: svc.Args,
				// The edge is in this process: no socket between them.
				Listen: "inproc://griddle-up/" + instanceName(cfg.Services, svc, n+1), Plugin: bins[i], HTTPPrefixes: svc.Prefixes,
				// An admin port of its own (any free one) for the control
				// plane's figures and canaries; registered in etcd.
				Admin:        "127.0.0.1:0",
				HandlerProcs: procs, HandlerPlainSocket: cfg.HandlerPlainSocket,
				Retention: svc.Retention,
				Prefix:    m.Prefix, Logger: log,
			}, sidecar.Deps{Etcd: m.Etcd, Dispatcher: m.Dispatcher, Catalog: m.Catalog, Store: st, Tracer: m.Tracer})
			if err != nil {
				return err
			}
			cars = append(cars, s)
			run("sidecar "+svc.Name, s.Run)
		}
	}
	ecfg := edge.Config{Listen: cfg.Listen, Admin: cfg.Admin, Logger: log}
	if cfg.Demo { // what the walkthrough's rules will read, so that their dry run has it
		ecfg.Sample.Headers, ecfg.Sample.Cookies = []string{"x-beta"}, []string{"uid"}
	}
	e, err := edge.New(ecfg,
		edge.Deps{Routes: m.Catalog, Dispatcher: m.Dispatcher, Etcd: m.Etcd, Prefix: m.Prefix, Tracer: m.Tracer})
	if err != nil {
		return err
	}
	run("edge", e.Run)
	var token string
	if cfg.Control != "" {
		if token, err = controlToken(cfg.Dir); err != nil {
			return err
		}
		ctl, err := control.New(control.Config{Etcd: m.Etcd, Prefix: m.Prefix, Token: token, Logger: log})
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.Control)
		if err != nil {
			return fmt.Errorf("up: --control: %w", err)
		}
		run("control", func(ctx context.Context) error { return ctl.Run(ctx, ln) })
	}

	ready := []<-chan struct{}{e.Ready()}
	for _, c := range cars {
		ready = append(ready, c.Ready())
	}
	for _, r := range ready {
		select {
		case <-r:
		case <-ctx.Done():
			wg.Wait()
			return upErr(ctx)
		}
	}
	if slices.ContainsFunc(cfg.Services, func(s Service) bool { return s.Name == "profiles" }) {
		if err := seedIfEmpty(ctx, "http://"+e.Addr(), cfg.Out); err != nil {
			log.Warn("seeding example profiles failed", "err", err)
		}
	}
	if cfg.Demo {
		if err := applyDemoRules(ctx, rulestore.New(m.Etcd, m.Prefix, nil)); err != nil {
			return fmt.Errorf("up: --demo: hello's first rules: %w", err)
		}
		wg.Go(func() { demoTraffic(ctx, "http://"+e.Addr(), cfg.DemoRate) })
	}
	fmt.Fprintf(cfg.Out, "griddle up: the mesh is running\n")
	fmt.Fprintf(cfg.Out, "  %-14s %-28s data %s\n", "etcd", strings.Join(etcd.Endpoints(), ","), filepath.Join(cfg.Dir, "etcd"))
	fmt.Fprintf(cfg.Out, "  %-14s %-28s", "edge", "http://"+e.Addr())
	if cfg.Admin != "" {
		fmt.Fprintf(cfg.Out, " status http://%s/status", cfg.Admin)
	}
	fmt.Fprintln(cfg.Out)
	if cfg.Control != "" {
		fmt.Fprintf(cfg.Out, "  %-14s %-28s token in %s (export GRIDDLE_TOKEN=$(cat %s))\n", "control", "http://"+cfg.Control,
			filepath.Join(cfg.Dir, "token"), filepath.Join(cfg.Dir, "token"))
	}
	fmt.Fprintf(cfg.Out, "  %-14s %-28s\n", "store", "badger "+filepath.Join(cfg.Dir, "store"))
	for i, svc := range cfg.Services {
		addrs := make([]string, 0, cfg.Instances)
		for _, c := range cars[i*cfg.Instances : (i+1)*cfg.Instances] {
			addrs = append(addrs, c.Address())
		}
		fmt.Fprintf(cfg.Out, "  %-14s %-28s handler %s, routes %s\n", svc.Name+" "+svc.Version, strings.Join(addrs, " "), bins[i], strings.Join(svc.Prefixes, " "))
	}
	if cfg.Demo {
		fmt.Fprintf(cfg.Out, "Demo: hello v1; v2 greets with hi; v3 is v2 failing half its greetings. v1 serves all until you route (rules in docs/demo/).\n"+
			"  %d requests/s of demo traffic from 200 users (uid cookie), one in ten with x-beta: 1. The page: http://%s/services/hello\n", cfg.DemoRate, cfg.Control)
	}
	fmt.Fprintf(cfg.Out, "Try: curl 'http://%s/hello/greet?name=world'\n     curl http://%s/profiles/42\nCtrl-C stops everything.\n", e.Addr(), e.Addr())

	<-ctx.Done()
	wg.Wait()
	return upErr(ctx)
}

// seedIfEmpty loads example profiles through the edge when there are none
// (profile 1 is missing), so that a fresh mesh has data to show.
func seedIfEmpty(ctx context.Context, base string, out io.Writer) error {
	// Until the edge has learnt the route and the instance, it answers
	// with errors of its own (they carry an error id).
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/profiles/1", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch {
		case resp.Header.Get(wire.HeaderErrorID) != "" && time.Since(start) < 10*time.Second:
			continue
		case resp.StatusCode == http.StatusNotFound:
			return SeedProfiles(ctx, base, seedProfiles, 500, out)
		}
		return nil
	}
}

// controlToken is the control plane's bearer token for write calls:
// GRIDDLE_TOKEN when set, else the one in <dir>/token, made on first use.
func controlToken(dir string) (string, error) {
	if t := os.Getenv("GRIDDLE_TOKEN"); t != "" {
		return t, nil
	}
	path := filepath.Join(dir, "token")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("up: token: %w", err)
	}
	t := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("up: token: %w", err)
	}
	return t, nil
}

// upErr is nil when Up was asked to stop, else what made it stop.
func upErr(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("up: %w", err)
	}
	return nil
}

// buildHandlers returns the handler binary of each service, building it
// into <Dir>/bin with the go command when the module's source is at hand.
// Without a Go toolchain it uses binaries already there.
func buildHandlers(ctx context.Context, cfg UpConfig) ([]string, error) {
	binDir, err := filepath.Abs(filepath.Join(cfg.Dir, "bin"))
	if err != nil {
		return nil, fmt.Errorf("up: --dir: %w", err)
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, fmt.Errorf("up: --dir: %w", err)
	}
	src := cfg.Source
	if src == "" {
		src = findModuleRoot()
	}
	goTool, lookErr := exec.LookPath("go")
	bins := make([]string, len(cfg.Services))
	for i, svc := range cfg.Services {
		bin := filepath.Join(binDir, svc.Name)
		bins[i] = bin
		if slices.ContainsFunc(cfg.Services[:i], func(s Service) bool { return s.Package == svc.Package }) {
			continue // another version of a service built already
		}
		if src == "" || lookErr != nil {
			if _, err := os.Stat(bin); err != nil {
				return nil, fmt.Errorf("up: no handler binary for %s at %s, and no Go toolchain and module source to build it (run from the griddle checkout)", svc.Name, bin)
			}
			continue
		}
		start := time.Now()
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, svc.Package)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("up: building %s: %w\n%s", svc.Package, err, out)
		}
		cfg.Logger.Debug("built handler", "service", svc.Name, "bin", bin, "took", time.Since(start))
	}
	return bins, nil
}

// findModuleRoot walks up from the working directory to the go.mod of
// this module; "" if there is none.
func findModuleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/griddle-mesh/griddle\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
