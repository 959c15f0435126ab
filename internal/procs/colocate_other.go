//go:build !linux

package procs

import (
	"context"
	"log/slog"
)

// ColocateDefaults are Colocate's thresholds (see the Linux build).
var ColocateDefaults = Config{Up: 0.5, Down: 0.45, Burst: 0.7}

// Colocate keeps a process group on one CPU while its load fits within
// it; only Linux has it: elsewhere it returns nil at once.
func Colocate(ctx context.Context, cfg Config, log *slog.Logger) error { return nil }
