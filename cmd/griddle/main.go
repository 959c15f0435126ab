// Command griddle runs Griddle's components and the operator's commands.
package main

import (
	"context"
	"crypto/tls"
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
	"github.com/griddle-mesh/griddle/internal/launch"
	"github.com/griddle-mesh/griddle/internal/meshtls"
	"github.com/griddle-mesh/griddle/sidecar"
)

func main() {
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
	logLevel  string
	logFormat string
}

func (g *globals) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", g.logFormat)
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
	root.AddCommand(upCmd(g), edgeCmd(g), sidecarCmd(g), storeCmd(g), seedCmd(g), benchCmd(g))
	root.AddCommand(controlCmd(g), routesCmd(g), canaryCmd(g), statusCmd(g))
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
			cfg.Logger = log
			cfg.Out = cmd.OutOrStdout()
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
	f.IntVar(&cfg.HandlerProcs, "handler-procs", 0, "GOMAXPROCS of each handler process (0: Go's default; 1 saves idle threads' wake-ups per request, and limits a handler to one core)")
	f.StringSliceVar(&cfg.Only, "services", nil, "run only these example services (default: all)")
	return cmd
}

func edgeCmd(g *globals) *cobra.Command {
	var (
		cfg     edge.Config
		etcd    etcdFlags
		mtls    meshtls.Files
		proxies []string
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
			cfg.Logger = log
			for i, p := range proxies {
				prefix, err := netip.ParsePrefix(p)
				if err != nil {
					return fmt.Errorf("edge: --trusted-proxy[%d]: %q: want a CIDR such as 10.0.0.0/8", i, p)
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, prefix)
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			client, err := mtls.Client()
			if err != nil {
				return err
			}
			m, err := etcd.connect(cmd.Context(), client, log)
			if err != nil {
				return err
			}
			defer m.Close()
			return launch.Edge(cmd.Context(), m, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address for end users")
	f.StringVar(&cfg.Admin, "admin", "", "address for /status and /healthz (empty: none)")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "deadline of each request, retries included")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 1<<30, "largest request body, streamed or not; larger ones get 413 (at most 1 MiB of a body is held in memory)")
	f.BoolVar(&cfg.NoAdmission, "no-admission", false, "turn off the adaptive concurrency limit that sheds excess load with 503")
	f.StringArrayVar(&proxies, "trusted-proxy", nil, "CIDR of proxies in front of the edge whose X-Forwarded-* headers are kept (repeatable; default: none, a client's own are replaced)")
	f.IntVar(&cfg.Admission.MaxLimit, "admission-max", 0, "ceiling of the adaptive concurrency limit (default 16 per CPU, at least 32)")
	f.IntVar(&cfg.Admission.QueueSize, "admission-queue", 256, "requests that may wait for a slot under the concurrency limit")
	f.DurationVar(&cfg.Admission.MaxWait, "admission-wait", 25*time.Millisecond, "longest wait for a slot during a burst; under sustained overload waits are 5ms")
	addTLSFlags(cmd, &mtls)
	etcd.add(cmd)
	return cmd
}

func sidecarCmd(g *globals) *cobra.Command {
	var (
		cfg       sidecar.Config
		etcd      etcdFlags
		storeSpec string
		subs      []string
		mtls      meshtls.Files
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
			cfg.Logger = log
			for i, s := range subs {
				sub, err := sidecar.ParseSubscription(s)
				if err != nil {
					return fmt.Errorf("--subscribe[%d]: %w", i, err)
				}
				cfg.Subscriptions = append(cfg.Subscriptions, sub)
			}
			server, err := mtls.Server()
			if err != nil {
				return err
			}
			client, err := mtls.Client()
			if err != nil {
				return err
			}
			cfg.TLS = server
			if err := cfg.Validate(); err != nil {
				return err
			}
			if len(cfg.Subscriptions) > 0 && storeSpec == "" {
				return errors.New("--subscribe needs --store: cursors and logs live in the store")
			}
			m, err := etcd.connect(cmd.Context(), client, log)
			if err != nil {
				return err
			}
			defer m.Close()
			return launch.Sidecar(cmd.Context(), m, cfg, storeSpec)
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
	f.StringArrayVar(&cfg.HTTPPrefixes, "http-prefix", nil, "path prefix the edge sends to this service (repeatable)")
	f.IntVar(&cfg.Concurrency, "concurrency", 128, "requests handled at once")
	f.IntVar(&cfg.HandlerProcs, "handler-procs", 0, "GOMAXPROCS of the handler process (0: Go's default; 1 saves idle threads' wake-ups per request, and limits the handler to one core)")
	f.DurationVar(&cfg.TTL, "ttl", 5*time.Second, "registration lease; a killed sidecar leaves the endpoint set within it")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Second, "time for in-flight work to finish on stop")
	f.StringVar(&cfg.Admin, "admin", "", "address for /status and /healthz (empty: none)")
	f.StringVar(&storeSpec, "store", "", "the service's state: badger:DIR (this process only), http://HOST:PORT (griddle store) or fdb:CLUSTER_FILE")
	f.StringArrayVar(&subs, "subscribe", nil, "deliver another service's events to the handler: PUBLISHER/TOPIC=/PATH (repeatable)")
	f.StringVar(&cfg.EventsListen, "events-listen", "", "mangos URL announcing this service's events (default: --listen's host, any port)")
	f.DurationVar(&cfg.ClockOffset, "clock-offset", 0, "for fault tests: add this to the clock the sidecar reads for deadlines")
	_ = f.MarkHidden("clock-offset")
	addTLSFlags(cmd, &mtls)
	etcd.add(cmd)
	return cmd
}

func storeCmd(g *globals) *cobra.Command {
	var listen, dir string
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Serve an embedded store (Badger) to the sidecars of this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			return launch.StoreServer(cmd.Context(), listen, dir, log)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7400", "address sidecars reach it at (--store http://ADDRESS)")
	cmd.Flags().StringVar(&dir, "dir", ".griddle/store", "directory of the database")
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
	cmd.Flags().StringVar(&f.Cert, "tls-cert", "", "PEM certificate for mutual TLS on tls+tcp:// sockets (with --tls-key and --tls-ca)")
	cmd.Flags().StringVar(&f.Key, "tls-key", "", "PEM private key of --tls-cert")
	cmd.Flags().StringVar(&f.CA, "tls-ca", "", "PEM CA that signs every certificate of the mesh")
}

// etcdFlags are the flags of commands that talk to etcd.
type etcdFlags struct {
	endpoints string
	prefix    string
}

func (e *etcdFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&e.endpoints, "etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	cmd.Flags().StringVar(&e.prefix, "etcd-prefix", "/griddle/", "key prefix for everything Griddle keeps in etcd")
}

// connect dials etcd as the flags say; tlsCfg is the client side of mutual
// TLS toward tls+tcp:// instances (nil: none).
func (e *etcdFlags) connect(ctx context.Context, tlsCfg *tls.Config, log *slog.Logger) (*launch.Mesh, error) {
	return launch.Connect(ctx, e.list(), e.prefix, tlsCfg, log)
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
