package events

import (
	"errors"

	"github.com/griddle-mesh/griddle/internal/events/eventlog"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrInvalid means a name, an Event or a config failed validation; the
	// message names the field.
	ErrInvalid = eventlog.ErrInvalid
	// ErrTooLarge means an encoded event would exceed store.MaxValueBytes.
	ErrTooLarge = eventlog.ErrTooLarge
	// ErrCorrupt means a log entry, head or cursor read from the store could
	// not be decoded.
	ErrCorrupt = eventlog.ErrCorrupt
	// ErrClosed is returned by Publisher.Publish after Close.
	ErrClosed = errors.New("events: publisher closed")
	// ErrRunning is returned by Subscriber.Run while another Run of the same
	// Subscriber is in progress.
	ErrRunning = errors.New("events: subscriber already running")
)
