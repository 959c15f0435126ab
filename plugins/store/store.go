// Package store is a handler's state store: serializable transactions over
// the key space of the handler's own service, reached through its sidecar.
//
//	st := store.New(plugins.Mesh(r.Context()).Client())
//	err := st.Transact(r.Context(), func(tx store.Tx) error {
//		v, err := tx.Get([]byte("profile/" + id))
//		if err != nil {
//			return err
//		}
//		...
//		return tx.Set([]byte("profile/"+id), updated)
//	})
//
// Transact runs its function again when the transaction conflicts with
// another, so the function must be safe to run more than once and must not
// keep tx.
//
// The function runs in the handler; each read it makes is one call to the
// sidecar, and its writes are buffered and sent with the commit, where the
// store checks that what it read still holds: storing a record and
// publishing its event (plugins.MeshAPI.PublishTx) is one call, reading a
// key then writing two. Read what you need before you write: a Range after
// a write makes the transaction run again with a call per operation. Limits: keys up to MaxKeyBytes, values up to MaxValueBytes, a
// transaction up to MaxTransactionBytes and MaxTransactionTime; beyond
// them operations fail with the errors below.
//
// The package carries only an HTTP client: a handler binary does not link a
// database.
package store

import (
	"context"
	"net/http"

	istore "github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp"
)

// Host is the host name under which a sidecar serves the store on its
// mesh socket.
const Host = "griddle-store"

// The store's interface; see New.
type (
	// Store runs transactions: Transact(ctx, fn) and ReadTransact(ctx, fn).
	Store = istore.Store
	// Tx is a read-write transaction: Get, Range, Set, Clear, ClearRange.
	Tx = istore.Tx
	// ReadTx is a read-only transaction: Get, Range.
	ReadTx = istore.ReadTx
	// KeyValue is one entry of a Range.
	KeyValue = istore.KeyValue
	// RangeOptions limit and reverse a Range.
	RangeOptions = istore.RangeOptions
)

// Limits, as FoundationDB sets them.
const (
	MaxKeyBytes         = istore.MaxKeyBytes
	MaxValueBytes       = istore.MaxValueBytes
	MaxTransactionBytes = istore.MaxTransactionBytes
	MaxTransactionTime  = istore.MaxTransactionTime
)

// Errors, checked with errors.Is.
var (
	ErrConflict         = istore.ErrConflict // Transact retries it
	ErrKeyTooLarge      = istore.ErrKeyTooLarge
	ErrValueTooLarge    = istore.ErrValueTooLarge
	ErrTransactionLarge = istore.ErrTransactionLarge
	ErrTransactionTime  = istore.ErrTransactionTime
	ErrReadOnly         = istore.ErrReadOnly
	ErrClosed           = istore.ErrClosed
	ErrSpace            = istore.ErrSpace // no store: the sidecar serves none for this service
)

// New returns the Store of the calling service's key space, reached with
// hc (normally plugins.Mesh(ctx).Client(), whose requests go to the
// sidecar's mesh socket). The sidecar decides the key space; a handler
// cannot name another service's.
func New(hc *http.Client) Store {
	// HTTP only: the handler's connection to its sidecar already carries
	// operations as frames of their own (plugins.MeshAPI's store).
	return storehttp.NewClient(hc, "http://"+Host, storehttp.HTTPOnly()).Own()
}

// GetMany reads several keys inside a transaction in one call to the
// sidecar (where one Get after another would make a call each): read
// together what you can.
func GetMany(tx ReadTx, keys ...[]byte) ([][]byte, error) { return istore.GetMany(tx, keys...) }

// Get reads one key in a transaction of its own, in a single round trip to
// the sidecar: the cheapest uncached read. nil and no error when there is
// no such key.
func Get(ctx context.Context, s Store, key []byte) ([]byte, error) { return istore.Get(ctx, s, key) }
