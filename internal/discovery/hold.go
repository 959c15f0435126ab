package discovery

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Holding instances across an etcd outage. While etcd is away, leases run
// out on the clients' side; when it returns, the old leases expire there
// too unless their owners registered again first. A catalog that believed
// those deletions at once would lose every instance whose sidecar is a
// little slower to reconnect than the catalog itself, although the sidecar
// never stopped serving. So a deletion of an instance that was registered
// before the outage, seen while etcd is unreachable or within three lease
// periods (and holdSlack twice) of its return, is held: the instance stays in the catalog until
// it registers again, a lease period has passed, or a direct probe of its
// address (a TCP connect) is refused, or times out holdProbeMisses times
// in a row (a loaded machine can stall one connect past its timeout).
const (
	// defaultLease is the lease assumed for an instance registered
	// without LeaseSeconds.
	defaultLease = 5 * time.Second
	// holdSlack is added to a held instance's lease: etcd's own time to
	// elect a leader and expire leases after it returns (longer on a busy
	// machine).
	holdSlack = 2 * time.Second
	// holdCheckEvery is how often held instances are probed and expired.
	holdCheckEvery = 500 * time.Millisecond
	// holdProbeTimeout bounds one probe's connect.
	holdProbeTimeout = 300 * time.Millisecond
	// holdProbeMisses is how many probes in a row may fail without a
	// refusal (a timeout, an unreachable network) before a held instance
	// is removed: about 1.5 s of silence.
	holdProbeMisses = 3
)

// heldInstance is an instance kept in the working state although etcd no
// longer has it.
type heldInstance struct {
	service string
	until   time.Time
	misses  int // probes failed in a row without a refusal
}

func leaseOf(in Instance) time.Duration {
	if in.LeaseSeconds > 0 {
		return time.Duration(in.LeaseSeconds) * time.Second
	}
	return defaultLease
}

// holdable reports whether the deletion of in, written at modRev, may be
// an outage's lost lease rather than the instance leaving, and if so until
// when to hold it.
func (c *Catalog) holdable(in Instance, modRev int64) (time.Time, bool) {
	c.mu.Lock()
	outage, outageRev, recovered := c.outage, c.outageRev, c.recovered
	c.mu.Unlock()
	if outageRev == 0 || modRev == 0 || modRev > outageRev {
		return time.Time{}, false // no outage yet, or registered since it began
	}
	lease := leaseOf(in)
	now := time.Now()
	if !outage && (recovered.IsZero() || now.Sub(recovered) > 3*lease+2*holdSlack) {
		return time.Time{}, false
	}
	return now.Add(lease + holdSlack), true
}

// keep puts in back into the working state as held until until.
func (c *Catalog) keep(svc, key string, in Instance, modRev int64, until time.Time) {
	m := c.instances[svc]
	if m == nil {
		m = map[string]Instance{}
		c.instances[svc] = m
	}
	m[key] = in
	c.modRevs[key] = modRev
	if _, ok := c.held[key]; !ok {
		c.logger.Info("discovery: etcd lost an instance registered before its outage; keeping it until it registers again",
			"key", key, "address", in.Address, "until", until.Format(time.RFC3339Nano))
	}
	c.held[key] = heldInstance{service: svc, until: until}
}

// delOrHold applies a deletion of key: an instance that may have lost its
// lease to an outage is held instead of removed. It reports whether the
// working state changed.
func (c *Catalog) delOrHold(key string, dirty map[string]struct{}) bool {
	if kind, svc := c.classify(key); kind == kindInstance {
		if in, ok := c.instances[svc][key]; ok {
			if _, held := c.held[key]; held {
				return false
			}
			if until, ok := c.holdable(in, c.modRevs[key]); ok {
				c.keep(svc, key, in, c.modRevs[key], until)
				return false
			}
		}
	}
	return c.del(key, dirty)
}

// dropHeldAt removes held instances at addr other than key: a new
// registration at that address (a restarted sidecar) replaces them.
func (c *Catalog) dropHeldAt(addr, key string, dirty map[string]struct{}) {
	for k, h := range c.held {
		if k != key && c.instances[h.service][k].Address == addr {
			c.logger.Info("discovery: held instance replaced by a new registration at its address", "key", k, "by", key)
			c.del(k, dirty)
		}
	}
}

// checkHeld removes held instances whose time is up (unless etcd is away
// again) or whose address refuses connections (or does not answer
// holdProbeMisses probes in a row), and publishes the change.
func (c *Catalog) checkHeld(ctx context.Context) {
	if len(c.held) == 0 {
		return
	}
	c.mu.Lock()
	outage := c.outage
	c.mu.Unlock()
	now := time.Now()
	dirty := map[string]struct{}{}
	type probe struct {
		key, addr string
		err       error
	}
	var probes []*probe
	for k, h := range c.held {
		if !outage && now.After(h.until) {
			c.logger.Warn("discovery: held instance did not register again within its lease; removed", "key", k)
			c.del(k, dirty)
			continue
		}
		probes = append(probes, &probe{key: k, addr: c.instances[h.service][k].Address})
	}
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Go(func() { p.err = dialProbe(ctx, p.addr) })
	}
	wg.Wait()
	for _, p := range probes {
		h := c.held[p.key]
		switch {
		case p.err == nil || ctx.Err() != nil:
			h.misses = 0
		case refused(p.err):
			c.logger.Warn("discovery: held instance refuses connections; removed", "key", p.key, "address", p.addr, "err", p.err)
			c.del(p.key, dirty)
			continue
		default:
			h.misses++
			if h.misses >= holdProbeMisses {
				c.logger.Warn("discovery: held instance does not answer a connect; removed", "key", p.key, "address", p.addr,
					"probes", h.misses, "err", p.err)
				c.del(p.key, dirty)
				continue
			}
			c.logger.Debug("discovery: held instance's probe failed", "key", p.key, "address", p.addr, "err", p.err)
		}
		c.held[p.key] = h
	}
	if len(dirty) > 0 {
		c.publishHeld()
		c.publish(dirty)
	}
}

// publishHeld records the number of held instances in the status.
func (c *Catalog) publishHeld() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.Held = len(c.held)
}

// dialProbe connects to the mangos URL addr and closes the connection at
// once. Addresses it cannot probe (inproc://) count as answering.
func dialProbe(ctx context.Context, addr string) error {
	network, where := "", ""
	switch {
	case strings.HasPrefix(addr, "tcp://"):
		network, where = "tcp", strings.TrimPrefix(addr, "tcp://")
	case strings.HasPrefix(addr, "tls+tcp://"):
		network, where = "tcp", strings.TrimPrefix(addr, "tls+tcp://")
	case strings.HasPrefix(addr, "ipc://"):
		network, where = "unix", strings.TrimPrefix(addr, "ipc://")
	default:
		return nil
	}
	d := net.Dialer{Timeout: holdProbeTimeout}
	conn, err := d.DialContext(ctx, network, where)
	if err != nil {
		return err
	}
	return conn.Close()
}

// refused reports whether a probe's error says that nothing listens at the
// address: the connection was refused, or the unix socket is gone.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}
