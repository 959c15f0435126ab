package edge

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// pins returns the version pins the edge honours for r: a signed token
// (routing.SignPins) in X-Griddle-Pin or the griddle-pin cookie from any
// client when the edge has pin keys; plain pins in X-Griddle-Pin only
// from PinNetworks. Either way, only pins to a version with live
// instances are kept, so that a pin can neither reach a version the
// catalog does not have nor mint new metric label values.
func (e *Edge) pins(r *http.Request) map[string]string {
	var pins map[string]string
	h := r.Header.Get(routing.HeaderPin)
	switch {
	case h != "" && routing.IsPinToken(h):
		pins = e.verifyPins(h)
	case h != "" && e.fromPinNetwork(r):
		pins = routing.ParsePins(h)
	}
	if pins == nil && len(e.cfg.PinKeys) > 0 {
		if c, err := r.Cookie(routing.CookiePin); err == nil {
			pins = e.verifyPins(c.Value)
		}
	}
	for svc, v := range pins {
		if !slices.ContainsFunc(e.routes.Instances(svc), func(in discovery.Instance) bool { return in.Version == v }) {
			delete(pins, svc)
		}
	}
	return pins
}

func (e *Edge) verifyPins(token string) map[string]string {
	if len(e.cfg.PinKeys) == 0 {
		return nil
	}
	pins, err := routing.VerifyPins(e.cfg.PinKeys, token, time.Now())
	if err != nil {
		e.cfg.Logger.Debug("pin token refused", "err", err)
		return nil
	}
	return pins
}

func (e *Edge) fromPinNetwork(r *http.Request) bool {
	if len(e.cfg.PinNetworks) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	return slices.ContainsFunc(e.cfg.PinNetworks, func(p netip.Prefix) bool { return p.Contains(a) })
}
