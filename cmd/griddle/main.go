// Command griddle runs Griddle's components and the operator's commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/griddle-mesh/griddle/edge"
	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/launch"
	"github.com/griddle-mesh/griddle/internal/logging"
	"github.com/griddle-mesh/griddle/internal/meshtls"
	"github.com/griddle-mesh/griddle/internal/procs"
	"github.com/griddle-mesh/griddle/internal/runtimeenv"
	"github.com/griddle-mesh/griddle/internal/sample"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
	"github.com/griddle-mesh/griddle/internal/trace"
	"github.com/griddle-mesh/griddle/sidecar"
)

func main() {
	if err := runtimeenv.Reexec(); err != nil {
		fmt.Fprintln(os.Stderr, "griddle: running with Go's default scheduler settings:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "griddle:", err)
		stop()
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// globals are the flags every command takes.
type globals struct {
	logLevel      string
	logFormat     string
	otlp          string
	ratio         float64
	adaptiveProcs bool
	colocate      bool
}

// adaptProcs sizes the process's scheduler to its load (internal/procs)
// until the returned stop is called, unless --adaptive-procs=false.
func (g *globals) adaptProcs(ctx context.Context, log *slog.Logger) (stop func()) {
	if !g.adaptiveProcs {
		return func() {}
	}
	return beside(ctx, log, "the scheduler keeps its size", func(ctx context.Context) error { return procs.Run(ctx, procs.Config{}, log) })
}

// colocateGroup holds the process and its handler processes on one CPU
// while their load fits within it (procs.Colocate) until the returned
// stop is called, unless --colocate=false.
func (g *globals) colocateGroup(ctx context.Context, log *slog.Logger) (stop func()) {
	if !g.colocate {
		return func() {}
	}
	return beside(ctx, log, "the process group stays on every CPU", func(ctx context.Context) error { return procs.Colocate(ctx, procs.Config{}, log) })
}

// beside runs fn in a goroutine until the returned stop is called (which
// waits for it), logging why it ended early with an error as giveUp.
func beside(ctx context.Context, log *slog.Logger, giveUp string, fn func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil {
			log.Info("griddle: "+giveUp, "reason", err)
		}
	}()
	return func() { cancel(); <-done }
}

// tracer is the tracer of a component named service (nil without
// --otlp-endpoint); Shutdown flushes it.
func (g *globals) tracer(service, version string) (*trace.Tracer, error) {
	return trace.New(trace.Config{Endpoint: g.otlp, Ratio: g.ratio, Service: service, Version: version})
}

func (g *globals) logger() (*slog.Logger, error) {
	return logging.New(logging.Config{Level: g.logLevel, Format: g.logFormat}, os.Stderr)
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "griddle",
		Short:         "Griddle: a sidecar service mesh over nanomsg, etcd and plain net/http handlers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "text or json")
	root.PersistentFlags().StringVar(&g.otlp, "otlp-endpoint", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "export trace spans over OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318 (env OTEL_EXPORTER_OTLP_ENDPOINT; empty: no tracing)")
	root.PersistentFlags().BoolVar(&g.adaptiveProcs, "adaptive-procs", true, "server commands (up, edge, sidecar, store, control) run on one core while their load fits in half of one, and on every core above it: a third less CPU per request at low and moderate rates for a few tenths of a millisecond more p99 (see the README's Performance); --adaptive-procs=false keeps every core; a GOMAXPROCS in the environment overrides it")
	root.PersistentFlags().BoolVar(&g.colocate, "colocate", true, "up and sidecar hold themselves and their handler processes on one CPU while their load together stays below half of one, and spread over every CPU above it: a third less CPU per request at low and moderate rates, where each crossing between the processes would wake a thread on another CPU (see the README's Performance); --colocate=false leaves placement to the kernel")
	root.PersistentFlags().Float64Var(&g.ratio, "trace-ratio", 1, "share of new traces recorded (requests that come with a traceparent follow its decision)")
	root.AddCommand(upCmd(g), edgeCmd(g), sidecarCmd(g), storeCmd(g), seedCmd(g), benchCmd(g))
	root.AddCommand(controlCmd(g), routesCmd(g), canaryCmd(g), statusCmd(g), caCmd(g))
	root.AddCommand(pinCmd())
	setupCLI(root)
	return root
}

func upCmd(g *globals) *cobra.Command {
	var cfg launch.UpConfig
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole mesh on this machine: embedded etcd, the store, the control plane, the edge, the example services",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer g.adaptProcs(cmd.Context(), log)()
			defer g.colocateGroup(cmd.Context(), log)()
			cfg.Logger = log
			cfg.Out = cmd.OutOrStdout()
			if cfg.Tracer, err = g.tracer("griddle-up", ""); err != nil {
				return err
			}
			defer shutdownTracer(cfg.Tracer, log)
			return launch.Up(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", ".griddle", "directory for etcd's data and the handler binaries")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "the edge's address")
	f.StringVar(&cfg.Admin, "admin", "127.0.0.1:9090", "the edge's status address (- disables)")
	f.StringVar(&cfg.Control, "control", "127.0.0.1:9300", "the control plane's API and status page (- disables)")
	f.StringVar(&cfg.EtcdAddr, "etcd-listen", "127.0.0.1:2379", "embedded etcd's client address")
	f.IntVar(&cfg.Instances, "instances", 1, "sidecars (each with its handler process) per service")
	f.IntVar(&cfg.HandlerProcs, "handler-procs", 0, "GOMAXPROCS of each handler process (0: the cores shared among the handler processes, at least 1 each; a handler allowed more cores than it keeps busy pays for waking idle threads on every request)")
	f.BoolVar(&cfg.HandlerPlainSocket, "handler-plain-socket", false, "carry each sidecar's hop to its handler on the unix socket alone, without the shared-memory pipe (see the README's Performance)")
	f.StringSliceVar(&cfg.Only, "services", nil, "run only these example services (default: all)")
	f.BoolVar(&cfg.Demo, "demo", false, "the quick start's demo: hello in v1, v2 (greets with hi) and v3 (v2 failing half its greetings), hello's first rules, and demo traffic")
	f.IntVar(&cfg.DemoRate, "demo-rate", launch.DefaultDemoRate, "requests per second of demo traffic with --demo (0: none)")
	return cmd
}

func edgeCmd(g *globals) *cobra.Command {
	var (
		cfg     edge.Config
		etcd    etcdFlags
		disp    launch.Dispatch
		mtls    meshtls.Files
		proxies []string
		pinFrom []string
		pinKeys []string
		access  string
	)
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run an edge: the HTTP front door that sends requests into the mesh",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer g.adaptProcs(cmd.Context(), log)()
			cfg.Logger = log
			for i, p := range proxies {
				prefix, err := netip.ParsePrefix(p)
				if err != nil {
					return fmt.Errorf("edge: --trusted-proxy[%d]: %q: want a CIDR such as 10.0.0.0/8", i, p)
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, prefix)
			}
			if cfg.PinNetworks, err = parseCIDRs("edge: --pin-from", pinFrom); err != nil {
				return err
			}
			if cfg.PinKeys, err = readPinKeys("edge: --pin-key-file", pinKeys); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			src, err := meshtls.Open(mtls, meshtls.Options{Want: meshtls.WantEdge, Logger: log})
			if err != nil {
				return err
			}
			defer src.Close()
			if access != "" {
				w, closeLog, err := logging.Open(access)
				if err != nil {
					return fmt.Errorf("edge: --access-log: %w", err)
				}
				defer closeLog()
				if cfg.AccessLog, err = logging.New(logging.Config{Format: g.logFormat}, w); err != nil {
					return err
				}
			}
			tr, err := g.tracer("griddle-edge", "")
			if err != nil {
				return err
			}
			defer shutdownTracer(tr, log)
			m, err := etcd.connect(cmd.Context(), src, disp, log)
			if err != nil {
				return err
			}
			defer m.Close()
			m.Tracer = tr
			return launch.Edge(cmd.Context(), m, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address for end users")
	f.StringVar(&cfg.Admin, "admin", "", "address for /status, /healthz, /metrics and /debug/pprof/ (empty: none); a loopback one unless --admin-public")
	f.BoolVar(&cfg.AdminPublic, "admin-public", false, "allow an --admin address beyond loopback (what it serves needs no credentials; consider --no-pprof)")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "deadline of each request, retries included")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 1<<30, "largest request body, streamed or not; larger ones get 413 (at most 1 MiB of a body is held in memory)")
	f.BoolVar(&cfg.NoPprof, "no-pprof", false, "leave /debug/pprof/ off --admin")
	f.BoolVar(&cfg.NoAdmission, "no-admission", false, "turn off the adaptive concurrency limit that sheds excess load with 503")
	f.BoolVar(&disp.Eject5xx, "eject-5xx", false, "count every 5xx answer of a handler as a failure of its instance (3 in a row eject it); without it only the instance's own failures count: broken connections, timeouts, a dead handler, an instance that cannot reach its store")
	f.StringVar(&access, "access-log", "", "write a line per request (method, path, service, version, experiment, status, duration, ids) to this file, - for stderr, in --log-format (empty: none)")
	f.IntVar(&cfg.Sample.Every, "sample-every", sample.DefaultEvery, "keep one request in this many for dry runs of rules (its method, path, pins and what the rules read; never bodies)")
	f.IntVar(&cfg.Sample.Size, "sample-size", sample.DefaultSize, "how many sampled requests are kept for dry runs")
	f.StringArrayVar(&cfg.Sample.Headers, "sample-header", nil, "record this header in sampled requests whatever the rules read, for dry runs of rules that would (repeatable)")
	f.StringArrayVar(&cfg.Sample.Cookies, "sample-cookie", nil, "record this cookie in sampled requests whatever the rules read, e.g. a new experiment's sticky key (repeatable)")
	f.BoolVar(&cfg.NoSample, "no-sample", false, "keep no sample of requests (routes apply --dry-run then has nothing to replay)")
	f.StringArrayVar(&proxies, "trusted-proxy", nil, "CIDR of proxies in front of the edge whose X-Forwarded-* headers are kept (repeatable; default: none, a client's own are replaced)")
	f.IntVar(&cfg.Admission.MaxLimit, "admission-max", 0, "ceiling of the adaptive concurrency limit (default 64 per CPU, at least 128)")
	f.IntVar(&cfg.Admission.QueueSize, "admission-queue", 256, "requests that may wait for a slot under the concurrency limit")
	f.DurationVar(&cfg.Admission.MaxWait, "admission-wait", 25*time.Millisecond, "longest wait for a slot during a burst; under sustained overload waits are 5ms")
	f.StringArrayVar(&pinFrom, "pin-from", nil, "CIDR of clients (testers) whose plain X-Griddle-Pin is honoured (repeatable; default: none)")
	f.StringArrayVar(&pinKeys, "pin-key-file", nil, "file with the HMAC key of signed pin tokens (griddle pin), honoured from any client (repeatable, for rotation)")
	f.IntVar(&cfg.MaxConns, "max-conns", 10000, "client connections held open at once; past it new ones get 503")
	f.Int64Var(&cfg.MaxBufferedBytes, "max-buffered-bytes", 256<<20, "request body bytes held in memory at once over all requests; past it 503")
	f.StringVar(&cfg.HTTPSListen, "https-listen", "", "address for end users over TLS, HTTP/2 and HTTP/1.1 (needs --https-cert, --https-key)")
	f.StringVar(&cfg.HTTPSCert, "https-cert", "", "PEM certificate (chain) for --https-listen, loaded again when it changes")
	f.StringVar(&cfg.HTTPSKey, "https-key", "", "PEM private key for --https-listen, loaded again when it changes")
	addTLSFlags(cmd, &mtls)
	etcd.add(cmd)
	return cmd
}

func sidecarCmd(g *globals) *cobra.Command {
	var (
		cfg       sidecar.Config
		etcd      etcdFlags
		disp      launch.Dispatch
		storeSpec string
		subs      []string
		retain    []string
		mtls      meshtls.Files
		tokenFile string
	)
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run a sidecar: serve one instance of a service, its handler started as a plugin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer g.adaptProcs(cmd.Context(), log)()
			defer g.colocateGroup(cmd.Context(), log)()
			cfg.Logger = log
			for i, s := range subs {
				sub, err := sidecar.ParseSubscription(s)
				if err != nil {
					return fmt.Errorf("--subscribe[%d]: %w", i, err)
				}
				cfg.Subscriptions = append(cfg.Subscriptions, sub)
			}
			for i, s := range retain {
				topic, r, err := sidecar.ParseRetention(s)
				if err != nil {
					return fmt.Errorf("--retain[%d]: %w", i, err)
				}
				if cfg.Retention == nil {
					cfg.Retention = map[string]events.Retention{}
				}
				cfg.Retention[topic] = r
			}
			src, err := meshtls.Open(mtls, meshtls.Options{Want: meshtls.WantWorkload(cfg.Service, cfg.Version), Logger: log})
			if err != nil {
				return err
			}
			defer src.Close()
			if src != nil {
				cfg.TLS, cfg.ClientTLS, cfg.Peers = src.Server(), src.Client(), src
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if len(cfg.Subscriptions) > 0 && storeSpec == "" {
				return errors.New("--subscribe needs --store: cursors and logs live in the store")
			}
			if len(cfg.Retention) > 0 && storeSpec == "" {
				return errors.New("--retain needs --store: the event log lives in the store")
			}
			creds := launch.StoreCredentials{Token: os.Getenv("GRIDDLE_STORE_TOKEN")}
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--store-token-file: %w", err)
				}
				creds.Token = strings.TrimSpace(string(b))
			}
			if src != nil && strings.HasPrefix(storeSpec, "https://") {
				creds.TLS = src.ClientFor("", storeSpec)
			}
			tr, err := g.tracer(cfg.Service, cfg.Version)
			if err != nil {
				return err
			}
			defer shutdownTracer(tr, log)
			m, err := etcd.connect(cmd.Context(), src, disp, log)
			if err != nil {
				return err
			}
			defer m.Close()
			m.Tracer = tr
			return launch.Sidecar(cmd.Context(), m, cfg, storeSpec, creds)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Service, "service", "", "service name (required)")
	f.StringVar(&cfg.Version, "version", "", "version this instance runs (required)")
	f.StringVar(&cfg.ID, "id", "", "instance id (default: hostname-pid)")
	f.StringVar(&cfg.Listen, "listen", "tcp://127.0.0.1:0", "mangos URL of the sidecar's socket")
	f.StringVar(&cfg.Advertise, "advertise", "", "URL registered in etcd (default: the bound --listen address)")
	f.StringVar(&cfg.Plugin, "plugin", "", "handler binary (required)")
	f.StringArrayVar(&cfg.PluginArgs, "plugin-arg", nil, "argument for the handler (repeatable)")
	f.StringArrayVar(&cfg.HandlerEnv, "handler-env", nil, "name of an environment variable the handler gets too (repeatable); it gets no others but PATH, HOME, TMPDIR, locale and time zone")
	f.StringArrayVar(&cfg.HTTPPrefixes, "http-prefix", nil, "path prefix the edge sends to this service (repeatable)")
	f.IntVar(&cfg.Concurrency, "concurrency", 128, "requests handled at once")
	f.IntVar(&cfg.HandlerProcs, "handler-procs", 0, "GOMAXPROCS of the handler process (0: Go's default; 1 saves idle threads' wake-ups per request, and limits the handler to one core)")
	f.BoolVar(&cfg.HandlerPlainSocket, "handler-plain-socket", false, "carry the hop to the handler on the unix socket alone, without the shared-memory pipe (see the README's Performance)")
	f.DurationVar(&cfg.TTL, "ttl", 5*time.Second, "registration lease; a killed sidecar leaves the endpoint set within it")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Second, "time for in-flight work to finish on stop")
	f.StringVar(&cfg.Admin, "admin", "", "address for /status, /healthz, /readyz, /metrics and /debug/pprof/ (empty: none); a loopback one unless --admin-public")
	f.BoolVar(&cfg.AdminPublic, "admin-public", false, "allow an --admin address beyond loopback, e.g. for the control plane's metric reads and health probes (what it serves needs no credentials; consider --no-pprof)")
	f.BoolVar(&cfg.NoPprof, "no-pprof", false, "leave /debug/pprof/ off --admin")
	f.StringVar(&storeSpec, "store", "", "the service's state: badger:DIR (this process only), http://HOST:PORT (griddle store) or fdb:CLUSTER_FILE")
	f.StringVar(&tokenFile, "store-token-file", "", "file holding this service's token for griddle store --tokens (default: env GRIDDLE_STORE_TOKEN); with https:// and --tls-* the certificate is enough")
	f.StringArrayVar(&subs, "subscribe", nil, "deliver another service's events to the handler: PUBLISHER/TOPIC=/PATH (repeatable)")
	f.StringArrayVar(&retain, "retain", nil, "bound this service's event log: TOPIC=events:N,age:DURATION[,hard] (repeatable; hard trims what subscribers have not received)")
	f.StringVar(&cfg.EventsListen, "events-listen", "", "mangos URL announcing this service's events (default: --listen's host, any port)")
	f.BoolVar(&disp.Eject5xx, "eject-5xx", false, "count every 5xx answer of a handler as a failure of its instance (3 in a row eject it); without it only the instance's own failures count: broken connections, timeouts, a dead handler, an instance that cannot reach its store")
	f.DurationVar(&cfg.ClockOffset, "clock-offset", 0, "for fault tests: add this to the clock the sidecar reads for deadlines")
	_ = f.MarkHidden("clock-offset")
	addTLSFlags(cmd, &mtls)
	etcd.add(cmd)
	return cmd
}

