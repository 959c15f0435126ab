// Package discovery is how Griddle components find each other through etcd.
//
// A sidecar announces itself with Register: its Instance is stored under
// <prefix>instances/<service>/<version>/<id>, attached to a lease that the
// Registration keeps alive. A sidecar that dies disappears when its lease
// expires; one that stops cleanly calls Close, which revokes the lease so the
// entry disappears at once. Exposures (which HTTP paths the edge sends to a
// service) are claimed by each instance under <prefix>http/<service>/<id> and its
// lease (Registration.ClaimExposure), refused when another service holds the path.
//
// Edges and sidecars read through a Catalog: Get of the whole prefix, then a
// Watch from the next revision, re-listing on compaction. Reads are lock-free
// and never wait for etcd. If etcd becomes unreachable the Catalog keeps its
// last known state (static stability) and reports the outage in Status.
// When etcd returns, instances registered before the outage that etcd has
// meanwhile expired are held (Status.Held) until they register again, a
// lease period has passed, or a connect to their address fails; and a
// Registration whose lease was lost registers again as soon as etcd
// answers (clients built with DialOptions retry their connection at least
// once a second).
package discovery
