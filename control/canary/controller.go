package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// DefaultPoll is how often a Controller looks for canaries that are due.
const DefaultPoll = time.Second

// scrapeTimeout bounds the scrape of one instance; scrapeConcurrency the
// scrapes in flight.
const (
	scrapeTimeout     = 5 * time.Second
	scrapeConcurrency = 8
)

// ControllerConfig configures a Controller.
type ControllerConfig struct {
	// Manager reads and writes the records (required).
	Manager *Manager
	// Scrape reads the metrics of a sidecar or an edge (nil: HTTPScraper(nil)).
	Scrape ScrapeFunc
	// Now is the clock that decides when steps are due (nil: time.Now).
	Now func() time.Time
	// Poll is the period of Run's passes (0: DefaultPoll).
	Poll time.Duration
	// Logger gets one line per decision (nil: slog.Default()).
	Logger *slog.Logger
	// OnDecision, if set, is called after each decision is written, with
	// the record as written and the decision's event. It must not block.
	OnDecision func(Canary, Event)
}

// Controller advances running canaries. Only the leader of the control
// plane runs one. Between decisions it samples the sources of running
// canaries (at most every sampleEvery), so the figures of an instance that
// dies are kept until the step is judged; that memory is the only state it
// holds, and another Controller on the same etcd continues where it
// stopped (losing at most the figures of instances that died meanwhile).
type Controller struct {
	m          *Manager
	scrape     ScrapeFunc
	now        func() time.Time
	poll       time.Duration
	log        *slog.Logger
	onDecision func(Canary, Event)

	mu      sync.Mutex
	last    map[string]map[string]Counters // service → source → latest counters
	sampled map[string]time.Time           // service → time of the latest sample
}

// sampleEvery is the most often a running canary's sources are read
// between decisions.
const sampleEvery = time.Second

// NewController returns a Controller; it does no I/O.
func NewController(cfg ControllerConfig) (*Controller, error) {
	if cfg.Manager == nil {
		return nil, fmt.Errorf("%w: controller: Manager is required", ErrInvalid)
	}
	c := &Controller{m: cfg.Manager, scrape: cfg.Scrape, now: cfg.Now, poll: cfg.Poll, log: cfg.Logger, onDecision: cfg.OnDecision,
		last: map[string]map[string]Counters{}, sampled: map[string]time.Time{}}
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
	running := map[string]bool{}
	for _, k := range all {
		if k.State != Running {
			continue
		}
		running[k.Service] = true
		if c.now().Before(k.NextAt) {
			c.sample(ctx, k)
			continue
		}
		if err := c.advance(ctx, k, guards); err != nil && first == nil {
			first = fmt.Errorf("canary %s: %w", k.Service, err)
		}
	}
	c.mu.Lock()
	for svc := range c.last {
		if !running[svc] {
			delete(c.last, svc)
			delete(c.sampled, svc)
		}
	}
	c.mu.Unlock()
	return first
}

// sample reads k's sources if it has not done so within sampleEvery and
// keeps their figures.
func (c *Controller) sample(ctx context.Context, k Canary) {
	now := c.now()
	c.mu.Lock()
	due := now.Sub(c.sampled[k.Service]) >= max(sampleEvery, c.poll)
	c.mu.Unlock()
	if !due {
		return
	}
	c.current(ctx, k)
}

