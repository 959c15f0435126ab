package meshtls

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// TrustDomain is the authority of every workload identity in the mesh:
// spiffe://griddle/<service>/<version> for a sidecar, spiffe://griddle/edge
// for an edge.
const TrustDomain = "griddle"

// EdgeName is the service name that stands for the edges in identities
// and authorization policies; no service may be called so.
const EdgeName = "edge"

// Identity is who a certificate speaks for: a service at a version (a
// sidecar), or an edge (Service EdgeName, no version).
type Identity struct {
	Service string
	Version string
}

// Edge is the identity of every edge.
var Edge = Identity{Service: EdgeName}

// IsEdge reports whether id is an edge's identity.
func (id Identity) IsEdge() bool { return id.Service == EdgeName && id.Version == "" }

// URI is the identity as a certificate carries it (a URI SAN).
func (id Identity) URI() *url.URL {
	p := "/" + id.Service
	if !id.IsEdge() {
		p += "/" + id.Version
	}
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: p}
}

// String is the identity's URI.
func (id Identity) String() string { return id.URI().String() }

// Validate reports an identity that no certificate should carry.
func (id Identity) Validate() error {
	if id.IsEdge() {
		return nil
	}
	switch {
	case id.Service == EdgeName:
		return fmt.Errorf("%w: service %q is reserved for the edges", ErrConfig, EdgeName)
	case !validName(id.Service):
		return fmt.Errorf("%w: service %q: want 1-63 of a-z, 0-9, '-', '.'", ErrConfig, id.Service)
	case !validName(id.Version):
		return fmt.Errorf("%w: version %q: want 1-63 of a-z, 0-9, '-', '.'", ErrConfig, id.Version)
	}
	return nil
}

// ParseIdentity reads an identity URI; ok is false for a URI that is not
// one of this mesh's.
func ParseIdentity(u *url.URL) (Identity, bool) {
	if u == nil || u.Scheme != "spiffe" || u.Host != TrustDomain || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Identity{}, false
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	var id Identity
	switch {
	case len(parts) == 1 && parts[0] == EdgeName:
		id = Edge
	case len(parts) == 2:
		id = Identity{Service: parts[0], Version: parts[1]}
	default:
		return Identity{}, false
	}
	if id.Validate() != nil {
		return Identity{}, false
	}
	return id, true
}

// IdentityOf is the identity a certificate carries: its one URI SAN of
// this mesh's trust domain. ok is false for a certificate without one
// (a certificate of a CA the operator brought, say), or with several.
func IdentityOf(cert *x509.Certificate) (id Identity, ok bool) {
	if cert == nil {
		return Identity{}, false
	}
	n := 0
	for _, u := range cert.URIs {
		if got, good := ParseIdentity(u); good {
			id, n = got, n+1
		}
	}
	if n != 1 {
		return Identity{}, false
	}
	return id, true
}

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// WantEdge is an Options.Want for an edge: a certificate with an identity
// must be an edge's.
func WantEdge(id Identity, ok bool) error {
	if ok && !id.IsEdge() {
		return fmt.Errorf("it is the certificate of %s, not an edge's", id)
	}
	return nil
}

// WantWorkload is an Options.Want for a sidecar of service at version: a
// certificate with an identity must be that one, so that a sidecar given
// another service's certificate does not start.
func WantWorkload(service, version string) func(Identity, bool) error {
	want := Identity{Service: service, Version: version}
	return func(id Identity, ok bool) error {
		if ok && id != want {
			return fmt.Errorf("it is the certificate of %s, not of %s", id, want)
		}
		return nil
	}
}