func storeCmd(g *globals) *cobra.Command {
	var (
		cfg        launch.StoreServerConfig
		tokensFile string
		mtls       meshtls.Files
	)
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Serve an embedded store (Badger) to sidecars, each confined to its service's key space",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer g.adaptProcs(cmd.Context(), log)()
			if tokensFile != "" {
				b, err := os.ReadFile(tokensFile)
				if err != nil {
					return fmt.Errorf("store: --tokens: %w", err)
				}
				if cfg.Tokens, err = storehttp.ParseTokens(string(b)); err != nil {
					return usageError(fmt.Errorf("store: --tokens %s: %w", tokensFile, err))
				}
			}
			src, err := meshtls.Open(mtls, meshtls.Options{Logger: log})
			if err != nil {
				return err
			}
			defer src.Close()
			cfg.TLS = src
			return launch.StoreServer(cmd.Context(), cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:7400", "address sidecars reach it at (--store http://ADDRESS, https:// with --tls-*); beyond loopback only with --tls-*")
	f.StringVar(&cfg.Dir, "dir", ".griddle/store", "directory of the database")
	f.IntVar(&cfg.MemTableMB, "memtable-mb", launch.DefaultStoreMemTableMB, fmt.Sprintf("MiB of each of Badger's two memtables (%d to %d): they bound the store's memory (reserved whole, resident as writes fill them, flushed to disk when full) and the largest transaction (15%% of one)", launch.MinStoreMemTableMB, launch.MaxStoreMemTableMB))
	f.StringVar(&tokensFile, "tokens", "", "file of per-service tokens, one \"SERVICE TOKEN\" a line: each opens only its service's key space (sidecars: --store-token-file); required unless --tls-* authenticate the sidecars")
	cmd.Flags().StringVar(&mtls.Cert, "tls-cert", "", "PEM certificate to serve HTTPS with (with --tls-key and --tls-ca); sidecars' client certificates (griddle ca issue) then authenticate them")
	cmd.Flags().StringVar(&mtls.Key, "tls-key", "", "PEM private key of --tls-cert")
	cmd.Flags().StringVar(&mtls.CA, "tls-ca", "", "PEM CA of the sidecars' certificates")
	return cmd
}

func seedCmd(*globals) *cobra.Command {
	var edge string
	var count, batch int
	cmd := &cobra.Command{
		Use:   "seed",
		Short: "Load example profiles through the edge (for demos and benchmarks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return launch.SeedProfiles(cmd.Context(), strings.TrimSuffix(edge, "/"), count, batch, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&edge, "edge", "http://127.0.0.1:8080", "the edge's URL")
	cmd.Flags().IntVar(&count, "count", 100000, "profiles to load (ids 1..count)")
	cmd.Flags().IntVar(&batch, "batch", 500, "profiles per bulk import (1..1000)")
	return cmd
}

// addTLSFlags adds the mutual TLS flags of edges and sidecars.
func addTLSFlags(cmd *cobra.Command, f *meshtls.Files) {
	cmd.Flags().StringVar(&f.Cert, "tls-cert", "", "PEM certificate for mutual TLS on tls+tcp:// sockets (with --tls-key and --tls-ca); its identity (griddle ca issue) must be this process's; rewritten files are used within a second")
	cmd.Flags().StringVar(&f.Key, "tls-key", "", "PEM private key of --tls-cert")
	cmd.Flags().StringVar(&f.CA, "tls-ca", "", "PEM CA that signs every certificate of the mesh")
}

// etcdFlags are the flags of commands that talk to etcd.
type etcdFlags struct {
	endpoints    string
	prefix       string
	tls          meshtls.Files
	user         string
	passwordFile string
}

func (e *etcdFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.endpoints, "etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated (https://HOST:PORT with --etcd-ca)")
	f.StringVar(&e.prefix, "etcd-prefix", "/griddle/", "key prefix for everything Griddle keeps in etcd")
	f.StringVar(&e.tls.CA, "etcd-ca", "", "PEM CA of etcd's server certificate: talk to etcd over TLS")
	f.StringVar(&e.tls.Cert, "etcd-cert", "", "PEM client certificate for etcd's --client-cert-auth (with --etcd-key and --etcd-ca)")
	f.StringVar(&e.tls.Key, "etcd-key", "", "PEM private key of --etcd-cert")
	f.StringVar(&e.user, "etcd-user", "", "etcd user to log in as (its password from --etcd-password-file or env GRIDDLE_ETCD_PASSWORD)")
	f.StringVar(&e.passwordFile, "etcd-password-file", "", "file holding the password of --etcd-user")
}

// connect dials etcd as the flags say; mtls is this process's mesh
// identity toward tls+tcp:// instances (nil: none).
func (e *etcdFlags) connect(ctx context.Context, mtls *meshtls.Source, disp launch.Dispatch, log *slog.Logger) (*launch.Mesh, error) {
	cfg, err := e.config()
	if err != nil {
		return nil, err
	}
	return launch.Connect(ctx, cfg, e.prefix, mtls, disp, log)
}

// config is the etcd connection the flags describe.
func (e *etcdFlags) config() (launch.Etcd, error) {
	cfg := launch.Etcd{Endpoints: e.list(), Username: e.user}
	if e.user != "" {
		cfg.Password = os.Getenv("GRIDDLE_ETCD_PASSWORD")
	}
	if e.passwordFile != "" {
		b, err := os.ReadFile(e.passwordFile)
		if err != nil {
			return cfg, fmt.Errorf("--etcd-password-file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	tlsCfg, err := launch.EtcdTLS(e.tls.Cert, e.tls.Key, e.tls.CA)
	if err != nil {
		return cfg, err
	}
	cfg.TLS = tlsCfg
	return cfg, cfg.Validate()
}

func (e *etcdFlags) list() []string {
	var out []string
	for _, ep := range strings.Split(e.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			out = append(out, ep)
		}
	}
	return out
}

// shutdownTracer exports the spans still pending, for up to 5s.
func shutdownTracer(t *trace.Tracer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("exporting the last trace spans failed", "err", err)
	}
}
