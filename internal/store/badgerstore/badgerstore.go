// Package badgerstore is the embedded store backend: one Badger database on
// one machine, divided into key spaces, with Badger's optimistic
// transactions made serializable (see Backend).
package badgerstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/griddle-mesh/griddle/internal/store"
)

// ErrConfig is wrapped by every error of Config.Validate.
var ErrConfig = errors.New("badgerstore: invalid config")

// Defaults sized for a small machine.
const (
	DefaultMemTableSize     = 16 << 20
	DefaultValueLogFileSize = 64 << 20
	DefaultGCInterval       = 5 * time.Minute

	// valueThreshold: on disk, values from this size on live in the value
	// log, so that a transaction of large values stays small in Badger's
	// write batch. In memory there is no value log: every value is inline.
	valueThreshold         = 1 << 10
	inMemoryValueThreshold = 128 << 10 // >= store.MaxValueBytes
)

// Config describes a Badger database. The zero value is not usable: set Dir
// or InMemory.
type Config struct {
	// Dir holds the database. The Backend owns it while open: one process
	// per directory (Badger locks it).
	Dir string
	// InMemory keeps everything in memory and nothing on disk; Dir must be
	// empty. For tests and throw-away meshes.
	InMemory bool
	// Logger receives Badger's warnings and errors; nil drops them.
	Logger *slog.Logger
	// MemTableSize is the size of each of Badger's two memtables; 0 means
	// DefaultMemTableSize. It also bounds the largest transaction: Badger
	// refuses a transaction whose buffered writes exceed 15% of it (values
	// of 1 KiB and more count a few bytes each on disk, in full in memory),
	// and that is reported as store.ErrTransactionLarge before
	// store.MaxTransactionBytes is reached. 72 MiB admits every
	// transaction FoundationDB admits.
	MemTableSize int64
	// ValueLogFileSize is the size of one value log file; 0 means
	// DefaultValueLogFileSize. Unused InMemory.
	ValueLogFileSize int64
	// NoSync trades durability for speed. By default a commit that writes
	// returns only once its writes are synced to disk (fsync), as a
	// FoundationDB commit returns only once its logs have made it
	// durable: what Transact acknowledged survives a crash of the process
	// and a power loss. With NoSync, commits return once Badger has
	// written them to its files, before they are synced: they survive a
	// crash of the process (kill -9), since the operating system holds the
	// written pages, but a power loss or a kernel crash may lose the last
	// ones. Unused InMemory.
	NoSync bool
	// GCInterval is how often the value log is garbage-collected; 0 means
	// DefaultGCInterval, negative never. Unused InMemory.
	GCInterval time.Duration
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	switch {
	case c.InMemory && c.Dir != "":
		return fmt.Errorf("%w: Dir must be empty with InMemory", ErrConfig)
	case !c.InMemory && c.Dir == "":
		return fmt.Errorf("%w: Dir is required (or set InMemory)", ErrConfig)
	case c.MemTableSize < 0:
		return fmt.Errorf("%w: MemTableSize %d is negative", ErrConfig, c.MemTableSize)
	case c.MemTableSize > 0 && c.MemTableSize < 8<<20:
		return fmt.Errorf("%w: MemTableSize %d is below 8 MiB", ErrConfig, c.MemTableSize)
	case c.ValueLogFileSize != 0 && (c.ValueLogFileSize < 1<<20 || c.ValueLogFileSize >= 1<<30):
		return fmt.Errorf("%w: ValueLogFileSize %d: want 1 MiB to 1 GiB", ErrConfig, c.ValueLogFileSize)
	}
	return nil
}

// Backend is a Badger database holding the key spaces of several services.
//
// Key space name's keys are stored under the prefix 's', len(name), name:
// no space's prefix is a prefix of another's, so a key of one space never
// falls in another's range.
//
// Badger detects conflicts on the keys a transaction read. The Backend adds
// what FoundationDB also checks: ranges read (and ranges cleared) conflict
// with keys that other transactions wrote into them since the transaction
// began, so that a transaction which found nothing in a range cannot commit
// after another added to it (no phantoms). For that, commits that write are
// serialized by the Backend.
//
// A Backend owns one goroutine, the value log garbage collector, stopped by
// Close.
type Backend struct {
	db  *badger.DB
	log *slog.Logger

	mu     sync.Mutex
	idle   *sync.Cond // signalled when active drops to 0
	closed bool
	active int // transaction attempts running

	commits commitLog
	sync    *groupSync // nil: commits are not synced (NoSync, InMemory)

	stopGC chan struct{}
	gcDone chan struct{}
}

var _ store.Backend = (*Backend)(nil)

