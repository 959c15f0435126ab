// Package logging builds the one log stream of a Griddle process: log/slog
// in text or JSON, with etcd's zap logs (server and client) bridged into
// it (Zap), so that a process writes one format whoever logs.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// Config says how a process logs.
type Config struct {
	// Level is debug, info, warn or error ("": info).
	Level string
	// Format is text or json ("": text).
	Format string
}

// Validate reports the first invalid field, named as on the command line.
func (c Config) Validate() error {
	if c.Level != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(c.Level)); err != nil {
			return fmt.Errorf("--log-level: %q is not debug, info, warn or error", c.Level)
		}
	}
	switch c.Format {
	case "", "text", "json":
		return nil
	}
	return fmt.Errorf("--log-format: %q is not text or json", c.Format)
}

// New validates cfg and returns a logger writing to w.
func New(cfg Config, w io.Writer) (*slog.Logger, error) {
	h, err := Handler(cfg, w)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// Handler is New's handler.
func Handler(cfg Config, w io.Writer) (slog.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	level := slog.LevelInfo
	if cfg.Level != "" {
		_ = level.UnmarshalText([]byte(cfg.Level))
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.NewJSONHandler(w, opts), nil
	}
	return slog.NewTextHandler(w, opts), nil
}

// Open returns the writer of a log destination: "-" is stderr, anything
// else a file appended to (created 0644). close releases it.
func Open(path string) (w io.Writer, close func() error, err error) {
	if path == "-" {
		return os.Stderr, func() error { return nil }, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return f, f.Close, nil
}
