package floor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrConfig is wrapped by every error of Config.Validate.
var ErrConfig = errors.New("floor: invalid config")

// ErrEcho means a round trip came back with other bytes than were sent:
// the floor's own two ends disagree, which is a bug, not a measurement.
var ErrEcho = errors.New("floor: reply differs from request")

// Config configures one floor's measurement. Zero values select the
// defaults where a field says so.
type Config struct {
	// InFlight is the number of round trips in flight at once: that many
	// workers, each with its own mangos context, connection or reader
	// (1 or more).
	InFlight int
	// Size is the bytes of each request and each reply (0: 128; Badger
	// floors ignore it and read the seeded values).
	Size int
	// Duration is how long Measure counts round trips (more than 0).
	Duration time.Duration
	// Warmup runs round trips before counting starts (0: none).
	Warmup time.Duration
	// Rate, when more than 0, paces the round trips: that many per second
	// in all, each worker starting its next one at a fixed interval and
	// sleeping in between, as requests arrive at a service at that rate.
	// 0 runs closed loop: each worker starts its next round trip as soon as
	// the last one ends. Paced, every round trip wakes sleeping goroutines
	// and threads, which closed loop at full speed mostly avoids; the
	// difference is what a hop costs at low rates beyond its closed-loop
	// floor. At least InFlight when set.
	Rate int
	// Keys is how many keys the Badger floors seed and read at random
	// (0: 1000, the profiles the bench seeds).
	Keys int
	// Dir holds unix sockets and databases ("": a temporary directory,
	// removed by Close).
	Dir string
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.InFlight < 1:
		return fmt.Errorf("%w: InFlight %d: want 1 or more", ErrConfig, c.InFlight)
	case c.Size < 0:
		return fmt.Errorf("%w: Size %d: negative", ErrConfig, c.Size)
	case c.Duration < 0 || c.Warmup < 0:
		return fmt.Errorf("%w: Duration %s, Warmup %s: negative", ErrConfig, c.Duration, c.Warmup)
	case c.Keys < 0:
		return fmt.Errorf("%w: Keys %d: negative", ErrConfig, c.Keys)
	case c.Rate < 0 || (c.Rate > 0 && c.Rate < c.InFlight):
		return fmt.Errorf("%w: Rate %d: want 0 (closed loop) or at least InFlight (%d)", ErrConfig, c.Rate, c.InFlight)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Size == 0 {
		c.Size = 128
	}
	if c.Keys == 0 {
		c.Keys = 1000
	}
	return c
}

// Floor is the cheapest form of one hop of the request path: both of its
// ends, in this process, doing nothing but the hop. A floor's CPU per round
// trip covers both ends, as a component's CPU per request covers all it
// does for one request.
type Floor struct {
	Name string // as in reports and benchmark names: mangos-tcp, unix, ...
	Hop  string // the hop of the request path it is the floor of
	open func(cfg Config, dir string) (*Rig, error)
}

// All returns every floor, in the order of the request path.
func All() []Floor {
	return []Floor{MangosTCP(), MangosTCPStock(), Unix(), UnixMux(), ShmMux(), Badger(), BadgerStore()}
}

// Lookup returns the floor named name.
func Lookup(name string) (Floor, bool) {
	for _, f := range All() {
		if f.Name == name {
			return f, true
		}
	}
	return Floor{}, false
}

// Rig is a floor set up: its two ends connected, ready for round trips.
// Trip may be called concurrently for distinct workers; one worker's calls
// must not overlap. The caller must Close the Rig.
type Rig struct {
	workers int
	trip    func(worker int) error
	closers []func() error // run in reverse order
	wg      sync.WaitGroup // the server ends' goroutines
}

// Trip makes one round trip as worker w (0 ≤ w < Config.InFlight).
func (r *Rig) Trip(w int) error { return r.trip(w) }

// Close stops both ends and waits for their goroutines; after Close every
// Trip fails.
func (r *Rig) Close() error {
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		if err := r.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	r.closers = nil
	r.wg.Wait()
	return errors.Join(errs...)
}

func (r *Rig) onClose(f func() error) { r.closers = append(r.closers, f) }

// Open sets up f as cfg says.
func Open(f Floor, cfg Config) (*Rig, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	dir, rm := cfg.Dir, func() error { return nil }
	if dir == "" {
		d, err := os.MkdirTemp("", "griddle-floor-")
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		dir, rm = d, func() error { return os.RemoveAll(d) }
	}
	r, err := f.open(cfg, dir)
	if err != nil {
		_ = rm()
		return nil, fmt.Errorf("floor: %s: %w", f.Name, err)
	}
	r.workers = cfg.InFlight
	r.closers = append([]func() error{rm}, r.closers...)
	return r, nil
}

