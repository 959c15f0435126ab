// Package meshtest runs real Griddle processes for end-to-end tests: it
// builds the griddle binary and the example handlers once, starts an
// embedded etcd, and starts edges and sidecars as separate processes that
// tests can stop, kill and restart.
package meshtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/etcdembed"
	"github.com/griddle-mesh/griddle/internal/loopback"
)

// Binaries are the programs a mesh is made of.
type Binaries struct {
	Griddle  string
	Handlers map[string]string // service name → handler binary
}

// Build compiles cmd/griddle and each named service under services/ into
// dir. It is meant for TestMain: build once, share across tests.
func Build(dir string, services ...string) (Binaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{Griddle: filepath.Join(dir, "griddle"), Handlers: map[string]string{}}
	build := func(out, pkg string) error {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, o)
		}
		return nil
	}
	if err := build(b.Griddle, "./cmd/griddle"); err != nil {
		return Binaries{}, err
	}
	for _, s := range services {
		b.Handlers[s] = filepath.Join(dir, s)
		if err := build(b.Handlers[s], "./services/"+s); err != nil {
			return Binaries{}, err
		}
	}
	return b, nil
}

// ModuleRoot is the directory of the griddle module this package is in.
func ModuleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("meshtest: cannot locate the module")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Mesh is an embedded etcd, a `griddle store` process, and the processes a
// test started against them. Everything is stopped by t.Cleanup.
type Mesh struct {
	t     testing.TB
	Bin   Binaries
	Etcd  *etcdembed.Server
	Cli   *clientv3.Client
	Store string // the store's URL, as sidecars' --store
	// StoreProc is the `griddle store` process behind Store.
	StoreProc *Proc
	// StoreDir is that process's database directory (its --dir).
	StoreDir string
	// StoreTokens is the store's --tokens file: a token for each service
	// of Bin.Handlers.
	StoreTokens string
	storeTokens map[string]string // service → its --store-token-file
	dir         string
}

// StoreTokenFile is the --store-token-file of service's sidecars ("" for a
// service Build did not compile).
func (m *Mesh) StoreTokenFile(service string) string { return m.storeTokens[service] }

