package eventlog

import "errors"

// Errors of the log; package events re-exports them.
var (
	// ErrInvalid means a name, an Event or a config failed validation; the
	// message names the field.
	ErrInvalid = errors.New("events: invalid")
	// ErrTooLarge means an encoded event would exceed store.MaxValueBytes.
	ErrTooLarge = errors.New("events: event too large")
	// ErrCorrupt means a log entry, head or cursor read from the store could
	// not be decoded.
	ErrCorrupt = errors.New("events: corrupt record")
)
