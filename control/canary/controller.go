package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/discovery"
)

// DefaultPoll is how often a Controller looks for canaries that are due.
const DefaultPoll = time.Second

// scrapeTimeout bounds the scrape of one instance.
const scrapeTimeout = 5 * time.Second

// ControllerConfig configures a Controller.
type ControllerConfig struct {
	// Manager reads and writes the records (required).
	Manager *Manager
	// Scrape reads an instance's counters (nil: HTTPScraper(nil)).
	Scrape ScrapeFunc
	// Now is the clock that decides when steps are due (nil: time.Now).
	Now func() time.Time
	// Poll is the period of Run's passes (0: DefaultPoll).
	Poll time.Duration
	// Logger gets one line per decision (nil: slog.Default()).
	Logger *slog.Logger
}

// Controller advances running canaries. Only the leader of the control
// plane runs one; it keeps nothing that matters in memory, so another
// Controller on the same etcd continues where it stopped.
type Controller struct {
	m      *Manager
	scrape ScrapeFunc
	now    func() time.Time
	poll   time.Duration
	log    *slog.Logger
}

// NewController returns a Controller; it does no I/O.
func NewController(cfg ControllerConfig) (*Controller, error) {
	if cfg.Manager == nil {
		return nil, fmt.Errorf("%w: controller: Manager is required", ErrInvalid)
	}
	c := &Controller{m: cfg.Manager, scrape: cfg.Scrape, now: cfg.Now, poll: cfg.Poll, log: cfg.Logger}
	if c.scrape == nil {
		c.scrape = HTTPScraper(nil)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.poll <= 0 {
		c.poll = DefaultPoll
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c, nil
}

// Run calls Tick every Poll until ctx ends, then returns nil. Every write
// it makes is guarded by guards (e.g. the leader key's create revision), so
// a controller that lost its leadership writes nothing. Errors of a pass are
// logged, and the next pass tries again.
func (c *Controller) Run(ctx context.Context, guards ...clientv3.Cmp) error {
	t := time.NewTicker(c.poll)
	defer t.Stop()
	for {
		if err := c.Tick(ctx, guards...); err != nil && ctx.Err() == nil {
			c.log.Warn("canary: controller pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick makes one pass: each running canary whose NextAt has passed is
// judged and advanced, rolled back or made to wait. It returns the first
// error met (after trying every canary).
func (c *Controller) Tick(ctx context.Context, guards ...clientv3.Cmp) error {
	all, err := c.m.List(ctx)
	if err != nil {
		return err
	}
	var first error
	for _, k := range all {
		if k.State != Running || c.now().Before(k.NextAt) {
			continue
		}
		if err := c.advance(ctx, k, guards); err != nil && first == nil {
			first = fmt.Errorf("canary %s: %w", k.Service, err)
		}
	}
	return first
}

// advance judges one due canary. A record or rules changed under it are
// read again (a few times); a failed guard (lost leadership, or the record
// changed by an operator) ends the attempt without error.
func (c *Controller) advance(ctx context.Context, k Canary, guards []clientv3.Cmp) error {
	for range commitTries {
		next, withRules := c.decide(ctx, k)
		_, err := c.m.commit(ctx, next, withRules, "canary-controller", guards...)
		switch {
		case err == nil:
			last := next.History[len(next.History)-1]
			c.log.Info("canary: "+last.Action, "service", k.Service, "to", k.To, "weight", last.Weight,
				"state", next.State, "reason", last.Reason)
			return nil
		case errors.Is(err, rulestore.ErrGuard):
			return nil // an operator acted, or we are no longer the leader
		case !errors.Is(err, rulestore.ErrConflict):
			return err
		}
		// The rules changed under us: read the record again and redo.
		fresh, err := c.m.Get(ctx, k.Service)
		if err != nil {
			return err
		}
		if fresh.State != Running || c.now().Before(fresh.NextAt) {
			return nil
		}
		k = fresh
	}
	return ErrBusy
}

// decide computes the record after judging k now, and whether its weights
// must be applied.
func (c *Controller) decide(ctx context.Context, k Canary) (Canary, bool) {
	now := c.now().UTC()
	k.Updated = now
	k.History = append([]Event(nil), k.History...)
	current, insts, failed := c.scrapeAll(ctx, k)
	if k.Step < 0 { // first step: apply it and take the baseline
		k.Step, k.Baseline, k.NextAt = 0, current, now.Add(time.Duration(k.Interval))
		k.History = append(k.History, Event{At: now, Action: "step", Weight: k.Steps[0], Reason: "first step"})
		c.finishIfFull(&k)
		return k, true
	}
	var d Counters
	for id, cur := range current {
		d.add(cur.sub(k.Baseline[id]))
	}
	m := metricsOf(d, insts, failed)
	switch {
	case m.Requests < k.minRequests():
		k.NextAt = now.Add(time.Duration(k.Interval))
		reason := fmt.Sprintf("%v requests to %s since the last step, want at least %v; waiting another interval", m.Requests, k.To, k.minRequests())
		// Keep the baseline so requests accumulate; fold repeated waits into one entry.
		ev := Event{At: now, Action: "wait", Weight: k.Weight(), Metrics: &m, Reason: reason}
		if n := len(k.History); n > 0 && k.History[n-1].Action == "wait" {
			k.History[n-1] = ev
		} else {
			k.History = append(k.History, ev)
		}
		return k, false
	case breach(k, m) != "":
		k.State, k.Reason = RolledBack, breach(k, m)
		k.History = append(k.History, Event{At: now, Action: "rollback", Weight: 0, Metrics: &m, Reason: k.Reason})
		return k, true
	}
	k.Step++
	k.Baseline, k.NextAt = current, now.Add(time.Duration(k.Interval))
	k.History = append(k.History, Event{At: now, Action: "step", Weight: k.Steps[k.Step], Metrics: &m,
		Reason: fmt.Sprintf("healthy: error rate %.2f%%, p99 %v over %v requests", 100*m.ErrorRate, time.Duration(m.P99), m.Requests)})
	c.finishIfFull(&k)
	return k, true
}

// finishIfFull ends a canary whose applied step is 100%.
func (c *Controller) finishIfFull(k *Canary) {
	if k.Steps[k.Step] == 100 {
		k.State, k.Reason = Promoted, "reached 100%"
	}
}

// breach returns why m is out of k's bounds, or "".
func breach(k Canary, m Metrics) string {
	var why []string
	if m.ErrorRate > k.MaxErrorRate {
		why = append(why, fmt.Sprintf("error rate %.2f%% > %.2f%%", 100*m.ErrorRate, 100*k.MaxErrorRate))
	}
	if k.MaxP99 > 0 && m.P99 > k.MaxP99 {
		why = append(why, fmt.Sprintf("p99 %v > %v", time.Duration(m.P99), time.Duration(k.MaxP99)))
	}
	if len(why) == 0 {
		return ""
	}
	return fmt.Sprintf("%s over %v requests to %s", strings.Join(why, ", "), m.Requests, k.To)
}

// scrapeAll reads the counters of every instance of k.To that has an admin
// address; it returns them by instance id, the number of instances and how
// many could not be read (those are left out, so they neither count nor
// reset the baseline).
func (c *Controller) scrapeAll(ctx context.Context, k Canary) (map[string]Counters, int, int) {
	insts, err := c.m.instances(ctx, k.Service, k.To)
	if err != nil {
		c.log.Warn("canary: listing instances failed", "service", k.Service, "version", k.To, "err", err)
	}
	out := map[string]Counters{}
	failed := 0
	for _, in := range insts {
		sctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
		cnt, err := c.scrape(sctx, in)
		cancel()
		if err != nil {
			failed++
			c.log.Warn("canary: scrape failed", "service", k.Service, "instance", in.ID, "err", err)
			if old, ok := k.Baseline[in.ID]; ok {
				out[in.ID] = old // no news: this instance adds nothing this time
			}
			continue
		}
		out[in.ID] = cnt
	}
	return out, len(insts), failed
}

// instances lists the registered instances of service at version.
func (m *Manager) instances(ctx context.Context, service, version string) ([]discovery.Instance, error) {
	p := discovery.InstancesPrefix(m.rules.Prefix()) + service + "/" + version + "/"
	resp, err := m.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", p, err)
	}
	var out []discovery.Instance
	for _, kv := range resp.Kvs {
		var in discovery.Instance
		if json.Unmarshal(kv.Value, &in) == nil {
			out = append(out, in)
		}
	}
	return out, nil
}
