package discovery

import (
	"fmt"
	"strings"
	"time"
)

// DefaultPrefix is the etcd key prefix under which Griddle keeps everything.
const DefaultPrefix = "/griddle/"

// Instance is one running sidecar of one version of one service, as
// registered in etcd under InstanceKey.
type Instance struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Version string `json:"version"`
	// Address is the mangos URL of the sidecar's REP socket, e.g. tcp://10.0.0.7:7001.
	Address string    `json:"address"`
	Started time.Time `json:"started"`
	// RuleRevision is the revision of the routing rules this sidecar runs (0: none yet).
	RuleRevision int64 `json:"ruleRevision,omitempty"`
	// Admin is the host:port of the sidecar's admin server, which serves
	// Prometheus text at /metrics ("" if it has none).
	Admin string `json:"admin,omitempty"`
	// Events is the mangos URL of the sidecar's PUB socket, where it
	// announces the events its service publishes ("" if none).
	Events string `json:"events,omitempty"`
	// LeaseSeconds is the ttl of the registration's lease, set by
	// Register: how long a catalog waits after an etcd outage for the
	// instance to register again before it believes it gone (0: not
	// known; defaultLease).
	LeaseSeconds int64 `json:"leaseSeconds,omitempty"`
}

// Exposure says which HTTP paths the edge sends to a service. It is stored
// under ExposureKey; the full rule language replaces it later.
type Exposure struct {
	Service      string   `json:"service"`
	PathPrefixes []string `json:"pathPrefixes"`
	// Owner is the id of the instance that claimed the exposure under its
	// lease ("" for one stored by PutExposure).
	Owner string `json:"owner,omitempty"`
}

// InstancesPrefix is where instances of all services are registered.
func InstancesPrefix(prefix string) string { return prefix + "instances/" }

// InstanceKey is the key of one instance: <prefix>instances/<service>/<version>/<id>.
func InstanceKey(prefix string, in Instance) string {
	return InstancesPrefix(prefix) + in.Service + "/" + in.Version + "/" + in.ID
}

// ExposuresPrefix is where the HTTP exposures of all services are stored.
func ExposuresPrefix(prefix string) string { return prefix + "http/" }

// ExposureKey is the key of one service's exposure: <prefix>http/<service>;
// an instance's claim is under <prefix>http/<service>/<instance id>.
func ExposureKey(prefix, service string) string { return ExposuresPrefix(prefix) + service }

// ValidName reports whether s can be used as a service, version or instance
// name: it becomes one segment of an etcd key and of a URL host.
func ValidName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-.") == "" && s[0] != '-' && s[0] != '.'
}

// Validate reports whether in can be registered: Service, Version and ID
// must be valid names and Address must be set. The error wraps
// ErrDiscoveryInvalid and names the field.
func (in Instance) Validate() error {
	for _, f := range []struct{ name, v string }{{"service", in.Service}, {"version", in.Version}, {"id", in.ID}} {
		if !ValidName(f.v) {
			return fmt.Errorf("%w: instance %s %q: want 1-63 of a-z 0-9 - . not starting with - or .", ErrDiscoveryInvalid, f.name, f.v)
		}
	}
	if in.Address == "" {
		return fmt.Errorf("%w: instance address is required", ErrDiscoveryInvalid)
	}
	return nil
}

// Validate reports whether e can be stored: Service must be a valid name and
// every path prefix must start with "/". The error wraps ErrDiscoveryInvalid.
func (e Exposure) Validate() error {
	if !ValidName(e.Service) {
		return fmt.Errorf("%w: exposure service %q", ErrDiscoveryInvalid, e.Service)
	}
	if e.Owner != "" && !ValidName(e.Owner) {
		return fmt.Errorf("%w: exposure %s: owner %q", ErrDiscoveryInvalid, e.Service, e.Owner)
	}
	for _, p := range e.PathPrefixes {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%w: exposure %s: path prefix %q must start with /", ErrDiscoveryInvalid, e.Service, p)
		}
	}
	return nil
}

// RulesPrefix is where the routing rule documents of all services are stored.
func RulesPrefix(prefix string) string { return prefix + "rules/" }

// RuleKey is the key of one service's rule document: <prefix>rules/<service>.
func RuleKey(prefix, service string) string { return RulesPrefix(prefix) + service }
