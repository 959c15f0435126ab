// Package faultproxy is a TCP proxy that injects faults for tests: added
// latency, limited bandwidth, a blackhole that swallows bytes while the
// connection stays open, resets, and half-closed connections. Tests place
// it between two components (an edge and a sidecar, a sidecar and its
// store) and change the faults while load runs.
package faultproxy
