// Package bench is griddle bench: an open-loop load generator (vegeta's
// library at a fixed arrival rate) that starts the systems under test
// itself on 127.0.0.1 — the mesh as griddle up runs it (one process and its
// handler processes), the mesh deployed (griddle edge, griddle sidecar,
// griddle store and etcd, each a process of its own), the handler alone
// under net/http (direct), nginx in front of a direct server — runs them
// interleaved at the same rates, and reports latency percentiles counted
// from each request's due time, errors with 503s (shed load) apart, and the
// CPU used by the load generator, by each target's processes and by the
// rest of the machine, from /proc accounting.
//
// A target's CPU is also split by component, each counted from its own
// processes: edge, sidecar, handler, store and etcd for the deployed
// target; the griddle up process and its handler children for the mesh.
// With Config.CPUProfileDir, every component that serves /debug/pprof/
// leaves a CPU profile of each measured run. With Config.Floors, the
// floors of the hops (package floor) are measured first, in this process.
//
// Run measures given rates; Sweep searches each target's sustainable rate
// and can then overload it. Both write results.json and latency.svg.
//
// Every child process stays in the bench's session and process group, so
// that the kernel's scheduler autogroup is the same for all targets.
package bench
