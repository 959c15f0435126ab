package sidecar

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/events"
	"github.com/griddle-mesh/griddle/internal/loopback"
)

// Config configures a Sidecar. Zero durations and sizes select the defaults.
type Config struct {
	Service string // service name (required)
	Version string // version of the service this instance runs (required)
	ID      string // instance id, unique per service ("": hostname-pid)

	// Listen is the mangos URL of the REP socket, e.g. tcp://0.0.0.0:7001
	// (port 0 picks a free port).
	Listen string
	// Advertise is the URL registered in etcd ("": the bound Listen address).
	Advertise string
	// TLS is the server side of mutual TLS for a tls+tcp:// Listen (see
	// package meshtls); required with one, unused otherwise. The events
	// PUB socket then announces on tls+tcp:// too.
	TLS *tls.Config
	// Peers tells who the caller on each tls+tcp:// connection is (the
	// meshtls.Source behind TLS); the authorization policy in the
	// service's rules is checked against it. Nil: no caller has an
	// identity, so a policy refuses every one.
	Peers PeerIdentities
	// ClientTLS is the client side of mutual TLS toward other services'
	// tls+tcp:// event announcers (nil: those are polled only).
	ClientTLS *tls.Config

	Plugin     string   // handler binary (required)
	PluginArgs []string // its arguments
	// HandlerEnv names variables of the sidecar's environment the handler
	// also gets; it gets no others but PATH, HOME, TMPDIR, the locale and
	// the time zone (so none of the sidecar's tokens).
	HandlerEnv []string

	// HTTPPrefixes are the path prefixes the edge sends to this service
	// ("": an internal service, reached only by other services).
	HTTPPrefixes []string

	Concurrency int // requests handled at once (128)
	// HandlerProcs, when above 0, is the GOMAXPROCS of the handler process:
	// 1 saves the wake-ups of idle threads on every request (about a
	// quarter of the mesh's CPU at 1,000/s here) and limits a handler's
	// own computing to one core. 0: the Go runtime's default.
	HandlerProcs int
	// HandlerPlainSocket carries the hop to the handler on its unix
	// socket alone, without the shared-memory pipe it offers by default
	// (see pluginhost.Config.PlainSocket).
	HandlerPlainSocket bool
	MaxBodyBytes       int           // request and reply bodies (8 MiB)
	TTL                time.Duration // registration lease (5s)
	DrainGrace         time.Duration // after deregistering, time for edges to notice (500ms)
	DrainTimeout       time.Duration // for in-flight work to finish (10s)
	OutboundTimeout    time.Duration // default deadline of outbound calls without one (10s)
	// ClockOffset is added to the clock the sidecar reads for deadlines:
	// a test hook that stands for a machine whose clock is off. Deadlines
	// travel as budgets, so it must change nothing.
	ClockOffset time.Duration

	// Subscriptions deliver other services' events to the handler (they
	// need a store).
	Subscriptions []Subscription
	// Retention bounds this service's event log, per topic (--retain);
	// topics not listed keep every event. One instance of the service
	// trims at a time (elected through etcd). Needs a store.
	Retention map[string]events.Retention
	// RetainInterval is how often the log is trimmed
	// (DefaultRetainInterval): a topic may exceed its cap by what is
	// published in one interval.
	RetainInterval time.Duration
	// EventsListen is the mangos URL of the PUB socket announcing the
	// events this service publishes ("": tcp on Listen's host, any port).
	EventsListen string

	Admin string // host:port for /healthz and /status; "" disables
	// AdminPublic allows an Admin address beyond loopback: what it serves
	// needs no credentials.
	AdminPublic bool
	// NoPprof leaves /debug/pprof/ off the admin address.
	NoPprof bool
	Prefix  string // etcd key prefix (discovery.DefaultPrefix)
	Logger  *slog.Logger
}

