// Package canary moves a service's traffic from one version to another in
// steps, while the new version's error rate and p99 latency stay within
// bounds and no worse than the old version's over the same step; it rolls
// back on a breach. A step is judged on the worse of two views of the new
// version, read from Prometheus metrics: its own sidecars (answers by
// status, and dropped work), and its callers, the edges and the sidecars
// that call it (which also see the 502, 503 and 504 of requests that never
// reached it). Figures of a source that dies during a step keep counting.
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
// cannot interleave. While a canary runs, the control plane refuses manual
// changes of the service's rules. A canary owns every rule that sends
// traffic to the old version, except pins (a header, cookie or query match
// sending everything to it): at weight w each moves w% of the old
// version's share in that rule to the new version, from the targets the
// rule had at the start (Canary.Origin), so an abort restores them exactly.
// The rules' authored text keeps its comments (rulestore.Rewrite).
package canary