// current reads k's sources now and returns the latest counters of every
// source seen during the canary: one that could not be read or is gone
// keeps its last figures (or, unknown to this controller, its baseline).
func (c *Controller) current(ctx context.Context, k Canary) (map[string]Counters, scrapeResult) {
	fresh, res := c.scrapeAll(ctx, k)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sampled[k.Service] = c.now()
	last := c.last[k.Service]
	if last == nil {
		last = map[string]Counters{}
		c.last[k.Service] = last
	}
	for src, cnt := range fresh {
		last[src] = cnt
	}
	out := make(map[string]Counters, len(last)+len(k.Baseline))
	for src, cnt := range k.Baseline {
		out[src] = cnt
	}
	for src, cnt := range last {
		out[src] = cnt
	}
	return out, res
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
			if c.onDecision != nil {
				c.onDecision(next, last)
			}
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
	current, res := c.current(ctx, k)
	if k.Step < 0 { // first step: apply it and take the baseline
		k.Step, k.Baseline, k.NextAt = 0, current, now.Add(time.Duration(k.Interval))
		k.History = append(k.History, Event{At: now, Action: "step", Weight: k.Steps[0], Reason: "first step"})
		c.finishIfFull(&k)
		return k, true
	}
	m := judge(k, current, res)
	switch {
	case m.Requests < k.minRequests():
		k.NextAt = now.Add(time.Duration(k.Interval))
		reason := fmt.Sprintf("%v requests to %s since the last step, want at least %v; waiting another interval", m.Requests, k.To, k.minRequests())
		if m.ScrapeErrors > 0 {
			reason += fmt.Sprintf(" (%d source(s) could not be read)", m.ScrapeErrors)
		}
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
	reason := fmt.Sprintf("healthy: error rate %.2f%%, p99 %v over %v requests", 100*m.ErrorRate, short(m.P99), m.Requests)
	if b := m.Baseline; b != nil && b.Requests > 0 {
		reason += fmt.Sprintf("; %s: %.2f%%, p99 %v over %v", k.From, 100*b.ErrorRate, short(b.P99), b.Requests)
	}
	k.History = append(k.History, Event{At: now, Action: "step", Weight: k.Steps[k.Step], Metrics: &m, Reason: reason})
	c.finishIfFull(&k)
	return k, true
}

// finishIfFull ends a canary whose applied step is 100%.
func (c *Controller) finishIfFull(k *Canary) {
	if k.Steps[k.Step] == 100 {
		k.State, k.Reason = Promoted, "reached 100%"
	}
}

// Roles of a source: the first segment of its key, role/version/id.
const (
	roleSidecar  = "sidecar"  // a version's own sidecar
	roleEdge     = "edge"     // an edge's view of a version
	roleOutbound = "outbound" // a calling sidecar's view of a version
)

func sourceKey(role, version, id string) string { return role + "/" + version + "/" + id }

// judge sums what happened since k's baseline into the figures of the new
// version (with the old one's as Baseline).
func judge(k Canary, current map[string]Counters, res scrapeResult) Metrics {
	newServer, newCallers := views(k, current, k.To)
	oldServer, oldCallers := views(k, current, k.From)
	server := viewOf(newServer.c, newServer.n, res.errs[roleSidecar+"/"+k.To])
	callers := viewOf(newCallers.c, newCallers.n, res.errs["callers"])
	m := worse(server, callers)
	out := Metrics{Requests: m.Requests, Errors: m.Errors, ErrorRate: m.ErrorRate, P99: m.P99,
		Instances: res.instances, ScrapeErrors: server.ScrapeErrors + callers.ScrapeErrors,
		Server: &server, Callers: &callers}
	base := worse(viewOf(oldServer.c, oldServer.n, 0), viewOf(oldCallers.c, oldCallers.n, 0))
	out.Baseline = &base
	return out
}

type summed struct {
	c Counters
	n int
}

// views sums the deltas of version's sources by observer: its own sidecars,
// and its callers (edges and calling sidecars).
func views(k Canary, current map[string]Counters, version string) (server, callers summed) {
	for src, cur := range current {
		role, rest, _ := strings.Cut(src, "/")
		ver, _, ok := strings.Cut(rest, "/")
		if !ok || ver != version {
			continue
		}
		d := cur.sub(k.Baseline[src])
		switch role {
		case roleSidecar:
			server.c.add(d)
			server.n++
		case roleEdge, roleOutbound:
			callers.c.add(d)
			callers.n++
		}
	}
	return server, callers
}

// worse is the view with more requests for the count and the worse error
// rate and p99 of the two.
func worse(a, b View) View {
	out := a
	if b.ErrorRate > a.ErrorRate {
		out.Errors, out.ErrorRate = b.Errors, b.ErrorRate
	}
	out.Requests = max(a.Requests, b.Requests)
	out.P99 = max(a.P99, b.P99)
	out.Sources = a.Sources + b.Sources
	out.ScrapeErrors = a.ScrapeErrors + b.ScrapeErrors
	return out
}

// breach returns why m is out of k's bounds, or "".
func breach(k Canary, m Metrics) string {
	var why []string
	if m.ErrorRate > k.MaxErrorRate {
		why = append(why, fmt.Sprintf("error rate %.2f%% > %.2f%%", 100*m.ErrorRate, 100*k.MaxErrorRate))
	}
	if k.MaxP99 > 0 && m.P99 > k.MaxP99 {
		why = append(why, fmt.Sprintf("p99 %v > %v", short(m.P99), time.Duration(k.MaxP99)))
	}
	if b := m.Baseline; b != nil && b.Requests >= k.minRequests() {
		if d := m.ErrorRate - b.ErrorRate; d > k.maxIncrease() {
			why = append(why, fmt.Sprintf("error rate %.2f%% is %.2f points above %s's %.2f%% (allowed %.2f)",
				100*m.ErrorRate, 100*d, k.From, 100*b.ErrorRate, 100*k.maxIncrease()))
		}
		if r := k.MaxP99Ratio; r > 0 && time.Duration(m.P99) > time.Duration(r*float64(b.P99))+P99Slack {
			why = append(why, fmt.Sprintf("p99 %v > %v × %s's %v (+%v)", short(m.P99), r, k.From, short(b.P99), P99Slack))
		}
	}
	if len(why) == 0 {
		return ""
	}
	return fmt.Sprintf("%s over %v requests to %s", strings.Join(why, ", "), m.Requests, k.To)
}

// short rounds a latency for people: 4.4ms, not 4.399999ms.
func short(d routing.Duration) time.Duration {
	if time.Duration(d) >= time.Millisecond {
		return time.Duration(d).Round(10 * time.Microsecond)
	}
	return time.Duration(d).Round(time.Microsecond)
}

// scrapeResult says what a scrape could not read: errs by "sidecar/<version>"
// for k's own sidecars and "callers" for edges and other sidecars, and how
// many instances of the new version are registered.
type scrapeResult struct {
	errs      map[string]int
	instances int
}

// scrapeAll reads every sidecar and edge with an admin address and returns
// the counters of k's two versions by source. Sources that see nothing of
// them are left out.
func (c *Controller) scrapeAll(ctx context.Context, k Canary) (map[string]Counters, scrapeResult) {
	res := scrapeResult{errs: map[string]int{}}
	targets, err := c.m.targets(ctx)
	if err != nil {
		c.log.Warn("canary: listing sidecars and edges failed", "service", k.Service, "err", err)
	}
	out := map[string]Counters{}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, scrapeConcurrency)
	)
	for _, t := range targets {
		own := t.Kind == KindSidecar && t.Service == k.Service && (t.Version == k.To || t.Version == k.From)
		if own && t.Version == k.To {
			res.instances++
		}
		errKey := "callers"
		if own {
			errKey = roleSidecar + "/" + t.Version
		}
		if t.Admin == "" {
			if own {
				res.errs[errKey]++
			}
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			sctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
			fams, err := c.scrape(sctx, t)
			cancel()
			<-sem
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.errs[errKey]++
				c.log.Debug("canary: scrape failed", "service", k.Service, t.Kind, t.ID, "err", err)
				return
			}
			for _, ver := range []string{k.From, k.To} {
				switch {
				case t.Kind == KindEdge:
					if cnt := fams.Counters(EdgeRequestsMetric, EdgeDurationMetric, k.Service, ver); cnt.Total > 0 {
						out[sourceKey(roleEdge, ver, t.ID)] = cnt
					}
				default:
					if own && t.Version == ver {
						cnt := fams.Counters(RequestsMetric, DurationMetric, k.Service, ver)
						dropped := fams.Value(DroppedMetric)
						cnt.Total += dropped
						cnt.Errors += dropped
						out[sourceKey(roleSidecar, ver, t.ID)] = cnt
					}
					if cnt := fams.Counters(OutboundRequestsMetric, OutboundDurationMetric, k.Service, ver); cnt.Total > 0 {
						out[sourceKey(roleOutbound, ver, t.ID)] = cnt
					}
				}
			}
		})
	}
	wg.Wait()
	return out, res
}

func (m *Manager) targets(ctx context.Context) ([]Target, error) { return m.Targets(ctx) }

// Targets lists every registered sidecar and edge.
func (m *Manager) Targets(ctx context.Context) ([]Target, error) {
	p := m.rules.Prefix()
	resp, err := m.cli.Txn(ctx).Then(
		clientv3.OpGet(discovery.InstancesPrefix(p), clientv3.WithPrefix()),
		clientv3.OpGet(discovery.EdgesPrefix(p), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("list sidecars and edges: %w", err)
	}
	var out []Target
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var in discovery.Instance
		if json.Unmarshal(kv.Value, &in) == nil && in.ID != "" {
			out = append(out, Target{Kind: KindSidecar, ID: in.ID, Admin: in.Admin, Service: in.Service, Version: in.Version})
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var e discovery.Edge
		if json.Unmarshal(kv.Value, &e) == nil && e.ID != "" {
			out = append(out, Target{Kind: KindEdge, ID: e.ID, Admin: e.Admin})
		}
	}
	return out, nil
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
