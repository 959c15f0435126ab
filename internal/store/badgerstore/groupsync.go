package badgerstore

import (
	"sync"
	"time"
)

// maxGather bounds how long a sync about to start waits for more
// committers (see groupSync).
const maxGather = time.Millisecond

// groupSync syncs for many committers at once: wait returns once a sync
// that started after wait was called has ended, and one sync serves every
// committer waiting when it starts (group commit). The committer that
// finds no sync running runs it; the others wait for it, or for the next.
//
// A sync costs about the same however little it writes: 65 to 75 µs of
// CPU on a small virtual machine, most of it the kernel's, which with a
// sync per commit was a quarter of a whole write's CPU at 1,500 commits/s.
// So while commits come closer together than gather, a sync about to
// start first waits for about one gap between them (Go's timers round a
// wait under a millisecond up to one when the process is otherwise idle),
// and the commits that arrive meanwhile are served by it too; commits
// further apart never wait. FoundationDB's commit proxies batch commits
// the same way, over an interval that adapts to the load.
type groupSync struct {
	sync   func() error
	gather time.Duration

	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	started uint64 // syncs started
	ended   uint64 // syncs ended: the first ended ones, in order
	err     error  // of the last sync ended
	last    time.Time
	gap     time.Duration // moving average of the time between waits
}

func newGroupSync(fn func() error, gather time.Duration) *groupSync {
	g := &groupSync{sync: fn, gather: gather, gap: gather}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *groupSync) wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if !g.last.IsZero() {
		gap := min(now.Sub(g.last), 10*g.gather) // an idle spell counts as a long gap, not a forever
		g.gap += (gap - g.gap) / 8
	}
	g.last = now
	// A sync numbered started+1 or later starts after this call.
	need := g.started + 1
	for g.ended < need {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		if d := g.gap; d < g.gather {
			// Those arriving meanwhile see a sync running that has not
			// started: it is theirs too.
			g.mu.Unlock()
			time.Sleep(d)
			g.mu.Lock()
		}
		g.started++
		n := g.started
		g.mu.Unlock()
		err := g.sync()
		g.mu.Lock()
		g.running = false
		g.ended, g.err = n, err
		g.cond.Broadcast()
	}
	return g.err
}
