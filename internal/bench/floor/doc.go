// Package floor measures the floors of the request path's hops on this
// machine: the cheapest each hop can be, with both of its ends in one
// process doing nothing but the hop. Beside a component's measured CPU per
// request, a floor says how much of it the transport itself takes and how
// much is ours to cut.
//
//	mangos-tcp   edge → sidecar: mangos REQ/REP over tcp, a context per request in flight
//	unix         sidecar → handler: a length-prefixed frame echoed on a unix socket, a connection per request in flight
//	unix-mux     sidecar → handler: the same frames multiplexed on one connection, writes batched
//	shm-mux      sidecar → handler as it runs: the unix-mux frames on a shared-memory pipe (package shmpipe)
//	badger       store: a read-only Badger transaction getting one seeded value
//	badgerstore  store: the same read through the store package (what the servers do)
//
// Measure runs one floor for a fixed time, closed loop (each worker starts
// its next round trip as soon as the last one ends) or paced at a rate, and
// reports round trips per second, ns, allocations and CPU µs per round
// trip. Closed loop keeps every goroutine busy, so it is the lower bound;
// paced at a low rate, each round trip wakes sleeping goroutines and
// threads, and the same work costs more CPU: that is the floor to hold a
// hop against at the same rate.
//
// griddle bench run --floors measures them in the same run as the targets;
// go test -bench . ./internal/bench/floor runs them as benchmarks.
package floor
