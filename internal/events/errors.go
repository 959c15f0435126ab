package events

import "errors"

// Errors returned by this package; match them with errors.Is.
var (
	// ErrInvalid means a name, an Event or a config failed validation; the
	// message names the field.
	ErrInvalid = errors.New("events: invalid")
	// ErrTooLarge means an encoded event would exceed store.MaxValueBytes.
	ErrTooLarge = errors.New("events: event too large")
	// ErrCorrupt means a log entry, head or cursor read from the store could
	// not be decoded.
	ErrCorrupt = errors.New("events: corrupt record")
	// ErrClosed is returned by Publisher.Publish after Close.
	ErrClosed = errors.New("events: publisher closed")
	// ErrRunning is returned by Subscriber.Run while another Run of the same
	// Subscriber is in progress.
	ErrRunning = errors.New("events: subscriber already running")
)