// Start starts an embedded etcd and a `griddle store` for one test;
// storeArgs are added to the store's flags (--memtable-mb 8).
func Start(t testing.TB, bin Binaries, storeArgs ...string) *Mesh {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, etcdembed.Config{Dir: filepath.Join(dir, "etcd")})
	if err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	cli, err := srv.Client(ctx)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	m := &Mesh{t: t, Bin: bin, Etcd: srv, Cli: cli, dir: dir, storeTokens: map[string]string{}}
	// A token for each service Build compiled: the store serves no request
	// without credentials.
	var tokens strings.Builder
	for _, svc := range slices.Sorted(maps.Keys(bin.Handlers)) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, svc+".store-token")
		if err := os.WriteFile(f, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		m.storeTokens[svc] = f
		fmt.Fprintf(&tokens, "%s %s\n", svc, hex.EncodeToString(b))
	}
	m.StoreTokens = filepath.Join(dir, "store-tokens")
	if err := os.WriteFile(m.StoreTokens, []byte(tokens.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	storeAddr := FreeAddr(t)
	m.StoreDir = filepath.Join(dir, "store")
	st := m.Griddle("store", append([]string{"store", "--listen", storeAddr, "--dir", m.StoreDir, "--tokens", m.StoreTokens}, storeArgs...)...)
	m.waitFor(st, func() bool {
		c, err := net.Dial("tcp", storeAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	m.Store = "http://" + storeAddr
	m.StoreProc = st
	return m
}

// StopEtcd stops the mesh's etcd; its data stays for StartEtcd.
func (m *Mesh) StopEtcd() {
	m.t.Helper()
	if err := m.Etcd.Close(); err != nil {
		m.t.Errorf("stopping etcd: %v", err)
	}
}

// StartEtcd starts the mesh's etcd again, after StopEtcd, on the same
// data and addresses.
func (m *Mesh) StartEtcd() {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := etcdembed.Start(ctx, etcdembed.Config{Dir: filepath.Join(m.dir, "etcd"), ClientAddr: m.Etcd.ClientAddr(), PeerAddr: m.Etcd.PeerAddr()})
	if err != nil {
		m.t.Fatalf("restarting etcd: %v", err)
	}
	m.t.Cleanup(func() { srv.Close() })
	m.Etcd = srv
}

// EtcdEndpoints is the --etcd flag for processes of this mesh.
func (m *Mesh) EtcdEndpoints() string { return strings.Join(m.Etcd.Endpoints(), ",") }

// Proc is a griddle process started by a test.
type Proc struct {
	Name  string
	Admin string // host:port of its /status
	Addr  string // edge: host:port for HTTP; sidecar: its instance id
	cmd   *exec.Cmd
	log   *SyncBuffer
	done  chan struct{}
	err   error
	m     *Mesh
	path  string
	env   []string
	args  []string
}

// Sidecar starts `griddle sidecar` for service (whose handler Build
// compiled) and waits until its instance is registered and, with
// --http-prefix, its exposure claimed.
func (m *Mesh) Sidecar(service, version string, args ...string) *Proc {
	m.t.Helper()
	id := fmt.Sprintf("%s-%s-%d", service, version, time.Now().UnixNano()%1e9)
	admin := FreeAddr(m.t)
	p := m.Griddle("sidecar "+id, append([]string{"sidecar",
		"--service", service, "--version", version, "--id", id,
		"--plugin", m.Bin.Handlers[service], "--etcd", m.EtcdEndpoints(),
		"--admin", admin, "--ttl", "2s", "--log-level", "debug", "--store", m.Store,
		"--store-token-file", m.StoreTokenFile(service),
	}, args...)...)
	p.Admin, p.Addr = admin, id
	exposes := slices.Contains(args, "--http-prefix")
	m.waitFor(p, func() bool {
		resp, err := m.Cli.Get(context.Background(), discovery.InstanceKey(discovery.DefaultPrefix, discovery.Instance{Service: service, Version: version, ID: id}))
		if err != nil || len(resp.Kvs) != 1 {
			return false
		}
		if !exposes {
			return true
		}
		// The exposure is claimed just after the instance registers.
		resp, err = m.Cli.Get(context.Background(), discovery.ExposureKey(discovery.DefaultPrefix, service)+"/"+id)
		return err == nil && len(resp.Kvs) == 1
	})
	return p
}

// Edge starts `griddle edge` and waits until it answers.
func (m *Mesh) Edge(args ...string) *Proc {
	m.t.Helper()
	addr, admin := FreeAddr(m.t), FreeAddr(m.t)
	p := m.Griddle("edge", append([]string{"edge", "--listen", addr, "--admin", admin,
		"--etcd", m.EtcdEndpoints(), "--log-level", "debug"}, args...)...)
	p.Admin, p.Addr = admin, addr
	m.waitFor(p, func() bool {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return p
}

// Direct starts service's handler alone under plain net/http, without a
// sidecar (the SDK's standalone mode): the baseline of benchmarks.
func (m *Mesh) Direct(service string) *Proc {
	m.t.Helper()
	addr := FreeAddr(m.t)
	p := m.startBinary("direct "+service, m.Bin.Handlers[service], []string{"GRIDDLE_STANDALONE=" + addr})
	p.Addr = addr
	m.waitFor(p, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

// Griddle starts the griddle binary with args, as name in logs; the
// caller waits for it to be ready.
func (m *Mesh) Griddle(name string, args ...string) *Proc {
	m.t.Helper()
	return m.startBinary(name, m.Bin.Griddle, nil, args...)
}

func (m *Mesh) startBinary(name, path string, env []string, args ...string) *Proc {
	m.t.Helper()
	p := &Proc{Name: name, log: &SyncBuffer{}, m: m, path: path, env: env, args: args}
	p.start()
	m.t.Cleanup(func() {
		p.Kill()
		if m.t.Failed() {
			m.t.Logf("--- log of %s:\n%s", name, p.log.String())
		}
	})
	return p
}

func (p *Proc) start() {
	p.m.t.Helper()
	p.done = make(chan struct{})
	p.cmd = exec.Command(p.path, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.m.t.Fatalf("starting %s: %v", p.Name, err)
	}
	cmd, done := p.cmd, p.done
	go func() { p.err = cmd.Wait(); close(done) }()
}

// Restart starts p's command again with the same arguments (and so the
// same addresses) once p has exited; it does not wait for readiness.
func (p *Proc) Restart() {
	p.m.t.Helper()
	<-p.done
	p.start()
}

func (m *Mesh) waitFor(p *Proc, ok func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		select {
		case <-p.done:
			m.t.Fatalf("%s exited: %v\n%s", p.Name, p.err, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s did not become ready in 30s\n%s", p.Name, p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for a clean exit.
func (p *Proc) Stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %v", p.Name, timeout)
	}
}

// Log is what the process wrote so far.
func (p *Proc) Log() string { return p.log.String() }

// Status fetches the process's /status document into v.
func (p *Proc) Status(v any) error {
	resp, err := http.Get("http://" + p.Admin + "/status")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// FreeAddr returns a 127.0.0.1 address for a child's listener
// (loopback.FreeAddr: a port free a moment ago, outside the kernel's
// ephemeral range).
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// ProcessAlive reports whether a process with pid exists (and is not a zombie
// reaped by nobody: a zombie counts as gone).
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// SyncBuffer is a bytes.Buffer that a process's output and a test may use
// at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
