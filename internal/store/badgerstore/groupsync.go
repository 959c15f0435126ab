package badgerstore

import "sync"

// groupSync syncs for many committers at once: wait returns once a sync
// that started after wait was called has ended, and one sync serves every
// committer waiting when it starts (group commit). The committer that
// finds no sync running runs it; the others wait for it, or for the next.
type groupSync struct {
	sync func() error

	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	started uint64 // syncs started
	ended   uint64 // syncs ended: the first ended ones, in order
	err     error  // of the last sync ended
}

func newGroupSync(fn func() error) *groupSync {
	g := &groupSync{sync: fn}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *groupSync) wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	// A sync numbered started+1 or later starts after this call.
	need := g.started + 1
	for g.ended < need {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
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