// Open validates cfg and opens the database. It blocks while Badger replays
// its logs; ctx is checked before that starts. The caller must Close the
// Backend.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mem := cfg.MemTableSize
	if mem == 0 {
		mem = DefaultMemTableSize
	}
	vlog := cfg.ValueLogFileSize
	if vlog == 0 {
		vlog = DefaultValueLogFileSize
	}
	opts := badger.DefaultOptions(cfg.Dir).
		WithInMemory(cfg.InMemory).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(mem).
		WithNumMemtables(2).
		// Badger's own level-0 bounds: with 2 and 8, level 0 filled
		// faster than the compactors emptied it under a steady 2,000
		// commits/s on a small machine, stalling writes for tens of
		// milliseconds at a time.
		WithNumLevelZeroTables(5).
		WithNumLevelZeroTablesStall(15).
		WithNumCompactors(2).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(vlog).
		WithValueThreshold(valueThreshold).
		WithDetectConflicts(true).
		WithSyncWrites(false) // synced by groupSync instead
	if cfg.InMemory {
		opts = opts.WithValueThreshold(inMemoryValueThreshold)
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("badgerstore: open %q: %w", cfg.Dir, err)
	}
	b := &Backend{
		db:     db,
		log:    log,
		stopGC: make(chan struct{}),
		gcDone: make(chan struct{}),
	}
	b.idle = sync.NewCond(&b.mu)
	if !cfg.NoSync && !cfg.InMemory {
		b.sync = newGroupSync(db.Sync, maxGather)
	}
	if err := b.loadStamp(); err != nil {
		_ = db.Close()
		return nil, err
	}
	interval := cfg.GCInterval
	if interval == 0 {
		interval = DefaultGCInterval
	}
	if cfg.InMemory || interval < 0 {
		close(b.gcDone)
	} else {
		go b.runGC(interval)
	}
	return b, nil
}

// Close waits for running transaction attempts, stops the garbage
// collector and closes the database. Later calls return nil.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for b.active > 0 {
		b.idle.Wait()
	}
	b.mu.Unlock()
	close(b.stopGC)
	<-b.gcDone
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("badgerstore: close: %w", err)
	}
	return nil
}

// Space returns the Store of key space name.
// InProcess implements store.InProcess: the database is this process's.
func (b *Backend) InProcess() bool { return true }

func (b *Backend) Space(name string) (store.Store, error) {
	if err := store.ValidSpace(name); err != nil {
		return nil, err
	}
	prefix := make([]byte, 0, 2+len(name))
	prefix = append(prefix, 's', byte(len(name)))
	prefix = append(prefix, name...)
	end := bytes.Clone(prefix)
	end[len(end)-1]++ // a name byte, never 0xff
	return &space{b: b, prefix: prefix, end: end}, nil
}

// durable returns once what Badger has written so far is synced to disk.
// An error means the sync failed: the commit it followed is visible, but
// may not survive a power loss (like FoundationDB's commit_unknown_result,
// the caller cannot tell whether it will persist).
func (b *Backend) durable() error {
	if b.sync == nil {
		return nil
	}
	if err := b.sync.wait(); err != nil {
		return fmt.Errorf("badgerstore: sync: %w", err)
	}
	return nil
}

// loadStamp reads the stamp counter that the last commit that stamped
// keys left.
func (b *Backend) loadStamp() error {
	return b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stampKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("badgerstore: reading the stamp counter: %w", err)
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("badgerstore: stamp counter of %d bytes", len(v))
			}
			b.commits.stamp = binary.BigEndian.Uint64(v)
			return nil
		})
	})
}

// enter registers a transaction attempt; leave must follow.
func (b *Backend) enter() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return store.ErrClosed
	}
	b.active++
	return nil
}

func (b *Backend) leave() {
	b.mu.Lock()
	b.active--
	if b.active == 0 {
		b.idle.Broadcast()
	}
	b.mu.Unlock()
}

// runGC collects the value log every interval until Close.
func (b *Backend) runGC(interval time.Duration) {
	defer close(b.gcDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stopGC:
			return
		case <-t.C:
		}
		for {
			err := b.db.RunValueLogGC(0.5)
			if err != nil {
				if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
					b.log.Warn("badgerstore: value log GC", "err", err)
				}
				break
			}
			select {
			case <-b.stopGC:
				return
			default:
			}
		}
	}
}

// mapErr translates Badger's errors into the store's.
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrConflict):
		return fmt.Errorf("%w: %s: %w", store.ErrConflict, op, err)
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("%w: %s: Badger's write batch is full (see Config.MemTableSize): %w", store.ErrTransactionLarge, op, err)
	case errors.Is(err, badger.ErrDBClosed):
		return fmt.Errorf("%w: %s: %w", store.ErrClosed, op, err)
	}
	return fmt.Errorf("badgerstore: %s: %w", op, err)
}

// badgerLogger routes Badger's log to slog, warnings and errors only.
type badgerLogger struct{ l *slog.Logger }

func (g badgerLogger) Errorf(f string, a ...any) {
	g.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func (g badgerLogger) Warningf(f string, a ...any) {
	g.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
