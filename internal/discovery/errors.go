package discovery

import "errors"

// Errors returned by this package; match them with errors.Is.
var (
	// ErrDiscoveryInvalid means an Instance or Exposure failed validation;
	// the message names the field.
	ErrDiscoveryInvalid = errors.New("discovery: invalid")
	// ErrDiscoveryClosed is returned by Registration.Update after Close.
	ErrDiscoveryClosed = errors.New("discovery: registration closed")
	// ErrDiscoveryNotSynced is returned by Catalog.WaitSynced when its
	// context ends before the first successful list.
	ErrDiscoveryNotSynced = errors.New("discovery: catalog not synced")
	// ErrDiscoveryRunning is returned by Catalog.Run while another Run of the
	// same Catalog is in progress.
	ErrDiscoveryRunning = errors.New("discovery: catalog already running")
)
