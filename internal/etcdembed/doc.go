// Package etcdembed runs an etcd server inside the current process, for
// `griddle up` (everything on one machine) and for tests that need a real
// etcd. It is a thin lifecycle wrapper around go.etcd.io/etcd/server/v3/embed:
// Config → Validate → Start → Endpoints/Client → Close.
//
// The server is a single-member cluster. Its data lives in Config.Dir; starting
// again on the same Dir (and the same addresses) restarts the same member with
// its keys, leases and revision intact.
//
// The sub-package etcdtest starts one per test.
package etcdembed
