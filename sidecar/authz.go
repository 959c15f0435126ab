package sidecar

import (
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.nanomsg.org/mangos/v3"

	"github.com/griddle-mesh/griddle/internal/meshtls"
	"github.com/griddle-mesh/griddle/internal/routing"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// PeerIdentities tells the identity a caller presented in the TLS
// handshake of its connection (meshtls.Source.Peer).
type PeerIdentities interface {
	Peer(remote net.Addr) (meshtls.Identity, bool)
}

// callers are the identities of the connections to the REP socket, by
// pipe, learnt as each attaches.
type callers struct {
	mu sync.RWMutex
	m  map[uint32]caller
}

type caller struct {
	id meshtls.Identity
	ok bool // false: no identity (plain tcp, inproc, a certificate without one)
}

func (c *callers) put(pipe uint32, who caller) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[uint32]caller)
	}
	c.m[pipe] = who
	c.mu.Unlock()
}

func (c *callers) drop(pipe uint32) {
	c.mu.Lock()
	delete(c.m, pipe)
	c.mu.Unlock()
}

func (c *callers) get(pipe uint32) caller {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[pipe]
}

// trackCallers learns the identity of every connection sock accepts.
func (s *Sidecar) trackCallers(sock mangos.Socket) {
	sock.SetPipeEventHook(func(ev mangos.PipeEvent, p mangos.Pipe) {
		switch ev {
		case mangos.PipeEventAttaching:
			var who caller
			if s.cfg.Peers != nil {
				if v, err := p.GetOption(mangos.OptionRemoteAddr); err == nil {
					if a, ok := v.(net.Addr); ok {
						who.id, who.ok = s.cfg.Peers.Peer(a)
					}
				}
			}
			s.callers.put(p.ID(), who)
		case mangos.PipeEventDetached:
			s.callers.drop(p.ID())
		}
	})
}

// authzMetric counts the authorization policy's decisions.
func newAuthzMetric(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "griddle_sidecar_authorization_total",
		Help: "Requests checked against the service's authorization policy, by calling service (its certificate's identity; edge for the edges, unknown for none) and decision (allowed, denied).",
	}, []string{"from", "decision"})
	reg.MustRegister(c)
	return c
}

// authorized checks the caller on pipe against the authorization policy
// in the service's rules; without a policy every caller is allowed. It
// counts the decision when there is a policy.
func (s *Sidecar) authorized(pipe mangos.Pipe) bool {
	pol := s.policy()
	if !pol.Enabled() {
		return true
	}
	var who caller
	if pipe != nil {
		who = s.callers.get(pipe.ID())
	}
	from, service, version := "unknown", "", ""
	if who.ok {
		from, service, version = who.id.Service, who.id.Service, who.id.Version
		if who.id.IsEdge() {
			service = routing.EdgeCaller
		}
	}
	if pol.Allows(service, version) {
		s.authz.WithLabelValues(from, "allowed").Inc()
		return true
	}
	s.authz.WithLabelValues(from, "denied").Inc()
	s.log.Debug("caller refused by the authorization policy", "from", from, "caller_version", version)
	return false
}

// policy is the authorization policy of this service at the rule revision
// in use; nil: none.
func (s *Sidecar) policy() *routing.Policy {
	if s.deps.Catalog == nil {
		return nil
	}
	t := s.deps.Catalog.Rules()
	if t == nil {
		return nil
	}
	return t.Service(s.cfg.Service).Policy()
}

// forbidden is the reply to a request the policy refused.
func (s *Sidecar) forbidden(body []byte) ([]byte, int) {
	var id []byte
	if head, err := wire.PeekRequest(body); err == nil {
		id = head.ID
	}
	return s.codeReply(id, wire.Code_CODE_FORBIDDEN, "the caller is not allowed by the service's authorization policy")
}
