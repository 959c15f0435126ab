//go:build !griddle_badger

package bench

import (
	"context"
	"log/slog"
)

// storeAvailable tells whether ServeDirect can read profiles from the
// embedded store in this build.
const storeAvailable = false

func openProfiles(context.Context, string, int, *slog.Logger) (profileReader, func() error, error) {
	return nil, nil, ErrNoStore
}
