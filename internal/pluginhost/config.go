package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// Defaults applied to zero Config fields.
const (
	DefaultConns        = 2
	DefaultMinBackoff   = 100 * time.Millisecond
	DefaultMaxBackoff   = 5 * time.Second
	DefaultStartTimeout = 10 * time.Second
)

// ErrConfig is wrapped by every error from Config.Validate.
var ErrConfig = errors.New("pluginhost: invalid config")

// Config describes one handler process and how the sidecar runs it.
type Config struct {
	// Path is the handler binary. Required; it must exist and be executable.
	Path string
	// Args are passed to the handler after its name.
	Args []string
	// Env is added to the handler's environment (KEY=value).
	Env []string
	// PassEnv names variables of the sidecar's environment the handler
	// gets too. Of the rest it gets only what every process needs (see
	// handlerEnv): nothing the sidecar was given for itself, such as its
	// tokens and passwords.
	PassEnv []string
	// Mesh serves the handler's own calls into the mesh (other services,
	// the store, events), which arrive on the same connections as its
	// requests. Nil: they are answered 502.
	Mesh http.Handler
	// Unary answers the handler's unary calls (store reads: see
	// storehttp.Server.Op). Nil: they are cancelled.
	Unary func(ctx context.Context, op []byte) []byte
	// Quick picks the unary calls answered on the connection's reader
	// (see hop.Config.Quick). Nil: none.
	Quick func(op []byte) bool
	// Logger receives the host's events and the handler's log output.
	// Nil: slog.Default().
	Logger *slog.Logger
	// Conns is the number of connections to the handler process, each
	// carrying any number of requests at once. 0: DefaultConns.
	Conns int
	// PlainSocket carries the connections' frames on the unix socket
	// itself. By default each connection offers the handler a
	// shared-memory pipe (internal/shmpipe) and keeps the socket as its
	// lifeline; a handler built before the pipe, or a system without it,
	// gets the plain socket either way.
	PlainSocket bool
	// MinBackoff and MaxBackoff bound the delay before restarting a crashed
	// handler; the delay doubles on each crash and resets once a handler
	// has run for stableAfter. 0: DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// StartTimeout bounds one start: process launch, handshake and Describe.
	// 0: DefaultStartTimeout.
	StartTimeout time.Duration
}

// Validate reports the first problem with c, naming the field. It performs
// no I/O beyond a stat of Path.
func (c Config) Validate() error {
	if c.Path == "" {
		return fmt.Errorf("%w: Path: required", ErrConfig)
	}
	fi, err := os.Stat(c.Path)
	if err != nil {
		return fmt.Errorf("%w: Path: %w", ErrConfig, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: Path: %s is not a regular file", ErrConfig, c.Path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: Path: %s is not executable", ErrConfig, c.Path)
	}
	if c.Conns < 0 {
		return fmt.Errorf("%w: Conns: %d is negative", ErrConfig, c.Conns)
	}
	if c.MinBackoff < 0 {
		return fmt.Errorf("%w: MinBackoff: %v is negative", ErrConfig, c.MinBackoff)
	}
	if c.MaxBackoff < 0 {
		return fmt.Errorf("%w: MaxBackoff: %v is negative", ErrConfig, c.MaxBackoff)
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("%w: MinBackoff: %v exceeds MaxBackoff %v", ErrConfig, c.MinBackoff, c.MaxBackoff)
	}
	if c.StartTimeout < 0 {
		return fmt.Errorf("%w: StartTimeout: %v is negative", ErrConfig, c.StartTimeout)
	}
	return nil
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MinBackoff > c.MaxBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	return c
}
