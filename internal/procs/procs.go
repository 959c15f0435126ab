// Package procs sizes a process's Go scheduler to its load. While the load
// fits in a fraction of one core, the process runs on one P: every
// goroutine hand-off on the request path (a socket's reader waking a
// request's goroutine, a reply waking the reader) then stays on the thread
// that made it, instead of waking a second thread to take it and putting
// that thread back to sleep, which on a mesh's request path costs a
// fifth to a third of its CPU at low rates. As soon as the load grows
// past what one P serves without much queueing, every P comes back.
//
// Linkerd runs its sidecar proxies with one runtime worker by default;
// this makes that choice as the load changes. One P also serializes the
// work that several would overlap (a collection, a burst, a background
// task), which raises the tail latency a little: Griddle's server
// commands take it by default, and --adaptive-procs=false keeps every P.
package procs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"
)

// Config tunes Run. Zero values select the defaults.
type Config struct {
	// Max is the number of Ps under load: runtime.GOMAXPROCS(0) at start.
	Max int
	// Every is how often the process's CPU use is sampled (100 ms).
	Every time.Duration
	// Up is the CPU use, in cores, at or above which a process on one P
	// gets Max Ps back: over the last three samples on average, or in one
	// sample at Burst (0.5: at half a core a single P starts to queue
	// requests behind each other).
	Up float64
	// Burst is the CPU use of one sample at which a process on one P gets
	// its Ps back at once: load that jumped from idle, which the mean of
	// three samples would take 300 ms to see while a queue builds on the
	// one P (0.7: at 0.9, a load that took 0.8 of a core, the P sharing the
	// core with the rest of the machine, waited those 300 ms; back to back
	// at 11,000 reads/s, the mesh's p99 was 7–25 ms against 6–13 ms at 0.7).
	Burst float64
	// Down is the CPU use, in cores, below which a process on Max Ps goes
	// to one, as the average over DownAfter (0.4: with the hand-offs'
	// cost gone, that is about 0.3 of a core on one P, well below Up).
	Down      float64
	DownAfter time.Duration // 3 s
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Max < 0:
		return fmt.Errorf("procs: Max %d is negative", c.Max)
	case c.Every < 0 || c.DownAfter < 0:
		return errors.New("procs: Every and DownAfter must not be negative")
	case c.Up < 0 || c.Down < 0 || c.Burst < 0:
		return errors.New("procs: Up, Down and Burst must not be negative")
	case c.Up != 0 && c.Down != 0 && c.Down > c.Up:
		return fmt.Errorf("procs: Down %v exceeds Up %v", c.Down, c.Up)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Max == 0 {
		c.Max = runtime.GOMAXPROCS(0)
	}
	if c.Every == 0 {
		c.Every = 100 * time.Millisecond
	}
	if c.Up == 0 {
		c.Up = 0.5
	}
	if c.Down == 0 {
		c.Down = 0.4
	}
	if c.Burst == 0 {
		c.Burst = 0.7
	}
	if c.DownAfter == 0 {
		c.DownAfter = 3 * time.Second
	}
}

// ErrOperatorSet is returned by Run when the GOMAXPROCS environment
// variable is set: the operator chose the number of Ps.
var ErrOperatorSet = errors.New("procs: GOMAXPROCS is set in the environment; the number of Ps is left to it")

// Run adapts the number of Ps to the process's CPU use until ctx ends,
// then restores Max and returns nil. It returns at once, with nil, on a
// single-core process (nothing to adapt), with ErrOperatorSet if the
// environment sets GOMAXPROCS, and with an error if the process's CPU time
// cannot be read.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		return ErrOperatorSet
	}
	cfg.setDefaults()
	if cfg.Max <= 1 {
		return nil
	}
	lastCPU, err := cpuTime()
	if err != nil {
		return fmt.Errorf("procs: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := newController(cfg, time.Now())
	defer runtime.GOMAXPROCS(cfg.Max)
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	procs := cfg.Max
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			// The CPU time and the clock read together: a tick received
			// late (the process's one P busy) would otherwise count the
			// CPU time of the delay against the wall time before it.
			cpu, err := cpuTime()
			if err != nil {
				continue
			}
			n, cores := c.observe(time.Now(), cpu-lastCPU)
			if n != procs {
				procs = n
				runtime.GOMAXPROCS(n)
				log.Debug("procs: scheduler resized to the load", "procs", n, "cores", cores)
			}
			lastCPU = cpu
		}
	}
}

// controller is Run's decision, apart from the clock and the runtime.
type controller struct {
	cfg   Config
	procs int       // the Ps now
	last  time.Time // the previous sample
	// On Max Ps: the CPU time used since winStart.
	winStart time.Time
	winUsed  time.Duration
	// On one P: the last samples' CPU use.
	recent [3]float64
	n      int // samples in recent
}

func newController(cfg Config, now time.Time) *controller {
	return &controller{cfg: cfg, procs: cfg.Max, last: now, winStart: now}
}

// observe takes the CPU time used since the previous sample, at now, and
// returns the number of Ps to run on and the sample's CPU use in cores.
func (c *controller) observe(now time.Time, used time.Duration) (procs int, cores float64) {
	wall := now.Sub(c.last)
	c.last = now
	if wall <= 0 {
		return c.procs, 0
	}
	cores = used.Seconds() / wall.Seconds()
	if c.procs == 1 {
		c.recent[c.n%len(c.recent)] = cores
		c.n++
		mean := 0.0
		for _, v := range c.recent {
			mean += v
		}
		mean /= float64(len(c.recent))
		if cores >= c.cfg.Burst || (c.n >= len(c.recent) && mean >= c.cfg.Up) {
			c.procs, c.winStart, c.winUsed = c.cfg.Max, now, 0
		}
		return c.procs, cores
	}
	c.winUsed += used
	if span := now.Sub(c.winStart); span >= c.cfg.DownAfter {
		if c.winUsed.Seconds()/span.Seconds() < c.cfg.Down {
			c.procs, c.n = 1, 0
		}
		c.winStart, c.winUsed = now, 0
	}
	return c.procs, cores
}
