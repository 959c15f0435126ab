// Package control is Griddle's control plane: an HTTP API over the routing
// rules and canaries kept in etcd (see rulestore and canary), a small HTML
// status page, and the canary controller, which runs only on the replica
// elected leader through etcd.
//
// Any number of replicas may serve the API against one etcd: every call
// reads or writes etcd directly, and every write is a compare-and-swap.
// Leadership only decides who runs the controllers.
package control