// Result is what Measure measured of one floor.
type Result struct {
	Name      string  `json:"name"`
	Hop       string  `json:"hop"`
	InFlight  int     `json:"in_flight"`
	Rate      int     `json:"rate,omitempty"` // paced at this many round trips/s; 0: closed loop
	Size      int     `json:"size_bytes,omitempty"`
	Trips     int64   `json:"round_trips"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"round_trips_per_sec"`
	// NsPerOp is wall time per round trip, all workers together
	// (1/PerSecond), as go test -bench reports a parallel benchmark.
	NsPerOp float64 `json:"ns_per_op"`
	// AllocsPerOp and BytesPerOp count both ends' heap allocations.
	AllocsPerOp float64 `json:"allocs_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	// CPUUSPerOp is this process's CPU time (user and system, both ends)
	// per round trip, in µs.
	CPUUSPerOp float64 `json:"cpu_us_per_op"`
	// IdleUSPerSec, measured for paced floors only, is the CPU the process
	// used per second with both ends open and nothing sent (the runtime's
	// and, for Badger, the database's background work). Paced at Rate, up
	// to IdleUSPerSec/Rate of CPUUSPerOp is that background, not the trips.
	IdleUSPerSec float64 `json:"idle_us_per_sec,omitempty"`
}

// idleMin is the shortest idle measurement of a paced floor.
const idleMin = 200 * time.Millisecond

// Measure opens f, runs cfg.InFlight workers making round trips (back to
// back, or paced at cfg.Rate) for cfg.Warmup and then cfg.Duration, and
// reports the counted part.
// The CPU and allocations are the whole process's: measure nothing else in
// it at the same time. It returns early with ctx's error.
func Measure(ctx context.Context, f Floor, cfg Config) (Result, error) {
	if cfg.Duration <= 0 {
		return Result{}, fmt.Errorf("%w: Duration %s: want more than 0", ErrConfig, cfg.Duration)
	}
	rig, err := Open(f, cfg)
	if err != nil {
		return Result{}, err
	}
	cfg = cfg.withDefaults()
	res := Result{Name: f.Name, Hop: f.Hop, InFlight: cfg.InFlight, Rate: cfg.Rate}
	if f.Name != "badger" && f.Name != "badgerstore" {
		res.Size = cfg.Size
	}

	counts := make([]paddedCount, cfg.InFlight)
	var stop atomic.Bool
	errc := make(chan error, cfg.InFlight)
	var wg sync.WaitGroup
	// period is each worker's interval between round trips when paced;
	// workers are staggered across it.
	var period time.Duration
	if cfg.Rate > 0 {
		period = time.Duration(float64(time.Second) * float64(cfg.InFlight) / float64(cfg.Rate))
	}
	start := time.Now()
	for w := range cfg.InFlight {
		wg.Go(func() {
			next := start.Add(period * time.Duration(w) / time.Duration(cfg.InFlight))
			for !stop.Load() {
				if period > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(period)
				}
				if err := rig.Trip(w); err != nil {
					errc <- err
					return
				}
				counts[w].n.Add(1)
			}
		})
	}
	finish := func() error {
		stop.Store(true)
		wg.Wait()
		return rig.Close()
	}
	// idle measures the process at rest, the workers stopped and the rig
	// still open.
	idle := func() error {
		stop.Store(true)
		wg.Wait()
		var err error
		res.IdleUSPerSec, err = idleCPU(ctx, max(cfg.Duration/4, idleMin))
		return err
	}
	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case <-t.C:
			return nil
		}
	}
	if cfg.Warmup > 0 {
		if err := wait(cfg.Warmup); err != nil {
			return res, errors.Join(err, finish())
		}
	}
	a, err := snapshot(counts)
	if err != nil {
		return res, errors.Join(err, finish())
	}
	if err := wait(cfg.Duration); err != nil {
		return res, errors.Join(err, finish())
	}
	b, err := snapshot(counts)
	if err != nil {
		return res, errors.Join(err, finish())
	}
	if cfg.Rate > 0 {
		if err := idle(); err != nil {
			return res, errors.Join(err, finish())
		}
	}
	if err := finish(); err != nil {
		return res, err
	}
	select {
	case err := <-errc: // a round trip failed at the very end
		return res, err
	default:
	}
	res.Trips = b.trips - a.trips
	res.Seconds = b.wall.Sub(a.wall).Seconds()
	if res.Trips == 0 {
		return res, fmt.Errorf("floor: %s: no round trip completed in %s", f.Name, cfg.Duration)
	}
	n := float64(res.Trips)
	res.PerSecond = n / res.Seconds
	res.NsPerOp = res.Seconds * 1e9 / n
	res.AllocsPerOp = float64(b.mallocs-a.mallocs) / n
	res.BytesPerOp = float64(b.bytes-a.bytes) / n
	res.CPUUSPerOp = float64(b.cpu-a.cpu) / 1e3 / n
	return res, nil
}

// idleCPU is the CPU µs per second this process uses over d.
func idleCPU(ctx context.Context, d time.Duration) (float64, error) {
	a, err := ProcessCPU()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-t.C:
	}
	b, err := ProcessCPU()
	if err != nil {
		return 0, err
	}
	return float64(b-a) / 1e3 / time.Since(t0).Seconds(), nil
}

// paddedCount keeps each worker's counter on a cache line of its own.
type paddedCount struct {
	n atomic.Int64
	_ [56]byte
}

type sample struct {
	wall           time.Time
	trips          int64
	cpu            time.Duration
	mallocs, bytes uint64
}

func snapshot(counts []paddedCount) (sample, error) {
	var s sample
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	cpu, err := ProcessCPU()
	if err != nil {
		return s, err
	}
	s.wall, s.cpu, s.mallocs, s.bytes = time.Now(), cpu, ms.Mallocs, ms.TotalAlloc
	for i := range counts {
		s.trips += counts[i].n.Load()
	}
	return s, nil
}

// ProcessCPU is the CPU time (user and system) this process has used.
func ProcessCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("floor: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
