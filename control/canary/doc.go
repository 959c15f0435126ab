// Package canary moves a service's traffic from one version to another in
// steps, while the new version's error rate and p99 latency, read from its
// sidecars' Prometheus metrics, stay within bounds; it rolls back on a
// breach.
//
// Everything a canary is lives in one etcd record, <prefix>canaries/<service>
// (a Canary as JSON): its spec, the step it is at, when the next step is
// due, the metrics baseline of the last step and the history of every
// decision. A Manager creates, reads, promotes and aborts records from any
// control plane replica; a Controller, run only by the leader, advances
// them. Because the record holds everything, a new leader (or a restarted
// control plane) resumes each canary where the record says.
//
// Every change of weights is written in the same etcd transaction as the
// record that explains it, guarded by the record's revision (and the
// controller's leadership), so an operator's abort and a controller's step
// cannot interleave. The canary owns the last (catch-all) rule of the
// service's routing document: each step sets its targets to
// {from: 100-w, to: w}.
package canary
