// Package etcdtest starts embedded etcd servers for tests.
package etcdtest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/etcdembed"
)

// startTimeout bounds how long Run and Restart wait for a server.
const startTimeout = 30 * time.Second

// Run starts an etcd server in t.TempDir() on free ports, without fsync, and
// closes it in t.Cleanup. It fails the test if the server does not start.
func Run(t testing.TB) *etcdembed.Server {
	t.Helper()
	return Start(t, etcdembed.Config{Dir: t.TempDir()})
}

// Start is Run with a caller-chosen configuration (for example the Dir and
// addresses of a server that was closed, to restart it). UnsafeNoFsync is
// forced on, and a nil Logger discards etcd's logs.
func Start(t testing.TB, cfg etcdembed.Config) *etcdembed.Server {
	t.Helper()
	cfg.UnsafeNoFsync = true
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	s, err := etcdembed.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