// Validate reports the first invalid field, named as on the command line.
func (c Config) Validate() error {
	switch {
	case c.Service == "":
		return errors.New("sidecar: --service: required")
	case c.Version == "":
		return errors.New("sidecar: --version: required")
	case c.Plugin == "":
		return errors.New("sidecar: --plugin: required")
	case c.Listen == "":
		return errors.New("sidecar: --listen: required")
	}
	if err := loopback.CheckAdmin("sidecar: --admin", c.Admin, c.AdminPublic, "--admin-public"); err != nil {
		return err
	}
	u, err := url.Parse(c.Listen)
	if err != nil || !listenSchemes[u.Scheme] {
		return fmt.Errorf("sidecar: --listen: %q is not a tcp://, tls+tcp://, ipc:// or inproc:// URL", c.Listen)
	}
	if (u.Scheme == "tls+tcp") != (c.TLS != nil) {
		return fmt.Errorf("sidecar: --listen: a tls+tcp:// address needs --tls-cert, --tls-key and --tls-ca, and they need one")
	}
	if strings.HasPrefix(c.EventsListen, "tls+tcp://") && c.TLS == nil {
		return errors.New("sidecar: --events-listen: a tls+tcp:// address needs --tls-cert, --tls-key and --tls-ca")
	}
	if c.Advertise != "" {
		if u, err := url.Parse(c.Advertise); err != nil || !listenSchemes[u.Scheme] || (u.Scheme != "ipc" && u.Scheme != "inproc" && (u.Port() == "" || u.Port() == "0")) {
			return fmt.Errorf("sidecar: --advertise: %q is not a tcp://, tls+tcp://, ipc:// or inproc:// URL with a port", c.Advertise)
		}
	}
	if st, err := os.Stat(c.Plugin); err != nil {
		return fmt.Errorf("sidecar: --plugin: %w", err)
	} else if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("sidecar: --plugin: %s is not an executable file", c.Plugin)
	}
	for i, p := range c.HTTPPrefixes {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("sidecar: --http-prefix[%d]: %q must start with /", i, p)
		}
	}
	for i, sub := range c.Subscriptions {
		if sub.Path == "" || !strings.HasPrefix(sub.Path, "/") || sub.Publisher == "" || sub.Topic == "" {
			return fmt.Errorf("sidecar: --subscribe[%d]: want PUBLISHER/TOPIC=/PATH", i)
		}
	}
	for topic, r := range c.Retention {
		if !events.ValidTopic(topic) || r.MaxEvents < 0 || r.MaxAge < 0 || (r.MaxEvents == 0 && r.MaxAge == 0) {
			return fmt.Errorf("sidecar: --retain %s: want a valid topic with a positive events or age bound", topic)
		}
	}
	if c.RetainInterval < 0 {
		return fmt.Errorf("sidecar: RetainInterval: %v is negative", c.RetainInterval)
	}
	if c.Concurrency < 0 || c.MaxBodyBytes < 0 || c.HandlerProcs < 0 {
		return errors.New("sidecar: --concurrency, --max-body-bytes, --handler-procs: must not be negative")
	}
	if c.TTL != 0 && c.TTL < 2*time.Second {
		return fmt.Errorf("sidecar: --ttl: %v is below the 2s minimum", c.TTL)
	}
	for name, d := range map[string]time.Duration{"DrainGrace": c.DrainGrace, "--drain-timeout": c.DrainTimeout, "OutboundTimeout": c.OutboundTimeout} {
		if d < 0 {
			return fmt.Errorf("sidecar: %s: %v is negative", name, d)
		}
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", strings.ToLower(host), os.Getpid())
	}
	if c.Concurrency == 0 {
		c.Concurrency = 128
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 8 << 20
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.TTL, 5*time.Second)
	def(&c.DrainGrace, 500*time.Millisecond)
	def(&c.DrainTimeout, 10*time.Second)
	def(&c.OutboundTimeout, 10*time.Second)
	def(&c.RetainInterval, DefaultRetainInterval)
	if c.EventsListen == "" {
		scheme := "tcp://"
		if c.TLS != nil {
			scheme = "tls+tcp://" // every mesh link, announcements too
		}
		c.EventsListen = scheme + "127.0.0.1:0"
		if u, err := url.Parse(c.Listen); err == nil && (u.Scheme == "tcp" || u.Scheme == "tls+tcp") && u.Hostname() != "" {
			c.EventsListen = scheme + net.JoinHostPort(u.Hostname(), "0")
		}
	}
	if c.Prefix == "" {
		c.Prefix = discovery.DefaultPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = c.Logger.With("service", c.Service, "version", c.Version, "instance", c.ID)
}

// listenSchemes are the mangos transports a sidecar's REP socket may use:
// tcp and tls+tcp between machines, ipc on one, inproc for an edge in the
// same process (griddle up).
var listenSchemes = map[string]bool{"tcp": true, "tls+tcp": true, "ipc": true, "inproc": true}
