// Package control is Griddle's control plane: an HTTP API over the routing
// rules and canaries kept in etcd (see rulestore and canary), the
// operator's web page, its own /metrics and /healthz, and the canary
// controller, which runs only on the replica elected leader through etcd.
//
// The page (GET /, GET /services/{service}) is rendered on the server from
// templates embedded in the binary, with a small script that refreshes its
// live parts and sends writes through the same API and token as the CLI.
// Its live figures (request rate, success, p50 and p99 per service and
// version, as the edges and as the version's sidecars see them) come from
// reading every sidecar's and edge's /metrics every Config.SampleEvery.
//
// Write calls need a bearer token; a token's Role says which (see
// ParseTokens).
//
// Any number of replicas may serve the API against one etcd: every call
// reads or writes etcd directly, and every write is a compare-and-swap.
// Leadership only decides who runs the controllers.
package control
