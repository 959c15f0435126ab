package routing

import (
	"fmt"
	"slices"
)

// EdgeCaller is the name under which an Authorization allows the edges,
// that is requests from end users: `from: edge`. No service can be called
// so (a workload identity of that name is an edge's).
const EdgeCaller = "edge"

// MaxAllow bounds Authorization.Allow.
const MaxAllow = 256

// Authorization says who may call the service whose document holds it.
// Once a document has one, every caller it does not allow is refused with
// 403 by the receiving sidecar, which knows the caller from its mTLS
// certificate (deny by default). Without one, every caller of the mesh is
// allowed.
//
//	authorization:
//	  allow:
//	    - from: edge          # requests from end users, through the edges
//	    - from: profiles      # any version of profiles
//	    - from: feed
//	      versions: [v2]      # only these versions
type Authorization struct {
	// Allow lists the callers let through; empty: none.
	Allow []Allow `json:"allow"`
}

// Allow lets one calling service through.
type Allow struct {
	// From is the calling service, or EdgeCaller for the edges.
	From string `json:"from"`
	// Versions limits the calling service's versions (empty: all of them).
	Versions []string `json:"versions,omitempty"`
}

// Policy is a compiled Authorization: immutable and safe for concurrent
// use. A nil *Policy allows every caller.
type Policy struct {
	allow map[string][]string // calling service → versions (nil: all)
}

// Policy returns the service's authorization policy, nil when its
// document has none (every caller is allowed).
func (s *Service) Policy() *Policy {
	if s == nil {
		return nil
	}
	return s.policy
}

// Enabled reports whether the policy refuses anyone.
func (p *Policy) Enabled() bool { return p != nil }

// Allows reports whether a caller of service and version (EdgeCaller and
// "" for an edge; "" and "" for a caller with no identity) may call.
func (p *Policy) Allows(service, version string) bool {
	if p == nil {
		return true
	}
	if service == "" {
		return false
	}
	versions, ok := p.allow[service]
	if !ok {
		return false
	}
	return versions == nil || slices.Contains(versions, version)
}

func compilePolicy(a *Authorization) *Policy {
	if a == nil {
		return nil
	}
	p := &Policy{allow: make(map[string][]string, len(a.Allow))}
	for _, al := range a.Allow {
		prev, seen := p.allow[al.From]
		switch {
		case seen && prev == nil: // already every version
		case len(al.Versions) == 0:
			p.allow[al.From] = nil
		default:
			p.allow[al.From] = append(slices.Clone(prev), al.Versions...)
		}
	}
	return p
}

// authorization checks Document.Authorization.
func (v *validator) authorization(a *Authorization) {
	if a == nil {
		return
	}
	if len(a.Allow) > MaxAllow {
		v.addf("authorization.allow", "%d entries, want at most %d", len(a.Allow), MaxAllow)
		return
	}
	for i, al := range a.Allow {
		p := fmt.Sprintf("authorization.allow[%d]", i)
		v.name(p+".from", al.From)
		if al.From == EdgeCaller && len(al.Versions) > 0 {
			v.addf(p+".versions", "the edges have no versions")
		}
		for j, ver := range al.Versions {
			v.name(fmt.Sprintf("%s.versions[%d]", p, j), ver)
		}
	}
}

func (a *Authorization) clone() *Authorization {
	if a == nil {
		return nil
	}
	c := &Authorization{Allow: slices.Clone(a.Allow)}
	for i := range c.Allow {
		c.Allow[i].Versions = slices.Clone(c.Allow[i].Versions)
	}
	return c
}
